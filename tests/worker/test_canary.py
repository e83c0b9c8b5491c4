"""Canary scan: patient values, UIDs, a private tag and file names planted in
the uploads must appear in no lasting record — not in any Redis key or value
(RQ's pickled job data and meta included), database row, log line or STL.

Good and failing jobs run on real worker processes; a batch and a job that
stops to let its owner choose a series run too.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import zipfile
import zlib

import redis
from rq import Queue
from sqlalchemy import MetaData, select

from tests import dicomgen as G
from tests.helpers import wait_for

OWNER = "session:canary-owner"
WORD = "canary7q"  # every text canary contains this (any case)
UID_DIGITS = "8675309123456789"  # every planted UID contains this
UID_ROOT = f"2.25.{UID_DIGITS}"


def canary_series(directory, size=(16, 24, 24), kind="sphere", number=1, extra=None, **kw):
    """A series whose every identifying value is a canary."""
    n = number
    extra = {"InstitutionName": f"INST {WORD}", "AccessionNumber": f"AC{WORD}"[:16],
             **(extra or {})}
    G.make_series_dir(
        directory, kind, size=size,
        patient_name=f"PN{WORD.upper()}^DOE{n}", patient_id=f"ID-{WORD}-{n}",
        study_uid=f"{UID_ROOT}.1", series_uid=f"{UID_ROOT}.{n + 1}",
        sop_uid_prefix=f"{UID_ROOT}.{n + 1}.9", series_description=f"DESC {WORD} {n}",
        private_value=f"PRIV-{WORD}-{n}", series_number=n, extra=extra, **kw,
    )
    return sorted(directory.iterdir())


def patched(paths, old: bytes, new: bytes) -> list[bytes]:
    """The files with a placeholder value's bytes replaced (same length), to
    plant values pydicom itself finds invalid — and warns about, quoting them."""
    out = []
    for path in paths:
        data = path.read_bytes()
        assert old in data and len(old) == len(new)
        out.append(data.replace(old, new))
    return out


def zip_named(paths, prefix) -> bytes:
    """A zip whose member names carry the file-name canary."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, path in enumerate(paths):
            zf.writestr(f"{prefix}/FN-{WORD}-{i:03d}.dcm", path.read_bytes())
    return buf.getvalue()


def hits(blob) -> list[str]:
    """Canaries found in ``blob`` (bytes or str), raw and in the forms pydicom prints."""
    if isinstance(blob, str):
        blob = blob.encode("utf-8", "replace")
    low = blob.lower()
    found = []
    for needle in (WORD.encode(), UID_DIGITS.encode(), WORD.upper().encode(),
                   "canary7q".encode("utf-16-le")):
        if needle.lower() in low:
            found.append(needle.decode("latin-1"))
    return found


