"""worker/intake.py: uploads streamed into the store (both backends), limits
counted on the bytes read, names ignored, nothing left of a refusal."""

from __future__ import annotations

import io
import os
import time
import tracemalloc
import zipfile

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import zip_bytes
from worker.intake import CHUNK, FIRST_FILE, Intake, Limits, Refusal, kind_of
from worker.receipts import UploadDigest, new_salt
from worker.store import DirectoryStore, RedisStore

MB = 1024 * 1024
NAMES = st.one_of(
    st.sampled_from(["../x.dcm", "../../etc/passwd", "/abs/x", "C:\\win\\x", "\\\\srv\\share\\x",
                     "a/../../b", "", ".", "dir/", "é/ü.dcm", "x" * 300]),
    st.text(min_size=1, max_size=40),
)
OID = "intake-test-0001"
DEFAULT = Limits()


@pytest.fixture
def store(store_kind, tmp_path, redis_url):
    if store_kind == "directory":
        return DirectoryStore(tmp_path / "store")
    return RedisStore(redis.Redis.from_url(redis_url))


def _intake(store, limits=DEFAULT, **kw) -> Intake:
    writer = store.writer("input", OID, time.time() + 60)
    return Intake(writer, limits, **kw)


def _left(store) -> list:
    """Everything of the store: objects, a writer's folder or staging keys."""
    if isinstance(store, DirectoryStore):
        return [p.name for p in (store.root / "input").iterdir()]
    return [k.decode() for k in store.redis.scan_iter("ephemesh:store:*")]


def _take(store, parts, limits=DEFAULT, **kw) -> list[bytes]:
    """Feed ``parts`` (bytes each) in odd-sized chunks, commit, read back the files."""
    intake = _intake(store, limits, **kw)
    with intake:
        for data in parts:
            intake.begin()
            for i in range(0, len(data), 7777):
                intake.feed(data[i:i + 7777])
            intake.end()
        intake.finish()
        intake.commit(b"{}")
    stored = store.get("input", OID)
    assert stored[0] == b"{}"
    return stored[FIRST_FILE:]


def _refused(store, parts, limits=DEFAULT) -> str:
    with pytest.raises(Refusal) as caught:
        _take(store, parts, limits)
    assert _left(store) == [], "a refused upload left something in the store"
    return caught.value.code


def test_files_and_zip_members_are_stored_in_order_and_the_rest_skipped(store, series_bytes):
    archive = zip_bytes({"a/1.dcm": series_bytes[1], "readme.txt": b"hello", "2.dcm": series_bytes[2]})
    files = _take(store, [series_bytes[0], archive, b"", b"not dicom at all"])
    assert files == series_bytes[:3]


def test_a_refusal_leaves_nothing_in_either_store(store, series_bytes):
    nested = zip_bytes({"inner.zip": zip_bytes({"a.dcm": series_bytes[0]})})
    assert _refused(store, [series_bytes[0], nested]) == "nested_archive"
    assert _refused(store, [b"Dear colleague\n" * 500]) == "not_dicom"
    assert _refused(store, [series_bytes[0]] * 3, Limits(max_files=2)) == "too_many_files"
    assert _refused(store, [b""]) == "no_files"
    intake = _intake(store)
    intake.begin()
    intake.feed(series_bytes[0][:5000])
    intake.abort()  # the client went away mid-file
    assert _left(store) == []


def test_the_digest_is_fed_each_part_as_sent(store, series_bytes):
    salt = new_salt()
    fed, expected = UploadDigest(salt), UploadDigest(salt)
    archive = zip_bytes({"1.dcm": series_bytes[1]})
    for data in (series_bytes[0], archive):
        expected.part()
        expected.update(data)
    _take(store, [series_bytes[0], archive], digest=fed)
    assert fed.hexdigest() == expected.hexdigest()


def test_every_byte_written_is_taken_from_the_budget_first(store, series_bytes):
    taken = []
    archive = zip_bytes({"1.dcm": series_bytes[1]})
    _take(store, [series_bytes[0], archive], take=taken.append)
    # the raw file, the zip spooled, its member stored, the options
    assert sum(taken) == len(series_bytes[0]) + len(archive) + len(series_bytes[1]) + 2
    store.delete("input", OID)

    def full(n):
        raise RuntimeError("budget full")

    with pytest.raises(RuntimeError, match="budget full"):
        _take(store, [series_bytes[0]], take=full)
    assert _left(store) == []


