"""Abuse: every refusal is a problem+json (API) or a readable page (browser),
with a stable code, and leaves nothing behind in the store or the queue."""

import io
import struct
import zipfile

import pytest
import redis

from tests.helpers import csrf_token, store_objects, zip_bytes

MB = 1024 * 1024


def _api_post(client, auth, parts, url="/api/v1/jobs", **fields):
    data = {"files": [(io.BytesIO(p), "upload.bin") for p in parts], **fields}
    return client.post(url, data=data, headers=auth, content_type="multipart/form-data")


def _nothing_left(settings, redis_url):
    assert store_objects(settings) == []
    conn = redis.Redis.from_url(redis_url)
    try:
        keys = [k.decode() for k in conn.keys("*")]
    finally:
        conn.close()
    assert [k for k in keys if not k.startswith(("LIMITS:LIMITER/ephemesh:limit/", "ephemesh:lock:",
                                                  "ephemesh:pseudonym-key:"))] == []


def dicomdir_bytes() -> bytes:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.FileSetID = "DISC"
    ds.DirectoryRecordSequence = Sequence([])
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def zero_bomb(size=64 * MB) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("zeros.dcm", "w") as fh:
        block = b"\0" * MB
        for _ in range(size // MB):
            fh.write(block)
    return buf.getvalue()


def overlap_bomb(copies=400, size=4 * MB) -> bytes:
    """One deflated entry, listed ``copies`` times in the central directory
    (all pointing at the same local data): zipfile 3.11.7 reads each copy."""
    single = zero_bomb(size)
    eocd = single.rindex(b"PK\x05\x06")
    cd_size, cd_offset = struct.unpack("<II", single[eocd + 12:eocd + 20])
    local, record = single[:cd_offset], single[cd_offset:cd_offset + cd_size]
    end = bytearray(single[eocd:])
    struct.pack_into("<HHII", end, 8, copies, copies, len(record) * copies, len(local))
    return local + record * copies + bytes(end)


def symlink_zip(series_files) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.dcm", series_files[0])
        link = zipfile.ZipInfo("link.dcm")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
    return buf.getvalue()


@pytest.fixture
def small_app(make_app):
    return make_app(MAX_CONTENT_LENGTH=2 * MB, MAX_FORM_PARTS=20, EPHEMESH_MAX_FILES=10,
                    EPHEMESH_MAX_ZIP_ENTRIES=50, EPHEMESH_MAX_UNPACKED=256 * MB)


def test_oversized_body_is_413(small_app, auth, settings, redis_url):
    client = small_app.test_client()
    resp = _api_post(client, auth, [b"\0" * (3 * MB)])
    assert resp.status_code == 413
    assert resp.mimetype == "application/problem+json"
    assert resp.json["code"] == "too_large"
    # the browser gets a page
    token = csrf_token(client)
    resp = client.post("/jobs", data={"csrf_token": token, "files": (io.BytesIO(b"\0" * 3 * MB), "a")},
                       content_type="multipart/form-data")
    assert resp.status_code == 413 and resp.mimetype == "text/html"
    assert "larger than 2 MB" in resp.get_data(as_text=True)
    _nothing_left(settings, redis_url)


def test_too_many_parts_and_too_many_files_are_413(small_app, auth, series_files, settings,
                                                   redis_url):
    client = small_app.test_client()
    # parts are counted as they come: fields past MAX_FORM_PARTS, files past the files cap
    resp = _api_post(client, auth, [b"x"], threshold=["300"] * 30)
    assert resp.status_code == 413 and resp.json["code"] == "too_many_parts"
    resp = _api_post(client, auth, [b"x"] * 30)
    assert resp.status_code == 413 and resp.json["code"] == "too_many_files"
    resp = _api_post(client, auth, [zip_bytes({f"{i}.dcm": series_files[0] for i in range(12)})])
    assert resp.status_code == 413 and resp.json["code"] == "too_many_files"
    _nothing_left(settings, redis_url)


@pytest.mark.parametrize("make, code", [
    (lambda s: zero_bomb(), "zip_ratio"),
    (lambda s: overlap_bomb(copies=40), "zip_ratio"),
    (lambda s: zip_bytes({f"{i}": b"" for i in range(60)}), "zip_too_many_entries"),
    (lambda s: symlink_zip(s), "zip_symlink"),
    (lambda s: zip_bytes({"inner.zip": zip_bytes({"a.dcm": s[0]})}), "nested_archive"),
    (lambda s: b"\x1f\x8b\x08\0" + b"\0" * 100, "unsupported_archive"),
    (lambda s: b"PK\x03\x04 not really a zip", "bad_archive"),
    (lambda s: b"Dear colleague, the scan is attached.\n" * 10, "not_dicom"),
    (lambda s: dicomdir_bytes(), "dicomdir_only"),
])
def test_bad_uploads_are_400_with_a_code(small_app, auth, series_files, settings, redis_url,
                                         make, code):
    client = small_app.test_client()
    resp = _api_post(client, auth, [make(series_files)])
    assert resp.status_code == 400, resp.json
    assert resp.json["code"] == code
    assert "Traceback" not in resp.get_data(as_text=True)
    _nothing_left(settings, redis_url)


def test_a_zip_bomb_is_refused_on_the_bytes_read_within_bounds(make_app, auth, settings, redis_url):
    app = make_app(EPHEMESH_MAX_ZIP_RATIO=100000, EPHEMESH_MAX_UNPACKED=100 * MB)
    resp = _api_post(app.test_client(), auth, [overlap_bomb(copies=100, size=4 * MB)])
    assert resp.status_code == 400 and resp.json["code"] == "zip_too_large"
    _nothing_left(settings, redis_url)


def test_zip_member_names_are_never_paths(client, auth, series_files, settings, tmp_path):
    evil = {"../../../../tmp/ephemesh-slip.dcm": series_files[0],
            "/etc/ephemesh-abs.dcm": series_files[1],
            "..\\..\\ephemesh-win.dcm": series_files[2],
            **{f"ok/{i}.dcm": f for i, f in enumerate(series_files[3:])}}
    resp = _api_post(client, auth, [zip_bytes(evil)])
    assert resp.status_code == 202
    from pathlib import Path
    for where in (Path("/tmp"), Path("/etc"), tmp_path, Path.cwd()):
        assert not list(where.rglob("ephemesh-*.dcm")) if where != Path("/etc") else \
            not (where / "ephemesh-abs.dcm").exists()
    names = [p.name for p in Path(settings.store).rglob("*")]
    assert not any("ephemesh-" in n or n.endswith(".dcm") for n in names)


def test_a_disc_folder_with_its_dicomdir_is_accepted(client, auth, series_files):
    resp = _api_post(client, auth, [dicomdir_bytes(), b"AUTORUN", *series_files])
    assert resp.status_code == 202


def test_form_post_without_csrf_token_is_refused(client, series_files, settings, redis_url):
    client.get("/")
    resp = client.post("/jobs", data={"files": (io.BytesIO(series_files[0]), "a.dcm")},
                       content_type="multipart/form-data")
    assert resp.status_code == 400
    assert resp.mimetype == "text/html"
    assert "reload the page" in resp.get_data(as_text=True)
    for path in ("/admin/login", "/jobs/x/delete"):
        resp = client.post(path, data={"name": "a", "password": "b"})
        assert resp.status_code == 400, path
    _nothing_left(settings, redis_url)


def test_burst_over_the_rate_limit_is_429(make_app, auth):
    app = make_app(EPHEMESH_RATE_LIMIT="5/minute", EPHEMESH_KEY_RATE_LIMIT="3/minute")
    client = app.test_client()
    statuses = [client.get("/privacy").status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    page = client.get("/privacy")
    assert page.mimetype == "text/html" and "try again" in page.get_data(as_text=True).lower()
    # per key on the API (another address, so the address limit is not what stops it)
    api = app.test_client()
    env = {"REMOTE_ADDR": "10.9.8.7"}
    statuses = [api.get("/api/v1/jobs/nope", headers=auth, environ_base=env).status_code
                for _ in range(4)]
    assert statuses == [404, 404, 404, 429]
    resp = api.get("/api/v1/jobs/nope", headers=auth, environ_base=env)
    assert resp.mimetype == "application/problem+json" and resp.json["code"] == "rate_limited"
    assert int(resp.headers["Retry-After"]) > 0


def test_uploads_are_limited_per_key(make_app, auth, series_files):
    app = make_app(EPHEMESH_UPLOAD_RATE_LIMIT="2/minute")
    client = app.test_client()
    codes = [_api_post(client, auth, series_files[:3]).status_code for _ in range(3)]
    assert codes == [202, 202, 429]


def test_brute_force_on_api_keys_blocks_the_address(make_app, records, api_key):
    """(A valid key still works there: tests/web/test_lockout.py.)"""
    app = make_app(EPHEMESH_API_MAX_AUTH_FAILURES=5)
    client = app.test_client()
    bad = [f"emk_guess{i:04d}xxxxxxxxxxxxxxxxxxxxxxxx" for i in range(6)]
    for key in bad[:5]:
        assert client.get("/api/v1/jobs/x", headers={"Authorization": f"Bearer {key}"}
                          ).status_code == 401
    resp = client.get("/api/v1/jobs/x", headers={"Authorization": f"Bearer {bad[5]}"})
    assert resp.status_code == 429 and resp.json["code"] == "too_many_failures"
    rows = records.audit_rows(event="api-key-refused")
    assert len(rows) == 5
    text = repr(rows)
    assert not any(k in text or k[:12] in text for k in bad)
    assert "127.0.0.1" not in text
    # another address is not blocked
    other = client.get("/api/v1/jobs/x", headers={"Authorization": f"Bearer {bad[5]}"},
                       environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert other.status_code == 401


def test_file_parts_with_line_breaks_are_not_too_large(client, auth, series_files, settings):
    """Werkzeug checks its form-memory cap on every 64 KiB chunk of every part:
    a cap at the chunk size refused real uploads (zips, pixel data) whenever
    a chunk ended near a CR or LF byte, as 413 too_many_parts."""
    awkward = b"\r\n" * 200_000  # every chunk ends on a line break: a skipped non-DICOM file
    noise = zip_bytes({"noise.bin": bytes(range(256)) * 4000, "a.dcm": series_files[0]})
    resp = _api_post(client, auth, [awkward, noise, *series_files])
    assert resp.status_code == 202, resp.json


def test_large_parts_spool_in_the_spool_dir(make_app, auth):
    """Werkzeug writes a file part over 500 kB to a temporary file: in the
    spool directory, never the system's /tmp."""
    import os

    from flask import request

    app = make_app()
    seen = []

    @app.post("/_probe")
    def probe():
        stream = request.files["files"].stream
        fileno = stream.fileno()  # rolled over to a real (unnamed) file
        seen.append(os.readlink(f"/proc/self/fd/{fileno}"))
        return "", 204

    app.extensions["csrf"].exempt(probe)
    resp = app.test_client().post("/_probe", data={"files": (io.BytesIO(b"\1" * 3 * MB), "a")},
                                  content_type="multipart/form-data")
    assert resp.status_code == 204
    assert seen and seen[0].startswith(app.config["EPHEMESH_SPOOL_DIR"] + "/"), seen


def test_retry_after_only_where_it_means_wait(make_app, auth, api_key, series_files):
    app = make_app(EPHEMESH_UPLOAD_RATE_LIMIT="1/minute", EPHEMESH_API_MAX_AUTH_FAILURES=2,
                   EPHEMESH_LOCKOUT_SECONDS=600)
    client = app.test_client()
    accepted = _api_post(client, auth, series_files[:2])
    assert accepted.status_code == 202
    assert "Retry-After" not in accepted.headers  # a 202 does not say "come back in a minute"
    assert "Retry-After" not in client.get("/privacy").headers
    limited = _api_post(client, auth, series_files[:2])
    assert limited.status_code == 429 and 0 < int(limited.headers["Retry-After"]) <= 60
    # a locked address is told how long the lock lasts
    env = {"REMOTE_ADDR": "10.7.7.7"}
    for _ in range(2):
        client.get("/api/v1/jobs/x", headers={"Authorization": "Bearer emk_bad"},
                   environ_base=env)
    locked = client.get("/api/v1/jobs/x", headers={"Authorization": "Bearer emk_bad"},
                        environ_base=env)
    assert locked.status_code == 429 and locked.json["code"] == "too_many_failures"
    assert 540 <= int(locked.headers["Retry-After"]) <= 600


def test_audit_pseudonyms_become_unlinkable(make_app, records, redis_url):
    """An audit row keeps a refused client's address only as a pseudonym.
    Its key is random per month and lives in Redis for two months: whoever
    holds the service's secret key cannot recompute it, and once the key is
    gone the same address gets a pseudonym that matches nothing kept."""
    import hashlib
    import hmac
    import json
    import time

    from web.security import SALT_TTL_S, forget_salts

    forget_salts()
    app = make_app()
    client = app.test_client()
    env = {"REMOTE_ADDR": "10.20.30.40"}
    client.get("/api/v1/jobs/x", headers={"Authorization": "Bearer emk_bad"}, environ_base=env)
    first = json.loads(records.audit_rows(event="api-key-refused")[0]["detail"])["address"]
    month = time.strftime("%Y-%m", time.gmtime())
    with_secret = hmac.new(f"{app.config['SECRET_KEY']}|{month}".encode(), b"10.20.30.40",
                           hashlib.sha256).hexdigest()[:16]
    assert first != with_secret
    conn = redis.Redis.from_url(redis_url)
    try:
        key = f"ephemesh:pseudonym-key:{month}"
        assert 0 < conn.ttl(key) <= SALT_TTL_S
        client.get("/api/v1/jobs/x", headers={"Authorization": "Bearer emk_bad"},
                   environ_base=env)
        again = json.loads(records.audit_rows(event="api-key-refused")[0]["detail"])["address"]
        assert again == first  # within the month: the same client is recognisable
        conn.delete(key)  # what its TTL does two months on
    finally:
        conn.close()
    forget_salts()
    client.get("/api/v1/jobs/x", headers={"Authorization": "Bearer emk_bad"}, environ_base=env)
    later = json.loads(records.audit_rows(event="api-key-refused")[0]["detail"])["address"]
    assert later != first


def test_no_room_for_an_upload_is_503_not_500(app, auth, series_files):
    """The store or the spool directory full (a tmpfs has a size): the client
    is told there is no room just now (503, Retry-After), not "something went
    wrong".  A file size limit on this process makes every large write fail
    the same way a full tmpfs does."""
    import resource
    import signal

    client = app.test_client()
    big = zip_bytes({f"{i}.dcm": f for i, f in enumerate(series_files)}) + b"\0" * (2 * MB)
    body = (b"--zz\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a\"\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n" + big + b"\r\n--zz--\r\n")
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (512 * 1024, hard))
    try:
        resp = client.post("/api/v1/jobs", data=body, headers=auth,
                           content_type="multipart/form-data; boundary=zz")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert resp.status_code == 503, resp.get_data(as_text=True)
    assert resp.json["code"] == "no_space" and int(resp.headers["Retry-After"]) > 0
