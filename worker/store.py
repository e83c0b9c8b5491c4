"""Payload bytes behind one small interface, with two backends.

An object is ``(kind, object_id)`` holding a list of byte parts, a creation
time and a deadline.  Kinds: ``states.STORED`` (``input``, an upload and its
options; ``result``, the STL, its report and its preview mesh; ``scan``, a
scan workspace's upload; ``volume``, its decoded volumes and listing).  Writes are atomic (temporary file then
rename; Redis MULTI), so a retried job never leaves a half object.

``put`` writes parts held in memory; ``writer`` returns a ``Writer`` that
takes an object's parts chunk by chunk (an upload streamed in by
``worker.intake``, never held whole) and makes it visible at ``commit``, all
at once, or removes every byte of it at ``abort``.  Until then a directory
writer's parts are in a ``.w.`` folder (with a meta file holding the deadline:
the sweeper removes a crashed writer's folder by then) and a Redis writer's
in staging keys with a TTL at the deadline.

* ``DirectoryStore``: ``ROOT/kind/object_id/`` holding ``meta.json`` and
  ``part-N`` files.  Put ROOT on a tmpfs (``/dev/shm``) so payloads never
  reach a disk.
* ``RedisStore``: chunked values under ``ephemesh:store:*``; every key gets a
  TTL at the object's deadline, so Redis forgets it even without a sweeper.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .states import STORED

_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
CHUNK = 1 << 20
#: file systems that keep their files in memory only
MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})


def medium(path) -> str:
    """``memory`` when ``path`` lies on a tmpfs or ramfs (the mount it is
    under, from ``/proc/mounts``), else ``disk``."""
    path = os.path.realpath(path)
    best, fstype = "", None
    try:
        with open("/proc/mounts", encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:  # not Linux: say the safe thing
        return "disk"
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        inside = path == mount or path.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, fstype = mount, fields[2]
    return "memory" if fstype in MEMORY_FILESYSTEMS else "disk"


@dataclass
class Entry:
    kind: str
    object_id: str
    size: int
    created: float
    deadline: float


def _check(kind, object_id):
    if kind not in STORED:
        raise ValueError(f"kind must be one of {', '.join(STORED)}, got {kind!r}")
    if not isinstance(object_id, str) or not _ID.match(object_id):
        raise ValueError("object ids are 8-64 characters of A-Z, a-z, 0-9, _ and -")


class DirectoryStore:
    def __init__(self, root):
        self.root = Path(root)
        for kind in STORED:
            (self.root / kind).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    def _dir(self, kind, object_id):
        _check(kind, object_id)
        return self.root / kind / object_id

    def medium(self) -> str:
        """``memory`` (a tmpfs) or ``disk``: where the payloads are."""
        return medium(self.root)

    def put(self, kind, object_id, parts, deadline, created=None) -> int:
        return _put(self.writer(kind, object_id, deadline, created), parts)

    def writer(self, kind, object_id, deadline, created=None) -> DirectoryWriter:
        """A ``Writer`` for the object (it replaces any object of that id at commit)."""
        return DirectoryWriter(self._dir(kind, object_id), deadline, created)

    def meta(self, kind, object_id):
        try:
            return json.loads((self._dir(kind, object_id) / "meta.json").read_text())
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
            return None

    def get(self, kind, object_id):
        meta = self.meta(kind, object_id)
        if meta is None:
            return None
        folder = self._dir(kind, object_id)
        try:
            return [(folder / f"part-{i}").read_bytes() for i in range(meta["parts"])]
        except FileNotFoundError:
            return None

    def get_part(self, kind, object_id, index):
        """One part's bytes, or None."""
        meta = self.meta(kind, object_id)
        if meta is None or not 0 <= index < meta["parts"]:
            return None
        try:
            return (self._dir(kind, object_id) / f"part-{index}").read_bytes()
        except FileNotFoundError:
            return None

    def part_path(self, kind, object_id, index):
        """Where one part lies (to map it into memory), or None."""
        path = self._dir(kind, object_id) / f"part-{int(index)}"
        return path if path.is_file() else None

    def part_file(self, kind, object_id, index):
        """One part as an open binary file (read where it lies, not copied
        into memory; the caller closes it), or None."""
        if self.meta(kind, object_id) is None:
            return None
        try:
            return open(self._dir(kind, object_id) / f"part-{int(index)}", "rb")
        except (FileNotFoundError, NotADirectoryError):
            return None

    def delete(self, kind, object_id) -> int | None:
        """Delete an object; return its size, or None when it was not there."""
        folder = self._dir(kind, object_id)
        meta = self.meta(kind, object_id)
        gone = folder.with_name(f".del.{object_id}.{os.getpid()}.{time.monotonic_ns()}")
        try:
            os.replace(folder, gone)  # atomic: two sweepers cannot both claim it
        except FileNotFoundError:
            return None
        shutil.rmtree(gone, ignore_errors=True)
        return int(meta["size"]) if meta else 0

    def entries(self, kind):
        """Every object of ``kind``.  Names starting with "." are debris of an
        interrupted write or delete (the sweeper removes them); an entry
        without readable meta is reported as due (created = its mtime)."""
        out = []
        for folder in (self.root / kind).iterdir():
            try:
                meta = json.loads((folder / "meta.json").read_text())
                out.append(Entry(kind, folder.name, meta["size"], meta["created"],
                                 meta["deadline"]))
            except (OSError, ValueError, KeyError):
                try:
                    mtime = folder.stat().st_mtime
                except FileNotFoundError:
                    continue  # deleted meanwhile
                out.append(Entry(kind, folder.name, 0, mtime, mtime))
        return out

    def remove_leftover(self, kind, name) -> int:
        path = self.root / kind / name
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
            return 1
        return 0


