"""The web layer on PostgreSQL (the many-hosts set-up), not only SQLite:
every record the web writes or reads — jobs through a real worker, access
log, usage, audit, keys, admins, the purge report — through the app."""

import csv
import io
import json
import re

import pytest

from tests.helpers import csrf_token, make_settings, wait_for
from web import create_app
from worker.runtime import Runtime


@pytest.fixture
def pg_app(tmp_path, redis_url, postgres_url):
    settings = make_settings(tmp_path, redis_url, retention=900, database_url=postgres_url)
    app = create_app({"TESTING": True, "EPHEMESH_SETTINGS": settings, "SECRET_KEY": "pg"})
    yield app, settings
    app.extensions["ephemesh.service"].close()


def test_the_web_on_postgresql(pg_app, tmp_path, series_zip, series_files):
    app, settings = pg_app
    records = app.extensions["ephemesh.service"].records
    assert records.engine.dialect.name == "postgresql"
    with open(tmp_path / "runtime.log", "ab") as log:
        runtime = Runtime(settings).start(workers=1, cron=False, stderr=log)
    try:
        # an administrator makes a key in the admin pages
        records.add_admin("ada", "correct horse battery")
        admin = app.test_client()
        token = csrf_token(admin, "/admin/login")
        for password in ("wrong", "correct horse battery"):
            resp = admin.post("/admin/login", data={"csrf_token": token, "name": "ada",
                                                    "password": password})
        assert resp.status_code == 303
        token = csrf_token(admin, "/admin/keys")  # a login starts a new session
        page = admin.post("/admin/keys", data={"csrf_token": token, "name": "é" * 80})
        assert page.status_code == 200
        key = re.search(r'id="new-key" class="key" readonly value="([^"]+)"',
                        page.get_data(as_text=True)).group(1)
        auth = {"Authorization": f"Bearer {key}"}

        # the API: converted by a worker writing to PostgreSQL, fetched, deleted
        api = app.test_client()
        job = api.post("/api/v1/jobs", data={"files": (io.BytesIO(series_zip), "s.zip")},
                       headers=auth, content_type="multipart/form-data").json
        view = wait_for(lambda: (lambda j: j if j["status"] in ("done", "failed") else None)(
            api.get(job["links"]["self"], headers=auth).json), 60, "the job")
        assert view["status"] == "done" and view["report"]["triangles"] > 100
        assert api.get(job["links"]["result"], headers=auth).data[:8] == b"ephemesh"
        assert api.delete(job["links"]["self"], headers=auth).status_code == 204
        assert api.get(job["links"]["result"], headers=auth).status_code == 410
        # a browser job, failed by the worker
        browser = app.test_client()
        token_b = csrf_token(browser)
        url = browser.post("/jobs", data={"csrf_token": token_b, "files": [
            (io.BytesIO(series_files[0]), "x")]}, content_type="multipart/form-data"
        ).headers["Location"]
        wait_for(lambda: browser.get(url + "/status").json["status"] == "failed", 60, "failure")
        assert "single_slice" in browser.get(url).get_data(as_text=True)

        # what the admin sees matches what was recorded
        rows = json.loads(admin.get("/admin/purges.json").data)["rows"]
        ledger = records.ledger()
        assert sum(r["count"] for r in rows) == sum(r["count"] for r in ledger)
        assert {(r["kind"], r["reason"]) for r in rows} >= {("input", "converted"),
                                                          ("result", "user-request"),
                                                          ("input", "failed")}
        table = list(csv.DictReader(io.StringIO(admin.get("/admin/purges.csv")
                                                .get_data(as_text=True))))
        assert len(table) == len(rows)
        html = admin.get("/admin/audit").get_data(as_text=True)
        assert "admin-login" in html and "key-created" in html and "upload" in html
        assert admin.get("/admin/").status_code == 200
        assert "é" * 80 in admin.get("/admin/keys").get_data(as_text=True)
        assert records.usage_rows() and records.oldest_access() is not None
        prefix = key[:12]
        assert admin.post("/admin/keys/revoke", data={"csrf_token": token, "prefix": prefix}
                          ).status_code == 303
        assert api.get(job["links"]["self"], headers=auth).status_code == 401
    finally:
        runtime.stop(grace=10)
