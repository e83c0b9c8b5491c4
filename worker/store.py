"""Payload bytes behind one small interface, with two backends.

An object is ``(kind, object_id)`` holding a list of byte parts, a creation
time and a deadline.  Kinds: ``states.STORED`` (``input``, an upload and its
options; ``result``, the STL, its report and its preview mesh; ``scan``, a
scan workspace's upload; ``volume``, its decoded volumes and listing).  Writes are atomic (temporary file then
rename; Redis MULTI), so a retried job never leaves a half object.

* ``DirectoryStore``: ``ROOT/kind/object_id/`` holding ``meta.json`` and
  ``part-N`` files.  Put ROOT on a tmpfs (``/dev/shm``) so payloads never
  reach a disk.
* ``RedisStore``: chunked values under ``ephemesh:store:*``; every key gets a
  TTL at the object's deadline, so Redis forgets it even without a sweeper.
"""

from __future__ import annotations

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
        target = self._dir(kind, object_id)
        tmp = target.with_name(f".{object_id}.{os.getpid()}.{time.monotonic_ns()}")
        tmp.mkdir()
        size = count = 0
        try:
            for count, part in enumerate(parts, 1):  # an iterable: one part in memory at a time
                with open(tmp / f"part-{count - 1}", "wb") as fh:
                    fh.write(part)
                size += memoryview(part).nbytes
            meta = {"created": created or time.time(), "deadline": float(deadline),
                    "parts": count, "size": size}
            (tmp / "meta.json").write_text(json.dumps(meta))
            if target.exists():
                shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return size

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
        ttl_ms = max(1, int((deadline - time.time()) * 1000))
        parts = [bytes(p) if not isinstance(p, bytes) else p for p in parts]
        size = sum(len(p) for p in parts)
        pipe = self.redis.pipeline(transaction=True)
        old = self.redis.hget(self._key(kind, object_id, "meta"), "parts")
        for i in range(int(old or 0)):
            pipe.delete(self._key(kind, object_id, f"part:{i}"))
        for i, part in enumerate(parts):
            key = self._key(kind, object_id, f"part:{i}")
            pipe.delete(key)
            for start in range(0, max(len(part), 1), CHUNK):
                pipe.rpush(key, part[start:start + CHUNK])
            pipe.pexpire(key, ttl_ms)
        meta = self._key(kind, object_id, "meta")
        pipe.delete(meta)
        pipe.hset(meta, mapping={"created": created or time.time(), "deadline": float(deadline),
                                 "parts": len(parts), "size": size})
        pipe.pexpire(meta, ttl_ms)
        index = f"{self.PREFIX}:index:{kind}"
        pipe.sadd(index, object_id)
        pipe.pexpire(index, ttl_ms, gt=True)  # the index lives as long as its newest object
        pipe.pexpire(index, ttl_ms, nx=True)
        pipe.execute()
        return size

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


def open_store(settings, redis_connection=None):
    if settings.store == "redis":
        if redis_connection is None:
            raise ValueError("the Redis store needs a Redis connection")
        return RedisStore(redis_connection)
    return DirectoryStore(settings.store)
