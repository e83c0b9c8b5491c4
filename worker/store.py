"""Payload bytes behind one small interface, with two backends.

An object is ``(kind, object_id)`` holding a list of byte parts, a creation
time and a deadline.  Kinds: ``states.STORED`` (``input``, an upload and its
options; ``result``, the STL, its report and its preview mesh; ``scan``, a
scan workspace's upload; ``volume``, its decoded volumes and listing).  Writes are atomic (temporary file then
rename; one Redis script), so a retried job never leaves a half object.

``put`` writes parts held in memory; ``writer`` returns a ``Writer`` that
takes an object's parts chunk by chunk (an upload streamed in by
``worker.intake``, never held whole) and makes it visible at ``commit``, all
at once, or removes every byte of it at ``abort``.  Until then a directory
writer's parts are in a ``.w.`` folder (with a meta file holding the deadline:
the sweeper removes a crashed writer's folder by then) and a Redis writer's
in staging keys with a TTL at the deadline.  A job's result writer may wait
for a Redis that went away (``wait_until``): each of its steps is applied
once however many copies of it reach the server, so it tries again.

* ``DirectoryStore``: ``ROOT/kind/object_id/`` holding ``meta.json`` and
  ``part-N`` files.  Put ROOT on a tmpfs (``/dev/shm``) so payloads never
  reach a disk.
* ``RedisStore``: chunked values under ``ephemesh:store:*``; every key gets a
  TTL at the object's deadline, so Redis forgets it even without a sweeper.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .states import STORED

log = logging.getLogger("ephemesh.worker")
_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
CHUNK = 1 << 20
#: in all, how long one Redis writer given ``wait_until`` (a job's result) waits
#: for Redis to come back (a restart, its host's link down and back) before it
#: gives up, and the job fails as it would have at once; never past ``wait_until``
REDIS_WAIT_S = 60.0
#: the pause between two tries while Redis is away
REDIS_RETRY_PAUSE_S = 0.5
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

    def writer(self, kind, object_id, deadline, created=None, *,
               wait_until=None) -> DirectoryWriter:
        """A ``Writer`` for the object (it replaces any object of that id at commit).
        ``wait_until`` is the Redis writer's; a directory has no Redis to wait for."""
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
        self._append = connection.register_script(_APPEND)
        self._move_in = connection.register_script(_MOVE_IN)

    def medium(self) -> str:
        return "memory"  # Redis, with persistence off (runtime.py; deploy/ says so too)

    def _key(self, kind, object_id, suffix):
        _check(kind, object_id)
        return f"{self.PREFIX}:{kind}:{object_id}:{suffix}"

    def put(self, kind, object_id, parts, deadline, created=None) -> int:
        return _put(self.writer(kind, object_id, deadline, created), parts)

    def writer(self, kind, object_id, deadline, created=None, *,
               wait_until=None) -> RedisWriter:
        """A ``Writer`` for the object (it replaces any object of that id at commit).
        With ``wait_until`` (a UNIX time) a write or commit that cannot reach
        Redis is tried again, ``REDIS_WAIT_S`` in all and never past
        ``wait_until`` or the deadline; without, it fails at once (the web's
        uploads: a 503 at once)."""
        _check(kind, object_id)
        return RedisWriter(self, kind, object_id, deadline, created, wait_until=wait_until)

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
        # every part, and any writer's staging keys (a late copy of a chunk sent
        # before a cut may have staged one again after its commit)
        keys += list(self.redis.scan_iter(match=self._key(kind, object_id, "*")))
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


#: append ARGV[2] to the list KEYS[1] as its element number ARGV[1] (from 0)
#: unless it is there already: a copy of an append whose answer was lost, even
#: one that reaches the server after the next try, changes nothing.  The first
#: element gives the list its TTL (ARGV[3] ms).  Returns the list's length.
_APPEND = """
local n = redis.call('LLEN', KEYS[1])
if n == tonumber(ARGV[1]) then
  n = redis.call('RPUSH', KEYS[1], ARGV[2])
  if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
end
return n
"""
#: a Redis writer's commit, at once: KEYS are the meta, the index, the N staged
#: parts, their N final names, then the replaced object's parts past N; ARGV
#: the TTL (ms), N, the object id, then the meta's fields and values.  Returns 0
#: and changes nothing when a staged part is not there (moved in by an earlier
#: copy of this commit, or lost), else 1.
_MOVE_IN = """
local ttl, n = ARGV[1], tonumber(ARGV[2])
for i = 1, n do
  if redis.call('EXISTS', KEYS[2 + i]) == 0 then return 0 end
end
for i = 1, n do
  redis.call('RENAME', KEYS[2 + i], KEYS[2 + n + i])
  redis.call('PEXPIRE', KEYS[2 + n + i], ttl)
end
for i = 3 + 2 * n, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ttl, 'GT')  -- the index lives as long as its newest object
redis.call('PEXPIRE', KEYS[2], ttl, 'NX')
return 1
"""
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError)