@pytest.mark.parametrize("store_kind", ["directory"])
def test_a_large_zip_is_never_held_in_memory(store, series_bytes, tmp_path):
    """64 MB of DICOM members go through in chunks: the Python heap peaks at
    a few chunks, not the upload."""
    path = tmp_path / "big.zip"
    member = series_bytes[0] + os.urandom(8 * MB)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(8):
            zf.writestr(f"{i}.dcm", member)
    intake = _intake(store, spool_dir=tmp_path)
    tracemalloc.start()
    try:
        with intake, open(path, "rb") as fh:
            intake.add(fh)
            upload = intake.finish()
            intake.commit(b"{}")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert upload.files == 8 and upload.size == 8 * len(member)
    assert peak < 6 * CHUNK, f"the intake held {peak / MB:.1f} MB"


@pytest.mark.filterwarnings("ignore:Duplicate name")
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(entries=st.lists(st.tuples(NAMES, st.booleans(), st.binary(max_size=64)), max_size=12))
def test_any_zip_gives_member_bytes_or_a_refusal(tmp_path, series_bytes, entries):
    store = DirectoryStore(tmp_path / f"store-{time.monotonic_ns()}")
    buf = io.BytesIO()
    expected = []
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, (name, is_dicom, junk) in enumerate(entries):
            data = series_bytes[i % len(series_bytes)] if is_dicom else b"junk" + junk
            info = zipfile.ZipInfo(name or f"unnamed{i}")
            if not info.filename:  # zipfile cuts a name at NUL: "\0x" is no name at all
                info = zipfile.ZipInfo(f"unnamed{i}")
            if info.is_dir():
                zf.writestr(info, b"")
                continue
            zf.writestr(info, data)
            if is_dicom:
                expected.append(data)
    try:
        files = _take(store, [buf.getvalue()], Limits(max_files=50))
    except Refusal as exc:
        assert exc.code in ("not_dicom", "no_files", "bad_archive", "zip_ratio")
        assert not expected or exc.code != "not_dicom"
        assert _left(store) == []
        return
    assert sorted(files) == sorted(expected)


def test_limits_count_bytes_read_not_declared_sizes(store):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("a", "w") as fh:
        fh.write(b"\0" * (20 << 20))
    code = _refused(store, [buf.getvalue()], Limits(max_unpacked=10 << 20, max_ratio=10**6))
    assert code == "zip_too_large"


def test_kind_of_sniffs_dicom_dicomdir_and_other(series_bytes):
    assert kind_of(series_bytes[0]) == "dicom"
    assert kind_of(series_bytes[0][128 + 4:]) in ("dicom", "other")  # bare meta group
    assert kind_of(b"hello world, this is text") == "other"
    assert kind_of(b"") == "other"


def test_limits_are_checked_at_the_door():
    with pytest.raises(ValueError, match="max_ratio"):
        Limits(max_ratio=0)
    with pytest.raises(TypeError, match="Limits"):
        Intake(None, {"max_files": 3})



def test_an_upload_still_streaming_in_is_kept_by_the_sweeper_until_its_deadline(
        env_factory, series_bytes):
    """A writer's folder is debris to the sweeper only once its upload's
    deadline is due (an upload may take longer than the debris age), so a
    web process that died mid-upload leaves nothing past that deadline."""
    from worker.sweeper import LEFTOVER_AGE_S, purge_inputs

    env = env_factory(retention=600)
    store = env.ctx.store
    now = time.time()
    intake = Intake(store.writer("input", OID, now + 600, created=now), DEFAULT)
    intake.begin()
    intake.feed(series_bytes[0])
    assert [p.name[:3] for p in (store.root / "input").iterdir()] == [".w."]
    purge_inputs(env.ctx, now=now + LEFTOVER_AGE_S * 5)
    assert len(_left(store)) == 1, "an upload in progress was swept"
    purge_inputs(env.ctx, now=now + 600)
    assert _left(store) == []
