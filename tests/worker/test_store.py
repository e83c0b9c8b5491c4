"""The payload store: the same behaviour from the directory and the Redis backend."""

from __future__ import annotations

import os
import threading
import time

import pytest
import redis

from tests.helpers import Cable
from worker.store import CHUNK, DirectoryStore, RedisStore

OID = "abcdefgh12345678"


@pytest.fixture
def store(store_kind, tmp_path, redis_url):
    if store_kind == "directory":
        return DirectoryStore(tmp_path / "store")
    return RedisStore(redis.Redis.from_url(redis_url))


def test_put_get_meta_delete(store):
    deadline = time.time() + 60
    size = store.put("input", OID, [b"{}", b"x" * 10, b""], deadline, created=123.0)
    assert size == 12
    assert store.get("input", OID) == [b"{}", b"x" * 10, b""]
    meta = store.meta("input", OID)
    assert meta["created"] == 123.0 and meta["deadline"] == pytest.approx(deadline)
    assert [(e.object_id, e.size) for e in store.entries("input")] == [(OID, 12)]
    assert store.entries("result") == []
    assert store.delete("input", OID) == 12
    assert store.get("input", OID) is None and store.meta("input", OID) is None
    assert store.delete("input", OID) is None  # a second delete finds nothing
    assert store.entries("input") == []


def test_large_parts_are_chunked_and_rewritten_whole(store):
    big = os.urandom(CHUNK * 2 + 17)
    store.put("result", OID, [big, b"report"], time.time() + 60)
    assert store.get("result", OID) == [big, b"report"]
    store.put("result", OID, [b"small"], time.time() + 60)  # a retried job's second write
    assert store.get("result", OID) == [b"small"]


def test_a_part_is_read_as_a_file(store):
    big = os.urandom(CHUNK + 5)
    store.put("result", OID, [big, b"report"], time.time() + 60)
    with store.part_file("result", OID, 0) as fh:
        assert fh.read() == big
    with store.part_file("result", OID, 1) as fh:
        assert fh.read() == b"report"
    store.delete("result", OID)
    assert store.part_file("result", OID, 0) is None


def test_a_writer_is_dated_anew_before_commit_never_earlier(store):
    first = time.time() + 60
    with store.writer("result", OID, first, created=100.0) as writer:
        writer.open_part(0)
        writer.write(b"model")
        with pytest.raises(ValueError, match="earlier"):
            writer.redate(50.0, first - 10)
        writer.redate(200.0, first + 30)
        writer.commit()
    meta = store.meta("result", OID)
    assert meta["created"] == 200.0 and meta["deadline"] == pytest.approx(first + 30)
    assert store.get("result", OID) == [b"model"]
    with store.writer("result", OID, first) as writer:
        writer.abort()
        with pytest.raises(ValueError, match="committed or aborted"):
            writer.redate(1.0, first + 1)


def test_ids_and_kinds_are_checked(store):
    with pytest.raises(ValueError, match="kind"):
        store.put("upload", OID, [b""], time.time() + 1)
    for bad in ("../etc", "short", "a" * 65, "with/slash1", "dot.dot.dot"):
        with pytest.raises(ValueError, match="object ids"):
            store.meta("input", bad)