class RedisStore:
    PREFIX = "ephemesh:store"

    def __init__(self, connection):
        self.redis = connection

    def medium(self) -> str:
        return "memory"  # Redis, with persistence off (runtime.py; deploy/ says so too)

    def _key(self, kind, object_id, suffix):
        _check(kind, object_id)
        return f"{self.PREFIX}:{kind}:{object_id}:{suffix}"

    def put(self, kind, object_id, parts, deadline, created=None) -> int:
        return _put(self.writer(kind, object_id, deadline, created), parts)

    def writer(self, kind, object_id, deadline, created=None) -> RedisWriter:
        """A ``Writer`` for the object (it replaces any object of that id at commit)."""
        _check(kind, object_id)
        return RedisWriter(self, kind, object_id, deadline, created)

    def meta(self, kind, object_id):
        raw = self.redis.hgetall(self._key(kind, object_id, "meta"))
        if not raw:
            return None
        return {k.decode(): float(v) for k, v in raw.items()}

    def get(self, kind, object_id):
        meta = self.meta(kind, object_id)
        if meta is None:
            return None
        return [b"".join(self.redis.lrange(self._key(kind, object_id, f"part:{i}"), 0, -1))
                for i in range(int(meta["parts"]))]

    def get_part(self, kind, object_id, index):
        meta = self.meta(kind, object_id)
        if meta is None or not 0 <= index < int(meta["parts"]):
            return None
        return b"".join(self.redis.lrange(self._key(kind, object_id, f"part:{index}"), 0, -1))

    def part_path(self, kind, object_id, index):
        return None  # held in Redis: read it with get_part

    def part_file(self, kind, object_id, index):
        """One part as a binary file (its bytes, from Redis), or None."""
        data = self.get_part(kind, object_id, index)
        return None if data is None else io.BytesIO(data)

    def delete(self, kind, object_id) -> int | None:
        meta_key = self._key(kind, object_id, "meta")
        pipe = self.redis.pipeline(transaction=True)
        pipe.hgetall(meta_key)
        pipe.delete(meta_key)
        raw, deleted = pipe.execute()
        self.redis.srem(f"{self.PREFIX}:index:{kind}", object_id)
        parts = int(float(raw.get(b"parts", 0))) if raw else 0
        keys = [self._key(kind, object_id, f"part:{i}") for i in range(max(parts, 1))]
        keys += list(self.redis.scan_iter(match=self._key(kind, object_id, "part:*")))
        self.redis.delete(*keys)
        if not deleted:
            return None
        return int(float(raw.get(b"size", 0)))

    def entries(self, kind):
        out = []
        for raw_id in self.redis.smembers(f"{self.PREFIX}:index:{kind}"):
            object_id = raw_id.decode()
            meta = self.meta(kind, object_id)
            if meta is None:  # expired by TTL: forget the index entry
                self.redis.srem(f"{self.PREFIX}:index:{kind}", object_id)
                continue
            out.append(Entry(kind, object_id, int(meta["size"]), meta["created"], meta["deadline"]))
        return out

    def remove_leftover(self, kind, name) -> int:
        return 0


