"""The canary scan, extended to the web: DICOM values, UIDs, file names and
zip member names planted in uploads through the browser routes and the API
(some that convert, some that fail, some refused) never reach the web and
worker logs, the access log, the audit log or any other table, Redis, the
STL header, the store's names, or HTTP response headers."""

import io
import json
import re
import secrets
import sqlite3
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests import dicomgen as G
from tests.helpers import served_redis_text, wait_for
from tests.web.served import Served
from worker.config import Settings
from worker.records import Records


def _canaries():
    tag = secrets.token_hex(4).upper()
    digits = str(1 + secrets.randbelow(9)) + "".join(str(secrets.randbelow(10)) for _ in range(19))
    return {
        "patient_name": f"CANARYPN{tag}^JANE",
        "patient_id": f"CANARYID{tag}",
        "study_uid": f"2.25.{digits}1",
        "series_uid": f"2.25.{digits}2",
        "sop_uid_prefix": f"2.25.{digits}3",
        "series_description": f"CANARYSD{tag}",
        "private_value": f"CANARYPV{tag}",
        "accession": f"CANARYAN{tag}",
        "institution": f"CANARYIN{tag}",
        "file_name": f"CANARYFN{tag}",
        "member_name": f"CANARYMN{tag}",
    }


def _series(tmp_path, c, n, kind="sphere", second=False):
    folder = G.make_series_dir(
        tmp_path / f"s{n}{'b' if second else ''}", kind, size=(16, 24, 24),
        patient_name=c["patient_name"], patient_id=c["patient_id"], study_uid=c["study_uid"],
        series_uid=c["series_uid"] + ("9" if second else ""),
        sop_uid_prefix=c["sop_uid_prefix"] + ("9" if second else ""),
        series_description=c["series_description"], private_value=c["private_value"],
        series_number=2 if second else 1,
        extra={"AccessionNumber": c["accession"], "InstitutionName": c["institution"]})
    return [p.read_bytes() for p in sorted(folder.iterdir())]


def _zip(files, member):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, data in enumerate(files):
            zf.writestr(f"{member}/{member}-{i}.dcm", data)
    return buf.getvalue()


def _ended(get, timeout=90):
    """The job (or batch) view once it has ended, or waits for a choice."""
    return wait_for(lambda: (v := get())["status"] in ("done", "failed", "choosing", "ready")
                    and v, timeout, "the job to finish")


@dataclass
class Run:
    """One served instance that took every kind of upload, and what it left."""

    root: object
    base: str = ""
    auth: dict = field(default_factory=dict)
    plants: list = field(default_factory=list)
    headers_seen: list = field(default_factory=list)
    bodies: list = field(default_factory=list)
    stl_headers: bytes = b""
    batch_text: str = ""
    # after the run
    exit_code: int | None = None
    tables: list = field(default_factory=list)
    sinks: dict = field(default_factory=dict)
    planted: list = field(default_factory=list)

    def keep(self, resp):
        self.headers_seen.append(dict(resp.headers))
        if resp.headers.get("Content-Type", "").startswith(("application/json",
                                                             "application/problem", "text/")):
            self.bodies.append(resp.text)
        return resp

    def plant(self):
        c = _canaries()
        self.plants.append(c)
        return c


def _through_the_browser(run, tmp_path):
    """1. a folder upload (file names are canaries), converted and fetched;
    1b. two series of one study: listed, one chosen, converted."""
    keep, base = run.keep, run.base
    c = run.plant()
    files = _series(tmp_path, c, 1)
    browser = requests.Session()
    page = keep(browser.get(base + "/")).text
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    resp = keep(browser.post(base + "/jobs", data={"csrf_token": token, "preset": "bone"},
                             files=[("files", (f"{c['file_name']}-{i}.dcm", f))
                                    for i, f in enumerate(files)],
                             allow_redirects=False))
    assert resp.status_code == 303
    job_url = base + resp.headers["Location"]
    view = _ended(lambda: keep(browser.get(job_url + "/status")).json())
    assert view["status"] == "done"
    keep(browser.get(job_url))
    run.stl_headers += keep(browser.get(job_url + "/model.stl")).content[:80]
    # query strings, paths and request headers holding canaries
    keep(browser.get(job_url + f"?name={c['patient_name']}",
                     headers={"User-Agent": c["patient_id"], "X-Forwarded-For": c["accession"],
                              "Referer": f"http://x/{c['file_name']}"}))
    keep(browser.get(base + f"/{c['file_name']}/x"))

    c = run.plant()
    files = _series(tmp_path, c, 5) + _series(tmp_path, c, 5, "box", second=True)
    resp = keep(browser.post(base + "/jobs", data={"csrf_token": token},
                             files=[("files", (f"{c['file_name']}-{i}.dcm", f))
                                    for i, f in enumerate(files)],
                             allow_redirects=False))
    pick_url = base + resp.headers["Location"]
    assert _ended(lambda: keep(browser.get(pick_url + "/status")).json())["status"] == "choosing"
    listing = keep(browser.get(pick_url)).text
    assert "Several series were found" in listing
    keep(browser.post(pick_url + "/series", data={"csrf_token": token, "series": "2"}))
    assert _ended(lambda: keep(browser.get(pick_url + "/status")).json())["status"] == "done"
    keep(browser.get(pick_url))


