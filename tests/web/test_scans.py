"""The scan workspace's API (``/api/v1/scans…``) with real Redis and real RQ
workers: life cycle, views, jobs from a kept upload, bad input."""

import io
import struct
import zlib

import numpy as np
import pytest

from tests.helpers import store_objects, wait_for


def post_scan(client, auth, files):
    data = {"files": [(io.BytesIO(f), "x.dcm") for f in files]}
    return client.post("/api/v1/scans", data=data, headers=auth,
                       content_type="multipart/form-data")


def ready_scan(client, auth, files, timeout=90):
    resp = post_scan(client, auth, files)
    assert resp.status_code == 201, resp.json
    url = resp.json["links"]["self"]
    return wait_for(lambda: (lambda s: s if s["status"] != "reading" else None)(
        client.get(url, headers=auth).json), timeout, "the scan to be read")


def read_png(data: bytes) -> np.ndarray:
    """The pixels of one of our PNGs (8-bit, grey or RGB, filter 0)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, _depth, colour = header[:4]
    channels = 3 if colour == 2 else 1
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, width * channels + 1)
    assert not raw[:, 0].any()
    pixels = raw[:, 1:].reshape(height, width, channels)
    return pixels[:, :, 0] if channels == 1 else pixels


def test_a_scan_is_read_once_looked_at_converted_twice_and_deleted(client, auth, workers,
                                                                   series_zip, settings):
    scan = ready_scan(client, auth, [series_zip])
    assert scan["status"] == "ready", scan
    assert scan["expires_at"].endswith("Z")
    assert len(scan["series"]) == 1
    series = scan["series"][0]
    assert {"n", "number", "description", "acquired", "modality", "slices", "rows", "columns",
            "spacing_mm", "links"} <= set(series)
    assert (series["slices"], series["rows"], series["columns"]) == (20, 28, 28)

    geo = client.get(series["links"]["volume"], headers=auth).json
    assert geo["unit"] == "HU" and geo["planes"]["axial"]["count"] == 20
    assert geo["planes"]["axial"]["edges"] == {"right": "L", "left": "R", "top": "A",
                                               "bottom": "P"}
    hist = client.get(series["links"]["histogram"], headers=auth).json
    assert sum(hist["counts"]) == 20 * 28 * 28
    assert {s["name"] for s in hist["suggested"]} >= {"bone", "auto"}

    png = client.get(series["links"]["slice"] + "?plane=axial&index=10&threshold=0",
                     headers=auth)
    assert png.status_code == 200 and png.mimetype == "image/png"
    assert read_png(png.data).shape == (28, 28, 3)
    thumb = client.get(series["links"]["thumbnail"], headers=auth)
    assert thumb.mimetype == "image/png"

    est = client.get(series["links"]["estimate"] + "?threshold=0", headers=auth).json
    assert est["triangles"] > 0 and est["bytes"] == 84 + 50 * est["triangles"]

    jobs = []
    for threshold in ("0", "500"):
        resp = client.post(scan["links"]["jobs"], data={"series": "1", "threshold": threshold},
                           headers=auth)
        assert resp.status_code == 202, resp.json
        jobs.append(resp.json)
    for job in jobs:
        done = wait_for(lambda j=job: (lambda v: v if v["status"] in ("done", "failed")
                                       else None)(client.get(j["links"]["self"], headers=auth).json),
                        90, "a scan job")
        assert done["status"] == "done", done
        assert done["scan_id"] == scan["id"]
        assert client.get(job["links"]["result"], headers=auth).status_code == 200
    listed = client.get(scan["links"]["jobs"], headers=auth).json["jobs"]
    assert {j["id"] for j in listed} == {j["id"] for j in jobs}
    assert client.get(f"/api/v1/jobs?scan={scan['id']}", headers=auth).json["jobs"]

    assert client.delete(scan["links"]["self"], headers=auth).status_code == 204
    assert client.get(scan["links"]["self"], headers=auth).json["status"] == "deleted"
    assert client.get(series["links"]["slice"], headers=auth).status_code == 410
    for job in jobs:
        assert client.get(job["links"]["result"], headers=auth).status_code == 410
    assert store_objects(settings) == []


def test_a_job_has_a_preview_of_at_most_a_fifth_of_the_model(client, auth, workers, series_zip):
    from converter.preview import decode

    resp = client.post("/api/v1/jobs", data={"files": [(io.BytesIO(series_zip), "a.zip")],
                                             "smooth": "5"},
                       headers=auth, content_type="multipart/form-data")
    url = resp.json["links"]["self"]
    assert client.get(resp.json["links"]["preview"], headers=auth).status_code == 409
    job = client.get(url + "?wait=30", headers=auth).json
    job = wait_for(lambda: (lambda v: v if v["status"] == "done" else None)(
        client.get(url + "?wait=5", headers=auth).json), 90, "the job")
    stl = client.get(job["links"]["result"], headers=auth).data
    got = client.get(job["links"]["preview"], headers=auth)
    assert got.status_code == 200 and got.mimetype == "application/octet-stream"
    assert len(got.data) <= 0.2 * len(stl)
    verts, faces = decode(got.data)
    assert len(faces) == job["report"]["triangles"]
    assert client.delete(url, headers=auth).status_code == 204
    assert client.get(job["links"]["preview"], headers=auth).status_code == 410


def test_a_workspace_left_alone_is_gone_by_its_deadline_volume_too(tmp_path, redis_url,
                                                                   series_zip):
    """Compressed clock (30 s retention, a sweep each second), real Redis,
    a real worker and the sweeper's clock: the upload and the decoded volume
    go by the deadline, a result made from it stays its own hour, and the
    ledger says so."""
    import time

    from tests.helpers import make_settings
    from web import create_app
    from worker.runtime import Runtime

    settings = make_settings(tmp_path, redis_url, retention=30, sweep=1)
    app = create_app({"TESTING": True, "EPHEMESH_SETTINGS": settings, "SECRET_KEY": "k"})
    records = app.extensions["ephemesh.service"].records
    with open(tmp_path / "runtime.log", "ab") as log:
        runtime = Runtime(settings).start(workers=1, cron=True, stderr=log)
    try:
        client = app.test_client()
        auth = {"Authorization": f"Bearer {records.create_key('k')[1]}"}
        scan = ready_scan(client, auth, [series_zip])
        assert scan["status"] == "ready", scan
        kinds = lambda: {p.parent.name for p in store_objects(settings)}  # noqa: E731
        assert {"scan", "volume"} <= kinds()
        job = client.post(scan["links"]["jobs"], data={"threshold": "0"}, headers=auth).json
        wait_for(lambda: client.get(job["links"]["self"], headers=auth).json["status"] == "done",
                 60, "the scan's job")
        deadline = records.scan(scan["id"])["deadline"]
        wait_for(lambda: not {"scan", "volume"} & kinds(), 60, "the scan to go")
        assert time.time() <= deadline + 1.5, "the scan outlived its deadline"
        view = client.get(scan["links"]["self"], headers=auth).json
        assert view["status"] == "deleted" and view["expires_at"] is None
        series = scan["series"][0]["links"]["slice"]
        assert client.get(series, headers=auth).status_code == 410
        rows = {(r["kind"], r["object_id"]): r for r in records.ledger()}
        for kind in ("scan", "volume"):
            row = rows[(kind, scan["id"])]
            assert row["reason"] == "expired" and not row["late"], row
        # the result made from it keeps its own hour (made + retention)
        assert client.get(job["links"]["result"], headers=auth).status_code in (200, 410)
    finally:
        runtime.stop(grace=10)
        app.extensions["ephemesh.service"].close()


def _refused(resp, status, code):
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True))
    assert resp.mimetype == "application/problem+json"
    assert resp.json["code"] == code, resp.json
    return resp.json


def test_bad_input_is_refused_with_stable_codes_and_keeps_nothing_more(
        client, auth, records, workers, series_zip, settings):
    scan = ready_scan(client, auth, [series_zip])
    base = scan["links"]["self"]
    s1 = f"{base}/series/1"
    before = sorted(p.name for p in store_objects(settings))
    other = {"Authorization": f"Bearer {records.create_key('other')[1]}"}
    cases = [
        (client.get("/api/v1/scans/nosuchscan123", headers=auth), 404, "not_found"),
        (client.get(base, headers=other), 404, "not_found"),
        (client.get(s1 + "/histogram", headers=other), 404, "not_found"),
        (client.delete(base, headers=other), 404, "not_found"),
        (client.get(f"{base}/series/2", headers=auth), 404, "series_not_found"),
        (client.get(f"{base}/series/0/slice", headers=auth), 404, "series_not_found"),
        (client.get(s1 + "/slice?plane=oblique", headers=auth), 400, "invalid_plane"),
        (client.get(s1 + "/slice?index=-1", headers=auth), 400, "invalid_index"),
        (client.get(s1 + "/slice?plane=axial&index=20", headers=auth), 400, "invalid_index"),
        (client.get(s1 + "/slice?plane=coronal&index=28", headers=auth), 400, "invalid_index"),
        (client.get(s1 + "/slice?index=ten", headers=auth), 400, "invalid_index"),
        (client.get(s1 + "/slice?threshold=bone", headers=auth), 400, "invalid_threshold"),
        (client.get(s1 + "/slice?threshold=nan", headers=auth), 400, "invalid_threshold"),
        (client.get(s1 + "/slice?threshold=inf", headers=auth), 400, "invalid_threshold"),
        (client.get(s1 + "/slice?window=0&level=40", headers=auth), 400, "invalid_window"),
        (client.get(s1 + "/slice?window=400", headers=auth), 400, "invalid_window"),
        (client.get(s1 + "/slice?format=jpeg", headers=auth), 400, "invalid_format"),
        (client.get(s1 + "/estimate?threshold=5000", headers=auth), 400, "no_surface"),
        (client.get(s1 + "/estimate?threshold=x", headers=auth), 400, "invalid_threshold"),
        (client.get(s1 + "/estimate?colour=red", headers=auth), 400, "unknown_field"),
        (client.post(base + "/jobs", data={"series": "7"}, headers=auth), 404,
         "series_not_found"),
        (client.post(base + "/jobs", data={"threshold": "x"}, headers=auth), 400,
         "invalid_threshold"),
        (client.post(base + "/jobs", data={"colour": "red"}, headers=auth), 400, "unknown_field"),
        (client.post("/api/v1/scans", data={"files": [(io.BytesIO(series_zip), "a.zip")],
                                            "preset": "bone"},
                     headers=auth, content_type="multipart/form-data"), 400, "unknown_field"),
        (client.get("/api/v1/jobs?status=cooking", headers=auth), 400, "invalid_filter"),
        (client.get("/api/v1/jobs?colour=red", headers=auth), 400, "invalid_filter"),
        (client.get("/api/v1/jobs?limit=0", headers=auth), 400, "invalid_filter"),
        (client.get("/api/v1/jobs?cursor=%%%", headers=auth), 400, "invalid_cursor"),
        (client.get("/api/v1/jobs/whatever?wait=1", headers=auth), 404, "not_found"),
        (client.get("/api/v1/scans", headers={}), 405, "method_not_allowed"),
        (client.get(base, headers={}), 401, "missing_key"),
    ]
    for resp, status, code in cases:
        _refused(resp, status, code)
    assert sorted(p.name for p in store_objects(settings)) == before
    assert client.get(f"/api/v1/jobs?scan={scan['id']}", headers=auth).json["jobs"] == []

    assert client.delete(base, headers=auth).status_code == 204
    _refused(client.get(s1 + "/slice", headers=auth), 410, "gone")
    _refused(client.get(s1 + "/histogram", headers=auth), 410, "gone")
    _refused(client.post(base + "/jobs", data={}, headers=auth), 410, "gone")
    assert client.delete(base, headers=auth).status_code == 204  # once more: still deleted
    rows = [r for r in records.ledger() if r["object_id"] == scan["id"]]
    assert {(r["kind"], r["reason"]) for r in rows} >= {("scan", "user-request"),
                                                         ("volume", "user-request")}
    assert store_objects(settings) == []


def test_a_scan_being_read_answers_409_and_its_wait_returns(client, auth, series_zip):
    scan = post_scan(client, auth, [series_zip]).json  # no worker: it stays "reading"
    assert scan["status"] == "reading" and scan["series"] == []
    s1 = scan["links"]["self"] + "/series/1"
    _refused(client.get(s1 + "/slice", headers=auth), 409, "not_ready")
    _refused(client.post(scan["links"]["jobs"], data={}, headers=auth), 409, "not_ready")
    job = client.post("/api/v1/jobs", data={"files": [(io.BytesIO(series_zip), "a.zip")]},
                      headers=auth, content_type="multipart/form-data").json
    import time

    start = time.monotonic()
    view = client.get(job["links"]["self"] + "?wait=1", headers=auth).json
    assert view["status"] == "queued" and 0.9 < time.monotonic() - start < 5
    _refused(client.get(job["links"]["self"] + "?wait=31", headers=auth), 400, "invalid_wait")
    _refused(client.get(job["links"]["self"] + "?wait=soon", headers=auth), 400,
             "invalid_wait")
    listed = client.get("/api/v1/jobs?status=queued&limit=1", headers=auth).json
    assert [j["id"] for j in listed["jobs"]] == [job["id"]] and listed["next"] is None
    assert client.delete(scan["links"]["self"], headers=auth).status_code == 204


@pytest.fixture(scope="module")
def two_parts_zip(tmp_path_factory):
    """Two spheres (big at x = -8 mm, r 9; small at x = +12 mm, r 4) in one series."""
    from tests import dicomgen as G
    from tests.helpers import zip_bytes

    folder = G.make_series_dir(tmp_path_factory.mktemp("two-parts"), "two_spheres",
                               size=(24, 36, 48))
    return zip_bytes({p.name: p.read_bytes() for p in sorted(folder.iterdir())})


def test_region_options_reach_the_converter_and_bad_ones_are_refused_at_once(
        client, auth, records, workers, two_parts_zip):
    scan = ready_scan(client, auth, [two_parts_zip])
    est = scan["series"][0]["links"]["estimate"]
    whole = client.get(est + "?threshold=0", headers=auth).json
    small = client.get(est + "?threshold=0&seed=12,0,0", headers=auth).json
    assert 0 < small["triangles"] < whole["triangles"] / 3
    jobs = scan["links"]["jobs"]
    refusals = [({"threshold": "0", "crop": "100,100,100,120,120,120"}, "crop_outside"),
                ({"threshold": "0", "seed": "0,0,500"}, "seed_outside"),
                ({"threshold": "0", "seed": "2,15,0"}, "seed_in_background"),
                ({"threshold": "0", "seed": "12,0"}, "invalid_seed"),
                ({"threshold": "5000"}, "no_surface")]
    for fields, code in refusals:
        _refused(client.post(jobs, data=fields, headers=auth), 400, code)
        _refused(client.get(est, query_string=fields, headers=auth), 400, code)
    assert client.get(jobs, headers=auth).json["jobs"] == []
    made = {}
    for name, fields in {"seed": {"seed": "12,0,0"}, "crop": {"crop": "-20,-12,-12,0,12,12"},
                         "parts": {"keep_parts": "2"}}.items():
        resp = client.post(jobs, data={"threshold": "0", **fields}, headers=auth)
        assert resp.status_code == 202, resp.json
        made[name] = resp.json["links"]["self"]
    reports = {}
    for name, url in made.items():
        view = wait_for(lambda u=url: (lambda v: v if v["status"] in ("done", "failed")
                                       else None)(client.get(u + "?wait=10", headers=auth).json),
                        120, f"the {name} job")
        assert view["status"] == "done", view
        reports[name] = view["report"]
    assert reports["seed"]["components"] == 1 and reports["parts"]["components"] == 2
    lo, hi = reports["seed"]["bbox_mm"]
    assert 6 < lo[0] and hi[0] < 18  # the small sphere only
    lo, hi = reports["crop"]["bbox_mm"]
    assert hi[0] <= 0.5 and lo[0] >= -17.5
    assert client.delete(scan["links"]["self"], headers=auth).status_code == 204


def test_a_browser_session_owns_its_scans_and_its_posts_need_the_token(make_app, series_zip):
    """The workspace page calls the same endpoints with its session cookie:
    POST and DELETE need the page's CSRF token (X-CSRFToken); another
    browser gets 404; the views are not counted by the per-key limit."""
    from tests.helpers import csrf_token

    app = make_app(EPHEMESH_KEY_RATE_LIMIT="4/minute", WTF_CSRF_ENABLED=True)
    page, other = app.test_client(), app.test_client()
    token = csrf_token(page)
    files = {"files": [(io.BytesIO(series_zip), "a.zip")]}
    refused = page.post("/api/v1/scans", data=dict(files), content_type="multipart/form-data",
                        headers={"X-CSRFToken": "forged"})
    assert refused.status_code == 400 and refused.json["code"] == "csrf_failed"
    made = page.post("/api/v1/scans", data={"files": [(io.BytesIO(series_zip), "a.zip")]},
                     content_type="multipart/form-data", headers={"X-CSRFToken": token})
    assert made.status_code == 201, made.json
    url = made.json["links"]["self"]
    assert page.get(url).json["status"] == "reading"
    other_token = csrf_token(other)
    assert other.get(url, headers={"X-CSRFToken": other_token}).status_code == 404
    thumb = made.json["links"]["self"] + "/series/1/thumbnail"
    for _ in range(8):  # views: past the per-key limit of 4, still answered (409: reading)
        assert page.get(thumb).status_code == 409
    assert page.delete(url).json["code"] == "csrf_failed"
    assert page.delete(url, headers={"X-CSRFToken": token}).status_code == 204
    assert page.get(url).json["status"] == "deleted"
    # the rest of the workspace is counted by the per-key (here: per-address) limit
    statuses = [page.get(url).status_code for _ in range(4)]
    assert 429 in statuses, statuses