class Writer:
    """An object's parts written chunk by chunk, visible only once committed.

    ``open_part(i)`` starts part ``i`` (each of 0..n-1 once, in any order),
    ``write`` appends to it, ``commit`` makes the object visible at once
    (replacing one of the same id) and returns its size, ``abort`` removes
    everything written (it is safe to call twice, or after ``commit``: then
    it does nothing).  As a context manager it aborts unless committed.
    """

    def __init__(self, object_id, deadline, created=None):
        self.object_id = object_id
        self.deadline = float(deadline)
        self.created = created or time.time()
        self.size = 0  # bytes written so far
        self.parts: set[int] = set()
        self.current: int | None = None
        self.done = False  # committed or aborted

    def open_part(self, index: int) -> None:
        if self.done:
            raise ValueError("the object is already committed or aborted")
        if not isinstance(index, int) or index < 0 or index in self.parts:
            raise ValueError(f"part {index!r} is not a new part number")
        self._close_part()
        self.parts.add(index)
        self.current = index
        self._open(index)

    def write(self, data) -> None:
        """Append ``data`` (bytes or any contiguous buffer) to the open part."""
        if self.current is None:
            raise ValueError("open a part before writing")
        view = memoryview(data).cast("B")
        if view.nbytes:
            self._write(view)
            self.size += view.nbytes

    def redate(self, created: float, deadline: float) -> None:
        """Date the object anew before ``commit`` (a result is dated when its
        conversion ended, not when its writer opened).  A later deadline only:
        the parts written so far stay bound by the first (a crashed writer's
        debris goes by then)."""
        if self.done:
            raise ValueError("the object is already committed or aborted")
        if float(deadline) < self.deadline:
            raise ValueError("an object's deadline is never moved earlier")
        self.created, self.deadline = float(created), float(deadline)

    def commit(self) -> int:
        if self.done:
            raise ValueError("the object is already committed or aborted")
        if self.parts != set(range(len(self.parts))):
            raise ValueError("parts must be numbered 0 to n-1")
        self._close_part()
        self._commit()
        self.done = True
        return self.size

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        self._abort()

    def _close_part(self):
        if self.current is not None:
            self._close(self.current)
            self.current = None

    def _meta(self, **extra) -> dict:
        return {"created": self.created, "deadline": self.deadline, "parts": len(self.parts),
                "size": self.size, **extra}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.abort()
        return False


def _put(writer: Writer, parts) -> int:
    with writer:
        for i, part in enumerate(parts):
            writer.open_part(i)
            writer.write(part)
        return writer.commit()


#: the prefix of a directory writer's folder (``.w.ID.PID.NS``): debris to the sweeper
WRITING = ".w."