def _through_the_api(run, tmp_path):
    """2. a zip whose member names are canaries, converted; a batch."""
    keep, base, auth = run.keep, run.base, run.auth
    c = run.plant()
    resp = keep(requests.post(base + "/api/v1/jobs", headers=auth, data={"preset": "bone"},
                              files=[("files", (f"{c['file_name']}.zip",
                                                _zip(_series(tmp_path, c, 2), c["member_name"])))]))
    assert resp.status_code == 202
    job = resp.json()
    view = _ended(lambda: keep(requests.get(base + job["links"]["self"], headers=auth)).json())
    assert view["status"] == "done"
    run.stl_headers += keep(requests.get(base + job["links"]["result"], headers=auth)).content[:80]
    keep(requests.delete(base + job["links"]["self"], headers=auth))
    c = run.plant()
    two = _series(tmp_path, c, 3) + _series(tmp_path, c, 3, "box", second=True)
    resp = keep(requests.post(base + "/api/v1/batches", headers=auth,
                              files=[("files", (f"{c['file_name']}.zip",
                                                _zip(two, c["member_name"])))]))
    assert resp.status_code == 202
    batch = resp.json()

    def batch_done():
        view = keep(requests.get(base + batch["links"]["self"], headers=auth)).json()
        ended = view["status"] == "ready" and len(view["jobs"]) == 2 and all(
            j["status"] in ("done", "failed") for j in view["jobs"])
        return dict(view, status="done" if ended else "splitting")

    _ended(batch_done)
    archive = keep(requests.get(base + batch["links"]["result"], headers=auth)).content
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        run.batch_text = "\n".join(zf.namelist()) + zf.read("manifest.json").decode()
        assert len([n for n in zf.namelist() if n.endswith(".stl")]) == 2


def _that_fail(run, tmp_path):
    """3. uploads that fail in the worker, and ones refused at the door."""
    keep, base, auth = run.keep, run.base, run.auth
    c = run.plant()
    one = _series(tmp_path, c, 4)[:1]
    resp = keep(requests.post(base + "/api/v1/jobs", headers=auth,
                              files=[("files", (c["file_name"], one[0]))]))
    view = _ended(lambda: keep(requests.get(base + resp.json()["links"]["self"],
                                            headers=auth)).json())
    assert view["status"] == "failed"
    for data in (b"not dicom " + c["patient_name"].encode(),
                 _zip([b"x"], c["member_name"]) * 1,
                 _zip([_zip(one, c["member_name"])], c["member_name"])):
        resp = keep(requests.post(base + "/api/v1/jobs", headers=auth,
                                  files=[("files", (c["file_name"], data))]))
        assert resp.status_code == 400
    resp = keep(requests.post(base + "/api/v1/jobs", headers=auth,
                              data={"series": c["series_uid"]},
                              files=[("files", (c["file_name"], _zip(one * 2, c["member_name"])))]))
    _ended(lambda: keep(requests.get(base + resp.json()["links"]["self"], headers=auth)).json())
    # a bad key that is itself a canary-like secret
    keep(requests.get(base + "/api/v1/jobs/x",
                      headers={"Authorization": f"Bearer emk_{c['patient_id']}"}))


def _through_the_workspace(run, tmp_path):
    """4. a scan workspace: its series picker shows the description to the
    uploader (only in that answer, kept out of the bodies scanned), its
    histogram, geometry, slices, estimate and a job from it, then "Done"."""
    keep, base, auth = run.keep, run.base, run.auth
    c = run.plant()
    resp = requests.post(base + "/api/v1/scans", headers=auth,
                         files=[("files", (f"{c['file_name']}.zip",
                                           _zip(_series(tmp_path, c, 6), c["member_name"])))])
    run.headers_seen.append(dict(resp.headers))
    assert resp.status_code == 201
    url = base + resp.json()["links"]["self"]
    scan = wait_for(lambda: (v := requests.get(url, headers=auth).json())["status"] != "reading"
                    and v, 90, "the scan to be read")
    assert scan["status"] == "ready"
    assert scan["series"][0]["description"] == c["series_description"]  # the uploader sees it
    links = {k: base + v for k, v in scan["series"][0]["links"].items()}
    for name in ("histogram", "volume"):
        assert keep(requests.get(links[name], headers=auth)).status_code == 200
    assert keep(requests.get(links["estimate"] + "?preset=bone", headers=auth)).ok
    for query in ("?plane=sagittal&threshold=300", "?format=values", ""):
        assert keep(requests.get(links["slice"] + query, headers=auth)).ok
    assert keep(requests.get(links["thumbnail"], headers=auth)).ok
    keep(requests.get(links["slice"] + f"?plane={c['patient_name']}", headers=auth))
    job = keep(requests.post(url + "/jobs", headers=auth, data={"preset": "bone"})).json()
    assert _ended(lambda: keep(requests.get(base + job["links"]["self"], headers=auth))
                  .json())["status"] == "done"
    run.stl_headers += keep(requests.get(base + job["links"]["result"], headers=auth)).content[:80]
    assert keep(requests.get(base + job["links"]["preview"], headers=auth)).ok
    keep(requests.get(url + "/jobs", headers=auth))
    keep(requests.get(base + "/api/v1/jobs", headers=auth))
    assert keep(requests.delete(url, headers=auth)).status_code == 204