class StagingLost(RuntimeError):
    """A Redis writer's staged parts are gone (Redis restarted empty, or they
    expired): the object cannot be finished."""


class RedisWriter(Writer):
    """Parts go to staging keys (``…:stage:TOKEN:part:N``, TTL at the deadline)
    in chunks of at most ``CHUNK``; ``commit`` renames them in one script.

    Each step (a chunk's append, the commit) is applied once however many
    copies of it reach Redis, so with ``wait_until`` a step that cannot reach
    Redis (its connection lost, its answer not come) is tried again."""

    def __init__(self, store: RedisStore, kind, object_id, deadline, created=None,
                 wait_until=None):
        super().__init__(object_id, deadline, created)
        self.store, self.kind = store, kind
        self.redis = store.redis
        self.stage = f"stage:{os.getpid()}.{time.monotonic_ns()}"
        self._buffer = bytearray()
        self._chunks = 0  # chunks of the open part in Redis
        # the staged parts expire at the first deadline: no waiting past it
        self.wait_until = None if wait_until is None else min(float(wait_until), self.deadline)
        self.waited = 0.0  # seconds spent waiting for Redis

    def _staged(self, index) -> str:
        return self.store._key(self.kind, self.object_id, f"{self.stage}:part:{index}")

    def _ttl_ms(self) -> int:
        return max(1, int((self.deadline - time.time()) * 1000))

    def _open(self, index):
        self._buffer.clear()
        self._chunks = 0

    def _write(self, data):
        self._buffer += data
        while len(self._buffer) >= CHUNK:
            self._flush(bytes(self._buffer[:CHUNK]))
            del self._buffer[:CHUNK]

    def _flush(self, chunk):
        key, number = self._staged(self.current), self._chunks
        try:
            length = self._patiently(lambda: self.store._append(
                keys=[key], args=[number, chunk, self._ttl_ms()]))
            if length != number + 1:
                raise StagingLost("a staged part is not as written")
        except BaseException:
            self.abort()
            raise
        self._chunks += 1

    def _close(self, index):
        if self._buffer or not self._chunks:  # an empty part is still a part: one empty chunk
            self._flush(bytes(self._buffer))
            self._buffer.clear()

    def _patiently(self, step):
        """``step()``; while Redis cannot be reached, and the writer may wait,
        again after a pause: at most ``REDIS_WAIT_S`` in all, and no try that
        could end past ``wait_until``."""
        while True:
            began = time.monotonic()
            try:
                return step()
            except _UNREACHABLE:
                spent = time.monotonic() - began  # a next try may take as long
                self.waited += spent
                if (self.wait_until is None
                        or self.waited + REDIS_RETRY_PAUSE_S + spent > REDIS_WAIT_S
                        or time.time() + REDIS_RETRY_PAUSE_S + spent > self.wait_until):
                    raise
                if self.waited == spent:  # the first wait: said once
                    log.warning("the store could not be written (Redis unreachable); "
                                "waiting for it")
                time.sleep(REDIS_RETRY_PAUSE_S)
                self.waited += REDIS_RETRY_PAUSE_S

    def _commit(self):
        key = self.store._key
        n = len(self.parts)
        meta = key(self.kind, self.object_id, "meta")
        try:
            old = self._patiently(lambda: self.redis.hget(meta, "parts"))
            keys = [meta, f"{self.store.PREFIX}:index:{self.kind}",
                    *(self._staged(i) for i in range(n)),
                    *(key(self.kind, self.object_id, f"part:{i}") for i in range(n)),
                    *(key(self.kind, self.object_id, f"part:{i}")
                      for i in range(n, int(float(old or 0))))]
            fields = [x for pair in self._meta().items() for x in pair]
            if not self._patiently(lambda: self.store._move_in(
                    keys=keys, args=[self._ttl_ms(), n, self.object_id, *fields])):
                # not moved in by this try: by an earlier one whose answer was lost, or lost
                if not self._is_in(meta):
                    raise StagingLost("the staged parts are gone")
        except BaseException:
            self._abort()
            raise

    def _is_in(self, meta_key) -> bool:
        """The object's meta is this writer's (its commit was applied)."""
        raw = self._patiently(lambda: self.redis.hgetall(meta_key))
        try:
            stored = {k.decode(): float(v) for k, v in raw.items()}
        except ValueError:
            return False
        return stored == {k: float(v) for k, v in self._meta().items()}

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