class DirectoryWriter(Writer):
    def __init__(self, target: Path, deadline, created=None):
        super().__init__(target.name, deadline, created)
        self.target = target
        self.tmp = target.with_name(f"{WRITING}{target.name}.{os.getpid()}.{time.monotonic_ns()}")
        self.tmp.mkdir()
        self._fh = None
        try:  # until commit: the deadline, for the sweeper, should this process die
            (self.tmp / "meta.json").write_text(json.dumps(self._meta(writing=True)))
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise

    def _open(self, index):
        self._fh = open(self.tmp / f"part-{index}", "xb")

    def _write(self, data):
        try:
            self._fh.write(data)
        except BaseException:
            self.abort()
            raise

    def _close(self, index):
        fh, self._fh = self._fh, None
        fh.close()

    def _commit(self):
        try:
            (self.tmp / "meta.json").write_text(json.dumps(self._meta()))
            if self.target.exists():
                shutil.rmtree(self.target, ignore_errors=True)
            os.replace(self.tmp, self.target)
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise

    def _abort(self):
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
            self._fh = None
        shutil.rmtree(self.tmp, ignore_errors=True)


class RedisWriter(Writer):
    """Parts go to staging keys (``…:stage:TOKEN:part:N``, TTL at the deadline)
    in chunks of at most ``CHUNK``; ``commit`` renames them in one MULTI."""

    def __init__(self, store: RedisStore, kind, object_id, deadline, created=None):
        super().__init__(object_id, deadline, created)
        self.store, self.kind = store, kind
        self.redis = store.redis
        self.stage = f"stage:{os.getpid()}.{time.monotonic_ns()}"
        self._buffer = bytearray()

    def _staged(self, index) -> str:
        return self.store._key(self.kind, self.object_id, f"{self.stage}:part:{index}")

    def _ttl_ms(self) -> int:
        return max(1, int((self.deadline - time.time()) * 1000))

    def _open(self, index):
        self._buffer.clear()
        self._empty = True
        # an empty part is still a part: one empty chunk (replaced by the first one written)
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(self._staged(index), b"")
        pipe.pexpire(self._staged(index), self._ttl_ms())
        self._run(pipe)

    def _write(self, data):
        self._buffer += data
        while len(self._buffer) >= CHUNK:
            self._flush(bytes(self._buffer[:CHUNK]))
            del self._buffer[:CHUNK]

    def _flush(self, chunk):
        key = self._staged(self.current)
        pipe = self.redis.pipeline(transaction=False)
        if self._empty:  # the placeholder goes once the part has bytes
            pipe.lset(key, 0, chunk)
            self._empty = False
        else:
            pipe.rpush(key, chunk)
        self._run(pipe)

    def _close(self, index):
        if self._buffer:
            self._flush(bytes(self._buffer))
            self._buffer.clear()

    def _run(self, pipe):
        try:
            pipe.execute()
        except BaseException:
            self.abort()
            raise

    def _commit(self):
        key = self.store._key
        ttl_ms = self._ttl_ms()
        old = self.redis.hget(key(self.kind, self.object_id, "meta"), "parts")
        pipe = self.redis.pipeline(transaction=True)
        for i in range(int(float(old or 0))):
            pipe.delete(key(self.kind, self.object_id, f"part:{i}"))
        for i in sorted(self.parts):
            final = key(self.kind, self.object_id, f"part:{i}")
            pipe.rename(self._staged(i), final)
            pipe.pexpire(final, ttl_ms)
        meta = key(self.kind, self.object_id, "meta")
        pipe.delete(meta)
        pipe.hset(meta, mapping=self._meta())
        pipe.pexpire(meta, ttl_ms)
        index = f"{self.store.PREFIX}:index:{self.kind}"
        pipe.sadd(index, self.object_id)
        pipe.pexpire(index, ttl_ms, gt=True)  # the index lives as long as its newest object
        pipe.pexpire(index, ttl_ms, nx=True)
        try:
            pipe.execute()
        except BaseException:
            self._abort()
            raise

    def _abort(self):
        self._buffer.clear()
        try:
            self.redis.delete(*(self._staged(i) for i in self.parts or {0}))
        except Exception:  # unreachable: the staging keys expire at the deadline
            pass


def open_store(settings, redis_connection=None):
    if settings.store == "redis":
        if redis_connection is None:
            raise ValueError("the Redis store needs a Redis connection")
        return RedisStore(redis_connection)
    return DirectoryStore(settings.store)
