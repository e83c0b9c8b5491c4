"""API v1 through the Flask test client, with real RQ workers converting."""

import io
import json
import zipfile

from tests.helpers import csrf_token, make_settings, store_objects, wait_for
from web import create_app
from worker.runtime import Runtime


def _post_job(client, auth, files, **fields):
    data = {"files": [(io.BytesIO(f), "x.dcm") for f in files], **fields}
    return client.post("/api/v1/jobs", data=data, headers=auth, content_type="multipart/form-data")


def _wait(client, auth, url, statuses=("done", "failed"), timeout=90):
    return wait_for(lambda: (lambda j: j if j["status"] in statuses else None)(
        client.get(url, headers=auth).json), timeout, f"{url} to reach {statuses}")


def test_a_job_runs_from_upload_to_delete(client, auth, workers, series_zip, settings):
    resp = _post_job(client, auth, [series_zip], preset="bone", smooth="2", largest="true")
    assert resp.status_code == 202, resp.json
    body = resp.json
    assert set(body) >= {"id", "status", "links"}
    assert body["status"] == "queued"
    assert body["links"] == {"self": f"/api/v1/jobs/{body['id']}",
                             "result": f"/api/v1/jobs/{body['id']}/result",
                             "preview": f"/api/v1/jobs/{body['id']}/preview",
                             "receipt": f"/api/v1/jobs/{body['id']}/receipt"}
    assert resp.headers["Location"] == body["links"]["self"]

    job = _wait(client, auth, body["links"]["self"])
    assert job["status"] == "done", job
    assert set(job) >= {"id", "status", "progress", "report", "error", "expires_at"}
    assert job["progress"]["percent"] == 100
    assert job["report"]["triangles"] > 100 and job["report"]["watertight"]
    assert job["error"] is None and job["expires_at"].endswith("Z")

    result = client.get(body["links"]["result"], headers=auth)
    assert result.status_code == 200
    assert result.mimetype == "model/stl"
    assert result.headers["Content-Disposition"] == "attachment; filename=model.stl"
    assert result.headers["Cache-Control"] == "no-store"
    assert result.data[:80].startswith(b"ephemesh SPACE=LPS UNITS=mm")
    assert len(result.data) == 84 + 50 * job["report"]["triangles"]

    assert client.delete(body["links"]["self"], headers=auth).status_code == 204
    gone = client.get(body["links"]["result"], headers=auth)
    assert gone.status_code == 410 and gone.json["code"] == "gone"
    assert client.get(body["links"]["self"], headers=auth).json["status"] == "deleted"
    assert store_objects(settings) == []


def test_a_failed_job_reports_a_stable_code(client, auth, workers, series_files):
    resp = _post_job(client, auth, series_files[:1])  # one slice: nothing to mesh
    job = _wait(client, auth, resp.json["links"]["self"])
    assert job["status"] == "failed"
    assert job["error"]["code"] == "single_slice"
    result = client.get(resp.json["links"]["result"], headers=auth)
    assert result.status_code == 409 and result.json["code"] == "not_ready"


def test_result_before_the_job_ran_is_409(client, auth, series_files):
    resp = _post_job(client, auth, series_files)  # no worker running
    result = client.get(resp.json["links"]["result"], headers=auth)
    assert result.status_code == 409
    assert result.mimetype == "application/problem+json"
    assert result.json["code"] == "not_ready"
    assert client.delete(resp.json["links"]["self"], headers=auth).status_code == 204


def test_bad_options_are_refused_with_their_code_and_nothing_is_stored(client, auth,
                                                                       series_files, settings):
    cases = [({"threshold": "lots"}, "invalid_threshold"),
             ({"preset": "marrow"}, "invalid_preset"),
             ({"smooth": "-1"}, "invalid_smooth"),
             ({"decimate": "2"}, "invalid_decimate"),
             ({"largest": "maybe"}, "invalid_largest"),
             ({"threshold": "300", "preset": "bone"}, "invalid_option"),
             ({"colour": "red"}, "unknown_field")]
    for fields, code in cases:
        resp = _post_job(client, auth, series_files[:2], **fields)
        assert resp.status_code == 400, fields
        assert resp.mimetype == "application/problem+json"
        assert resp.json["code"] == code, (fields, resp.json)
        assert resp.json["status"] == 400 and resp.json["detail"]
    assert store_objects(settings) == []


def test_missing_bad_and_revoked_keys_are_401(client, records, series_files):
    resp = client.get("/api/v1/jobs/abc")
    assert resp.status_code == 401 and resp.json["code"] == "missing_key"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    for header in ("Bearer emk_nonsense", "Basic dXNlcjpwYXNz", "Bearer "):
        resp = client.get("/api/v1/jobs/abc", headers={"Authorization": header})
        assert resp.status_code == 401 and resp.json["code"] == "invalid_key", header
    key_id, key = records.create_key("soon revoked")
    auth = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/v1/jobs/abc", headers=auth).status_code == 404
    assert records.revoke_key(key[:12])
    resp = _post_job(client, auth, series_files)
    assert resp.status_code == 401 and resp.json["code"] == "invalid_key"


