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
import time
import zipfile

import redis
import requests

from tests import dicomgen as G
from tests.web.served import Served


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


def _wait(get, timeout=90):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        view = get()
        if view["status"] in ("done", "failed", "choosing", "ready"):
            return view
        time.sleep(0.3)
    raise AssertionError("job did not finish")


def test_no_canary_reaches_any_sink(tmp_path):
    served = Served(tmp_path / "svc", workers=1).start()
    plants, headers_seen, bodies = [], [], []
    try:
        from worker.config import Settings
        from worker.records import Records
        settings = Settings.from_env({"EPHEMESH_DATA_DIR": str(tmp_path / "svc" / "data")})
        records = Records(settings.database_url)
        key = records.create_key("canary")[1]
        records.close()
        auth = {"Authorization": f"Bearer {key}"}
        base = served.url

        def keep(resp):
            headers_seen.append(dict(resp.headers))
            if resp.headers.get("Content-Type", "").startswith(("application/json",
                                                                 "application/problem", "text/")):
                bodies.append(resp.text)
            return resp

        # 1. the browser: a folder upload (file names are canaries), converted and fetched
        c = _canaries()
        plants.append(c)
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
        view = _wait(lambda: keep(browser.get(job_url + "/status")).json())
        assert view["status"] == "done"
        keep(browser.get(job_url))
        stl = keep(browser.get(job_url + "/model.stl")).content
        header = stl[:80]
        # query strings, paths and request headers holding canaries
        keep(browser.get(job_url + f"?name={c['patient_name']}",
                         headers={"User-Agent": c["patient_id"], "X-Forwarded-For": c["accession"],
                                  "Referer": f"http://x/{c['file_name']}"}))
        keep(browser.get(base + f"/{c['file_name']}/x"))

        # 1b. the browser, two series of one study: listed, one chosen, converted
        c = _canaries()
        plants.append(c)
        files = _series(tmp_path, c, 5) + _series(tmp_path, c, 5, "box", second=True)
        resp = keep(browser.post(base + "/jobs", data={"csrf_token": token},
                                 files=[("files", (f"{c['file_name']}-{i}.dcm", f))
                                        for i, f in enumerate(files)],
                                 allow_redirects=False))
        pick_url = base + resp.headers["Location"]
        assert _wait(lambda: keep(browser.get(pick_url + "/status")).json())["status"] == "choosing"
        listing = keep(browser.get(pick_url)).text
        assert "Several series were found" in listing
        keep(browser.post(pick_url + "/series", data={"csrf_token": token, "series": "2"}))
        assert _wait(lambda: keep(browser.get(pick_url + "/status")).json())["status"] == "done"
        keep(browser.get(pick_url))

        # 2. the API: a zip whose member names are canaries, converted; a batch
        c = _canaries()
        plants.append(c)
        resp = keep(requests.post(base + "/api/v1/jobs", headers=auth, data={"preset": "bone"},
                                  files=[("files", (f"{c['file_name']}.zip",
                                                    _zip(_series(tmp_path, c, 2), c["member_name"])))]))
        assert resp.status_code == 202
        job = resp.json()
        view = _wait(lambda: keep(requests.get(base + job["links"]["self"], headers=auth)).json())
        assert view["status"] == "done"
        header2 = keep(requests.get(base + job["links"]["result"], headers=auth)).content[:80]
        keep(requests.delete(base + job["links"]["self"], headers=auth))
        c = _canaries()
        plants.append(c)
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

        _wait(batch_done)
        archive = keep(requests.get(base + batch["links"]["result"], headers=auth)).content
        with zipfile.ZipFile(io.BytesIO(archive)) as zf:
            batch_text = "\n".join(zf.namelist()) + zf.read("manifest.json").decode()
            assert len([n for n in zf.namelist() if n.endswith(".stl")]) == 2

        # 3. uploads that fail in the worker, and ones refused at the door
        c = _canaries()
        plants.append(c)
        one = _series(tmp_path, c, 4)[:1]
        resp = keep(requests.post(base + "/api/v1/jobs", headers=auth,
                                  files=[("files", (c["file_name"], one[0]))]))
        view = _wait(lambda: keep(requests.get(base + resp.json()["links"]["self"],
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
        _wait(lambda: keep(requests.get(base + resp.json()["links"]["self"], headers=auth)).json())
        # a bad key that is itself a canary-like secret
        keep(requests.get(base + "/api/v1/jobs/x",
                          headers={"Authorization": f"Bearer emk_{c['patient_id']}"}))

        # --- sinks while running: Redis (keys and values), the store's names
        conn = redis.Redis(unix_socket_path=str(tmp_path / "svc" / "data" / "redis.sock"))
        redis_text = []
        for k in conn.scan_iter(count=1000):
            redis_text.append(k.decode(errors="replace"))
            dumped = conn.dump(k)
            if dumped:
                redis_text.append(dumped.decode("latin-1"))
        conn.close()
        store = [p.name for p in (tmp_path / "svc").rglob("*")]
    finally:
        code = served.stop()
    assert code == 0
    # every byte left under the service's directory (store, spool, Redis's
    # dir, the database, the log): an upload left behind would show here
    left = []
    for path in (tmp_path / "svc").rglob("*"):
        if path.is_file() and not path.is_socket():
            left.append(path.read_bytes().decode("latin-1"))

    # --- sinks after the run: logs, every table, the database file
    db_path = tmp_path / "svc" / "data" / "ephemesh.db"
    db = sqlite3.connect(db_path)
    tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
    table_text = {t: repr(db.execute(f'select * from "{t}"').fetchall()) for t in tables}
    db.close()
    assert "access_log" in tables and "audit_log" in tables
    assert "(unmatched)" in table_text["access_log"]  # the canary path was logged as a rule
    sinks = {
        "web and worker logs": served.log(),
        "database file": db_path.read_bytes().decode("latin-1"),
        **{f"table {t}": text for t, text in table_text.items()},
        "redis": "\n".join(redis_text),
        "response headers": json.dumps(headers_seen),
        "response bodies": "\n".join(bodies),
        "stl headers": (header + header2).decode("latin-1"),
        "batch zip names and manifest": batch_text,
        "files left in the service's directory": "\n".join(left),
        "store and data dir names": "\n".join(store),
    }
    planted = [v for c in plants for v in c.values()]
    hits = {sink: [v for v in planted if v in text or v.lower() in text.lower()]
            for sink, text in sinks.items()}
    hits = {k: v for k, v in hits.items() if v}
    assert len(planted) == 55
    assert hits == {}, hits