def test_two_deletes_at_once_free_an_object_once(store):
    for i in range(20):
        store.put("input", f"{OID}{i:02d}", [b"z" * 100], time.time() + 60)
    results = []

    def go():
        results.append([store.delete("input", f"{OID}{i:02d}") for i in range(20)])

    threads = [threading.Thread(target=go) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [sum(1 for r in column if r is not None) for column in zip(*results, strict=True)]
    assert winners == [1] * 20
    assert store.entries("input") == []


def test_redis_keys_expire_at_the_deadline(redis_url):
    r = redis.Redis.from_url(redis_url)
    store = RedisStore(r)
    store.put("input", OID, [b"a" * 10, b"b"], time.time() + 30)
    keys = list(r.scan_iter("ephemesh:store:*"))
    assert len(keys) == 4  # meta, two parts, the index
    assert all(0 < r.pttl(k) <= 30_000 for k in keys)
    store.put("input", OID + "x", [b"c"], time.time() + 1)
    time.sleep(1.3)
    assert store.get("input", OID + "x") is None  # Redis forgot it by itself
    assert [e.object_id for e in store.entries("input")] == [OID]


def test_directory_store_is_private_and_cleans_debris(tmp_path):
    store = DirectoryStore(tmp_path / "s")
    assert (tmp_path / "s").stat().st_mode & 0o077 == 0
    debris = tmp_path / "s" / "input" / f".{OID}.123.456"
    debris.mkdir()
    (debris / "part-0").write_bytes(b"half")
    [entry] = store.entries("input")
    assert entry.object_id.startswith(".")
    assert store.remove_leftover("input", entry.object_id) == 1
    assert not debris.exists()


@pytest.fixture
def cable(redis_server):
    """A cable between this test's Redis client and the server, to be pulled."""
    made = Cable(redis_server.port)
    yield made
    made.close()


def _cut_off_store(cable):
    # a short socket timeout: a request whose answer is held is given up quickly
    return RedisStore(redis.Redis.from_url(cable.url, socket_timeout=1,
                                           socket_connect_timeout=1))


def test_a_redis_writer_cut_off_waits_and_writes_every_chunk_once(redis_url, cable, caplog):
    """The link to Redis goes down mid-write and comes back: the writer waits
    and goes on, and the chunk whose answer was lost, tried again, is there
    once, even though the first try reaches Redis after the second."""
    store, direct = _cut_off_store(cable), redis.Redis.from_url(redis_url)
    parts = [os.urandom(CHUNK * 3 + 5), os.urandom(1000), b""]
    with store.writer("result", OID, time.time() + 60, wait_until=time.time() + 60) as writer:
        writer.open_part(0)
        writer.write(parts[0][:CHUNK])  # one chunk in Redis
        cable.pull(for_s=2.5, late_by=1.5)
        writer.write(parts[0][CHUNK:])
        for i, part in enumerate(parts[1:], 1):
            writer.open_part(i)
            writer.write(part)
        assert writer.commit() == sum(map(len, parts))
    assert writer.waited > 1
    cable.wait()  # the first tries have reached Redis now
    time.sleep(0.3)
    assert store.get("result", OID) == parts
    assert direct.llen(f"ephemesh:store:result:{OID}:part:0") == 4  # 3 chunks and 5 bytes
    assert list(direct.scan_iter("ephemesh:store:*stage*")) == []
    assert all(0 < direct.pttl(k) <= 60_000 for k in direct.scan_iter("ephemesh:store:*"))
    assert "the store could not be written (Redis unreachable); waiting for it" in caplog.text


def test_a_redis_writer_cut_off_at_commit_commits_once(redis_url, cable):
    """The commit's answer is lost and it is tried again: the object is there
    once; the first try, reaching Redis later, changes nothing — not even
    after the object was deleted meanwhile."""
    store, direct = _cut_off_store(cable), redis.Redis.from_url(redis_url)
    store.put("result", OID, [b"old model", b"old report", b"old dicom", b"old preview"],
              time.time() + 60)
    parts = [os.urandom(CHUNK + 1), b"report"]
    with store.writer("result", OID, time.time() + 60, wait_until=time.time() + 60) as writer:
        for i, part in enumerate(parts):
            writer.open_part(i)
            writer.write(part)
        cable.pull_on(store._move_in.sha.encode(), for_s=2, late_by=1.5)
        writer.commit()
    assert writer.waited > 1
    assert store.get("result", OID) == parts  # the old object's extra parts are gone
    assert store.delete("result", OID) == len(parts[0]) + len(parts[1])
    cable.wait()
    time.sleep(0.3)
    assert store.meta("result", OID) is None
    assert list(direct.scan_iter("ephemesh:store:result:*")) == []


def test_a_redis_writer_waits_only_within_its_bound(redis_url, cable):
    """Past ``wait_until`` (or without it: the web's uploads) a writer gives up
    with Redis's own error, its object never visible; what it staged is
    removed, or expires at its deadline."""
    store, direct = _cut_off_store(cable), redis.Redis.from_url(redis_url)
    deadline = time.time() + 60
    for wait_s in (3.0, None):
        writer = store.writer("result", OID, deadline,
                              wait_until=None if wait_s is None else time.time() + wait_s)
        writer.open_part(0)
        writer.write(b"m" * CHUNK)
        cable.pull(for_s=6)
        began = time.monotonic()
        with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
            writer.write(b"m" * CHUNK)
        took = time.monotonic() - began  # the tries, and the abort's one (1 s)
        assert took < (wait_s or 1.0) + 1.5
        assert (writer.waited > 1.4) == (wait_s is not None)  # tried again, or not
        assert writer.done  # aborted
        cable.wait()
        assert store.meta("result", OID) is None
        assert all(0 < direct.pttl(k) <= 60_000 for k in direct.scan_iter("ephemesh:store:*"))