def test_another_keys_job_is_404(client, auth, records, series_files):
    job = _post_job(client, auth, series_files).json
    other = {"Authorization": f"Bearer {records.create_key('other')[1]}"}
    for method, url in (("get", job["links"]["self"]), ("get", job["links"]["result"]),
                        ("delete", job["links"]["self"])):
        resp = getattr(client, method)(url, headers=other)
        assert resp.status_code == 404, url
        assert resp.json["code"] == "not_found"
    assert client.get(job["links"]["self"], headers=auth).status_code == 200
    # nor can a browser session see it
    assert client.get(f"/jobs/{job['id']}").status_code == 404


def test_upload_must_be_multipart_with_files(client, auth):
    resp = client.post("/api/v1/jobs", data=b"{}", headers={**auth, "Content-Type": "application/json"})
    assert resp.status_code == 415 and resp.json["code"] == "unsupported_media_type"
    resp = client.post("/api/v1/jobs", data={"preset": "bone"}, headers=auth,
                       content_type="multipart/form-data")
    assert resp.status_code == 400 and resp.json["code"] == "no_files"
    resp = client.post("/api/v1/jobs", data={"file": (io.BytesIO(b"x"), "a")}, headers=auth,
                       content_type="multipart/form-data")
    assert resp.status_code == 400 and resp.json["code"] == "unknown_field"


def test_a_batch_makes_one_job_per_series_and_zips_the_results(client, auth, workers,
                                                               two_series_zip, settings):
    resp = client.post("/api/v1/batches", data={"files": (io.BytesIO(two_series_zip), "b.zip"),
                                                "preset": "bone"},
                       headers=auth, content_type="multipart/form-data")
    assert resp.status_code == 202, resp.json
    batch = resp.json
    assert batch["links"]["self"] == f"/api/v1/batches/{batch['id']}"

    def finished():
        view = client.get(batch["links"]["self"], headers=auth).json
        live = [j for j in view["jobs"] if j["status"] not in ("done", "failed")]
        # "ready" means every job has ended: never while one still converts
        assert view["status"] in (("splitting", "converting") if live else
                                  ("splitting", "ready")), view
        return view if view["status"] == "ready" else None

    view = wait_for(finished, 120, "the batch to finish")
    assert [j["status"] for j in view["jobs"]] == ["done", "done"]
    assert all(j["batch_id"] == batch["id"] for j in view["jobs"])
    # each job of the batch is the key's own job too
    assert client.get(view["jobs"][0]["links"]["self"], headers=auth).status_code == 200

    result = client.get(batch["links"]["result"], headers=auth)
    assert result.status_code == 200 and result.mimetype == "application/zip"
    assert result.headers["Cache-Control"] == "no-store"
    with zipfile.ZipFile(io.BytesIO(result.data)) as zf:
        names = zf.namelist()
        stls = [n for n in names if n.endswith(".stl")]
        assert len(stls) == 2 and "manifest.json" in names
        for name in stls:
            assert zf.read(name)[:8] == b"ephemesh"
        manifest = json.loads(zf.read("manifest.json"))
    # the manifest says which series each model is (safely: sizes, no UIDs)
    assert sorted(e["series"]["slices"] for e in manifest["jobs"]) == [16, 20]
    assert sorted(e["file"] for e in manifest["jobs"]) == sorted(stls)
    # numbered as in the upload: series 1 and 2 of it, not each job's own "1"
    assert sorted(e["series"]["index"] for e in manifest["jobs"]) == [1, 2]
    assert sorted(e["n"] for e in manifest["jobs"]) == [1, 2]
    for e in manifest["jobs"]:
        assert e["file"].startswith(f"series-{e['series']['index']:03d}-")

    other = {"Authorization": f"Bearer {client.application.extensions['ephemesh.service'].records.create_key('o')[1]}"}
    assert client.get(batch["links"]["self"], headers=other).status_code == 404
    assert client.get(batch["links"]["result"], headers=other).status_code == 404
    assert client.delete(batch["links"]["self"], headers=other).status_code == 404
    # delete now: the batch and every job's model
    assert client.delete(batch["links"]["self"], headers=auth).status_code == 204
    view = client.get(batch["links"]["self"], headers=auth).json
    assert view["status"] == "deleted"
    assert [j["status"] for j in view["jobs"]] == ["deleted", "deleted"]
    assert client.get(view["jobs"][0]["links"]["result"], headers=auth).status_code == 410
    assert client.get(batch["links"]["result"], headers=auth).status_code == 410
    assert store_objects(settings) == []


def test_usage_is_recorded_per_key_without_payload(client, auth, records, series_files):
    _post_job(client, auth, series_files)
    rows = records.usage_rows()
    assert rows and rows[-1]["endpoint"] == "/api/v1/jobs"
    assert rows[-1]["bytes_in"] > sum(map(len, series_files))