@pytest.fixture(scope="module")
def canary_run(tmp_path_factory):
    """The served instance's run, then every sink's text (``sinks``)."""
    tmp_path = tmp_path_factory.mktemp("canary")
    run = Run(root=tmp_path / "svc")
    # JSON logs here (the worker side's canary covers both formats)
    served = Served(run.root, workers=1, EPHEMESH_LOG_FORMAT="json").start()
    try:
        records = Records(Settings.from_env({"EPHEMESH_DATA_DIR": str(run.root / "data")})
                          .database_url)
        run.auth = {"Authorization": f"Bearer {records.create_key('canary')[1]}"}
        records.close()
        run.base = served.url
        _through_the_browser(run, tmp_path)
        _through_the_api(run, tmp_path)
        _that_fail(run, tmp_path)
        _through_the_workspace(run, tmp_path)
        # --- sinks while running: Redis (keys and values), the store's names
        redis_text = served_redis_text(run.root)
        store_dir = Path(Settings.from_env({"EPHEMESH_DATA_DIR": str(run.root / "data")}).store)
        store = [p.name for p in [*run.root.rglob("*"), *store_dir.rglob("*")]]
    finally:
        run.exit_code = served.stop()
    # every byte left under the service's directory (store, spool, Redis's
    # dir, the database, the log): an upload left behind would show here
    left = [path.read_bytes().decode("latin-1")
            for path in [*run.root.rglob("*"), *store_dir.rglob("*")]
            if path.is_file() and not path.is_socket()]
    # --- sinks after the run: logs, every table, the database file
    db_path = run.root / "data" / "ephemesh.db"
    db = sqlite3.connect(db_path)
    run.tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
    table_text = {t: repr(db.execute(f'select * from "{t}"').fetchall()) for t in run.tables}
    db.close()
    run.sinks = {
        "web and worker logs": served.log(),
        "database file": db_path.read_bytes().decode("latin-1"),
        **{f"table {t}": text for t, text in table_text.items()},
        "redis": redis_text,
        "response headers": json.dumps(run.headers_seen),
        "response bodies": "\n".join(run.bodies),
        "stl headers": run.stl_headers.decode("latin-1"),
        "batch zip names and manifest": run.batch_text,
        "files left in the service's directory": "\n".join(left),
        "store and data dir names": "\n".join(store),
    }
    run.planted = [v for c in run.plants for v in c.values()]
    return run


def _hits(run, text):
    return [v for v in run.planted if v in text or v.lower() in text.lower()]


#: every sink the scan reads but the tables (one test each; the tables: the test after)
SINKS = ("web and worker logs", "database file", "redis", "response headers", "response bodies",
         "stl headers", "batch zip names and manifest", "files left in the service's directory",
         "store and data dir names")


def test_the_logs_were_json_with_request_and_job_ids(canary_run):
    lines = [json.loads(line) for line in canary_run.sinks["web and worker logs"].splitlines()
             if line.startswith("{")]
    requests_logged = [e for e in lines if e["event"] == "request"]
    assert len(requests_logged) > 50
    assert all(len(e["request_id"]) == 16 and e["duration_s"] >= 0 and e["route"]
               for e in requests_logged)
    assert any(e["event"] == "conversion done" and e.get("job_id") for e in lines)
    seen = {rid for h in canary_run.headers_seen if (rid := h.get("X-Request-Id"))}
    assert seen and seen <= {e["request_id"] for e in requests_logged}


def test_the_run_planted_every_canary_and_stopped_cleanly(canary_run):
    assert canary_run.exit_code == 0
    assert len(canary_run.planted) == 66
    assert "access_log" in canary_run.tables and "audit_log" in canary_run.tables
    assert "(unmatched)" in canary_run.sinks["table access_log"]  # the canary path, as a rule
    tables = {f"table {t}" for t in canary_run.tables}
    assert set(canary_run.sinks) == set(SINKS) | tables  # every sink is scanned below


@pytest.mark.parametrize("sink", SINKS)
def test_no_canary_reaches(canary_run, sink):
    assert _hits(canary_run, canary_run.sinks[sink]) == []


def test_no_canary_reaches_any_table(canary_run):
    hits = {t: _hits(canary_run, canary_run.sinks[f"table {t}"]) for t in canary_run.tables}
    assert {t: h for t, h in hits.items() if h} == {}
