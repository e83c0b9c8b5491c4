"""The payload store: the same behaviour from the directory and the Redis backend."""

from __future__ import annotations

import os
import threading
import time

import pytest
import redis

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