def test_a_batch_result_before_it_is_split_is_409(client, auth, two_series_zip):
    resp = client.post("/api/v1/batches", data={"files": (io.BytesIO(two_series_zip), "b.zip")},
                       headers=auth, content_type="multipart/form-data")
    assert resp.status_code == 202 and resp.json["status"] == "splitting"  # no worker yet
    result = client.get(resp.json["links"]["result"], headers=auth)
    assert result.status_code == 409 and result.json["code"] == "not_ready"
    resp = client.post("/api/v1/batches", data={"files": (io.BytesIO(two_series_zip), "b.zip"),
                                                "series": "1"},
                       headers=auth, content_type="multipart/form-data")
    assert resp.status_code == 400 and resp.json["code"] == "unknown_field"


def test_a_batch_whose_jobs_still_convert_is_converting_not_ready(client, auth, records,
                                                                  api_key):
    import time

    from worker.submit import owner_hash

    owner = owner_hash(f"key:{records.verify_key(api_key)['id']}")
    now = time.time()
    records.add_batch("b" * 22, owner, now, now + 600)
    records.set_batch("b" * 22, status="ready")  # split: its jobs exist
    records.add_job("j" * 22, owner, now, now + 600, batch_id="b" * 22, seq=1)
    records.add_job("k" * 22, owner, now, now + 600, batch_id="b" * 22, seq=2)
    records.set_job("k" * 22, status="done")
    view = client.get(f"/api/v1/batches/{'b' * 22}", headers=auth).json
    assert view["status"] == "converting"
    result = client.get(f"/api/v1/batches/{'b' * 22}/result", headers=auth)
    assert result.status_code == 409 and result.json["code"] == "not_ready"
    records.set_job("j" * 22, status="failed", error_code="timeout", error_message="late")
    assert client.get(f"/api/v1/batches/{'b' * 22}", headers=auth).json["status"] == "ready"


def test_a_model_gone_at_its_deadline_is_deleted_to_its_owner(tmp_path, redis_url, series_zip,
                                                              series_files):
    """The sweeper deletes a model at its deadline without touching the job's
    status: the API and the job page must then say "deleted", not "done"
    with a download that answers 410."""
    settings = make_settings(tmp_path, redis_url, retention=10, sweep=1)
    app = create_app({"TESTING": True, "EPHEMESH_SETTINGS": settings, "SECRET_KEY": "k"})
    with open(tmp_path / "runtime.log", "ab") as log:
        runtime = Runtime(settings).start(workers=1, cron=True, stderr=log)
    try:
        client = app.test_client()
        auth = {"Authorization": f"Bearer {app.extensions['ephemesh.service'].records.create_key('k')[1]}"}
        job = _post_job(client, auth, [series_zip]).json
        token = csrf_token(client)
        page_url = client.post("/jobs", data={"csrf_token": token, "files": [
            (io.BytesIO(f), "x") for f in series_files]},
            content_type="multipart/form-data").headers["Location"]
        assert _wait(client, auth, job["links"]["self"])["status"] == "done"
        wait_for(lambda: client.get(page_url + "/status").json["status"] == "done", 30, "the page")
        assert "Download the STL" in client.get(page_url).get_data(as_text=True)
        wait_for(lambda: not [p for p in store_objects(settings) if p.parent.name == "result"],
                 30, "the sweeper to delete the models")
        view = client.get(job["links"]["self"], headers=auth).json
        assert view["status"] == "deleted" and view["expires_at"] is None, view
        assert client.get(job["links"]["result"], headers=auth).status_code == 410
        page = client.get(page_url).get_data(as_text=True)
        assert "<h1>Deleted</h1>" in page and "Download the STL" not in page
        assert client.get(page_url + "/status").json["status"] == "deleted"
    finally:
        runtime.stop(grace=10)
        app.extensions["ephemesh.service"].close()


def test_a_waiting_request_answers_when_the_worker_announces_a_change(app, client, auth,
                                                                      series_files,
                                                                      monkeypatch):
    """``?wait=`` hears the worker's announcement (``worker.changes``) at
    once, not at its next look at the records (made 20 s apart here)."""
    import threading
    import time

    from web import waiting
    from worker import changes
    from worker.states import WAITING, JobStatus

    monkeypatch.setattr(waiting, "POLL_S", 20.0)
    job = client.post("/api/v1/jobs", data={"files": [(io.BytesIO(f), "x") for f in series_files]},
                      headers=auth, content_type="multipart/form-data").json  # no worker
    ctx = app.extensions["ephemesh.service"].ctx

    def worker_starts():
        time.sleep(0.5)
        ctx.records.set_job(job["id"], only_if=WAITING, status=JobStatus.RUNNING)
        changes.announce(ctx, job["id"])

    started = time.monotonic()
    threading.Thread(target=worker_starts).start()
    view = client.get(job["links"]["self"] + "?wait=10", headers=auth).json
    assert view["status"] == "running"
    assert time.monotonic() - started < 5  # the announcement, not the 10 s wait's end