def _expand(value: bytes, key: bytes):
    """The value, and for RQ's keys what it holds if it is zlib and/or pickle
    (job data, meta, results).  Only bytes that start like a pickle are
    unpickled: random bytes (an STL) can ask pickle for gigabytes."""
    out = [value]
    if not key.startswith(b"rq:"):
        return out
    for candidate in (value, _try(zlib.decompress, value)):
        if candidate is None:
            continue
        if candidate[:1] == b"\x80" and candidate[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
            loaded = _try(pickle.loads, candidate)
            if loaded is not None:
                out.append(repr(loaded).encode())
        if candidate is not value:
            out.append(candidate)
    return out


def _try(fn, value):
    try:
        return fn(value)
    except Exception:  # not that encoding
        return None


def scan_redis(url) -> list[str]:
    r = redis.Redis.from_url(url)
    found = []
    for key in r.scan_iter("*"):
        kind = r.type(key).decode()
        values = [key]
        if kind == "string":
            values.append(r.get(key))
        elif kind == "hash":
            for k, v in r.hgetall(key).items():
                values += [k, v]
        elif kind == "list":
            values += r.lrange(key, 0, -1)
        elif kind == "set":
            values += list(r.smembers(key))
        elif kind == "zset":
            values += [m for m, _ in r.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            for _, fields in r.xrange(key):
                for k, v in fields.items():
                    values += [k, v]
        for v in values:
            for blob in _expand(v if isinstance(v, bytes) else str(v).encode(), key):
                found += [f"redis {key!r}: {h}" for h in hits(blob)]
    return found


def scan_database(engine) -> list[str]:
    meta = MetaData()
    meta.reflect(engine)
    found = []
    with engine.connect() as c:
        for table in meta.sorted_tables:
            for row in c.execute(select(table)).all():
                found += [f"db {table.name}: {h}" for h in hits(repr(tuple(row)))]
    return found


def test_no_canary_in_any_lasting_record(env_factory, store_kind, database_url, tmp_path):
    env = env_factory(store=store_kind, database_url=database_url, retention=600)
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    logging.getLogger().addHandler(handler)
    old_level = logging.getLogger().level
    logging.getLogger().setLevel(logging.DEBUG)
    fmt = "json" if store_kind == "redis" else "text"  # both log formats over the four runs
    try:
        env.start_workers(1, EPHEMESH_LOG_FORMAT=fmt)
        good = canary_series(tmp_path / "good", number=1)
        other = canary_series(tmp_path / "other", kind="box", size=(12, 24, 24), number=2)
        broken = canary_series(tmp_path / "broken", size=(6, 16, 16), number=3)
        truncated = [p.read_bytes()[:-300] for p in broken]  # corrupt pixel data
        single = canary_series(tmp_path / "single", size=(1, 16, 16), number=4)
        # DS values pydicom warns about when it reads them, quoting the value; the
        # converter needs one of them (RescaleSlope), not the other (SliceThickness)
        odd = canary_series(tmp_path / "odd", size=(12, 24, 24), number=5,
                            extra={"SliceThickness": "7.654321"})
        bad_slope = canary_series(tmp_path / "slope", size=(6, 16, 16), number=6,
                                  extra={"RescaleSlope": "1.000001"})

        jobs = [
            env.service.create_job([zip_named(good, "PATIENT-" + WORD)], {"preset": "bone"},
                                   owner=OWNER),
            env.service.create_job([p.read_bytes() for p in good], {"threshold": 5000},
                                   owner=OWNER),  # no surface: names the data range
            env.service.create_job(truncated, {}, owner=OWNER),
            env.service.create_job([single[0].read_bytes()], {}, owner=OWNER),
            env.service.create_job([p.read_bytes() for p in good],
                                   {"series": f"{UID_ROOT}.999"}, owner=OWNER),  # not there
            env.service.create_job([zip_named(good + other, "STUDY-" + WORD)], {}, owner=OWNER,
                                   pick_series=True),
            env.service.create_job(patched(odd, b"7.654321", WORD.encode()), {}, owner=OWNER),
            env.service.create_job(patched(bad_slope, b"1.000001", WORD.encode()), {},
                                   owner=OWNER),
        ]
        batch = env.service.create_batch([zip_named(good + other, WORD)], {}, owner=OWNER)
        ids = [j["id"] for j in jobs]
        views = [env.wait_job(i, OWNER, statuses=("done", "failed", "choosing")) for i in ids]
        assert [v["status"] for v in views] == ["done", "failed", "failed", "failed", "failed",
                                                "choosing", "done", "failed"]
        assert [v["error"]["code"] for v in views[1:5]] == [
            "no_surface", "corrupt_pixel_data", "single_slice", "series_not_found"]
        env.service.choose_series(ids[5], 2, owner=OWNER)
        assert env.wait_job(ids[5], OWNER)["status"] == "done"
        wait_for(lambda: (b := env.service.get_batch(batch["id"], owner=OWNER))["status"]
                 == "ready" and all(j["status"] == "done" for j in b["jobs"]), 60,
                 "the batch to finish")

        # every sink
        found = scan_redis(env.settings.effective_redis_url)
        found += scan_database(env.service.records.engine)
        found += [f"log: {h}" for h in hits(env.log_text() + sink.getvalue())]
        for view in [env.service.get_job(i, owner=OWNER) for i in ids]:
            found += [f"view {view['id']}: {h}" for h in hits(repr(view))]
            if view["status"] == "done":
                data = env.service.open_result(view["id"], owner=OWNER).file.read()
                assert data[:80].rstrip() == b"ephemesh SPACE=LPS UNITS=mm"
                found += [f"stl: {h}" for h in hits(data)]
        for entry in env.ctx.store.entries("result"):
            for part in env.ctx.store.get("result", entry.object_id):
                found += [f"result {entry.object_id}: {h}" for h in hits(part)]
        assert env.ctx.store.entries("input") == []  # every upload went with its conversion
        if fmt == "json":  # one object a line, with the job's id where one runs
            lines = [json.loads(line) for line in env.log_text().splitlines()
                     if line.startswith("{")]
            assert lines and all({"time", "level", "event"} <= set(e) for e in lines)
            ended = [e for e in lines if e["event"].startswith("conversion ")]
            assert len(ended) >= len(ids) and all("job_id" in e and "duration_s" in e
                                                  for e in ended)
        assert found == []
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(old_level)


def test_the_scanner_finds_planted_canaries(env_factory, tmp_path):
    """The scan itself can fail: an upload waiting in a Redis store is found,
    and so is a canary inside RQ's compressed, pickled job data."""
    env = env_factory(store="redis")
    good = canary_series(tmp_path / "good", size=(4, 8, 8))
    env.service.create_job([zip_named(good, "x")], {}, owner=OWNER)  # no worker: stays queued
    found = scan_redis(env.settings.effective_redis_url)
    assert any("ephemesh:store:input" in f for f in found)
    Queue("elsewhere", connection=redis.Redis.from_url(env.settings.effective_redis_url)
          ).enqueue("os.getcwd", f"ID-{WORD}", job_id="planted", ttl=60)
    assert any("rq:job:planted" in f for f in scan_redis(env.settings.effective_redis_url))
    env.service.records.audit("test", "x", {"note": f"ID-{WORD}"})
    assert scan_database(env.service.records.engine)
