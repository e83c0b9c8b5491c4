"""A stopped service leaves no scan behind: ``ephemesh serve`` deletes every
upload and result it holds on SIGTERM (ledger reason ``shutdown``), unless
``--keep-on-stop``; and its default store is in memory where the machine
has a tmpfs big enough."""

from __future__ import annotations

import os
import re

import requests

from tests.helpers import wait_for
from tests.web.served import Served
from worker.config import MIN_SHM_FREE, Settings, default_store
from worker.records import Records
from worker.store import medium


def _files(root):
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_sigterm_deletes_every_upload_and_result_with_ledger_rows(tmp_path, series_zip,
                                                                 two_series_zip):
    store = tmp_path / "disk-store"  # on disk on purpose: what a stop must not leave there
    served = Served(tmp_path / "svc", workers=1, EPHEMESH_STORE=str(store)).start()
    settings = Settings.from_env({"EPHEMESH_DATA_DIR": str(tmp_path / "svc" / "data")})
    records = Records(settings.database_url)
    try:
        auth = {"Authorization": f"Bearer {records.create_key('stop')[1]}"}
        done = requests.post(served.url + "/api/v1/jobs", headers=auth,
                             files=[("files", ("s.zip", series_zip))]).json()
        wait_for(lambda: requests.get(served.url + done["links"]["self"], headers=auth)
                 .json()["status"] == "done", 60, "the first job")
        # a browser upload of two series waits for its owner to choose one
        browser = requests.Session()
        page = browser.get(served.url + "/").text
        token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
        resp = browser.post(served.url + "/jobs", data={"csrf_token": token},
                            files=[("files", ("t.zip", two_series_zip))], allow_redirects=False)
        waiting = resp.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
        wait_for(lambda: browser.get(served.url + resp.headers["Location"] + "/status")
                 .json()["status"] == "choosing", 60, "the upload to wait for a choice")
        assert {p.parent.parent.name for p in _files(store) if p.name == "meta.json"} == \
            {"input", "result"}
    finally:
        code = served.stop()
    assert code == 0, served.log()
    assert _files(store) == [], "the stop left payload files on disk"
    rows = {(r["kind"], r["object_id"]): r["reason"] for r in records.ledger()}
    assert rows[("input", waiting)] == "shutdown"
    assert rows[("result", done["id"])] == "shutdown"
    assert records.job(waiting)["status"] == "failed"
    assert records.job(waiting)["error_code"] == "shutdown"
    assert records.job(done["id"])["status"] == "deleted"
    assert "deleted on stop (ledger reason 'shutdown'): 1 input, 1 result" in served.log()
    records.close()


def test_keep_on_stop_leaves_them_for_the_sweeper(tmp_path, series_zip):
    store = tmp_path / "disk-store"
    served = Served(tmp_path / "svc", workers=1, EPHEMESH_STORE=str(store))
    served.args.append("--keep-on-stop")
    served.start()
    settings = Settings.from_env({"EPHEMESH_DATA_DIR": str(tmp_path / "svc" / "data")})
    records = Records(settings.database_url)
    try:
        auth = {"Authorization": f"Bearer {records.create_key('keep')[1]}"}
        job = requests.post(served.url + "/api/v1/jobs", headers=auth,
                            files=[("files", ("s.zip", series_zip))]).json()
        wait_for(lambda: requests.get(served.url + job["links"]["self"], headers=auth)
                 .json()["status"] == "done", 60, "the job")
    finally:
        assert served.stop() == 0
    assert [p.parent.parent.name for p in _files(store) if p.name == "meta.json"] == ["result"]
    assert [r["reason"] for r in records.ledger() if r["kind"] == "result"] == []
    records.close()


def test_the_default_store_is_in_memory_where_there_is_room(tmp_path):
    data = tmp_path / "data"
    chosen = default_store(data)
    room = os.statvfs("/dev/shm") if os.path.isdir("/dev/shm") else None
    if room and room.f_bavail * room.f_frsize >= MIN_SHM_FREE and medium("/dev/shm") == "memory":
        assert re.fullmatch(r"/dev/shm/ephemesh-[0-9a-f]{12}", chosen)
        assert default_store(tmp_path / "other") != chosen  # one per installation
    else:
        assert chosen == str(data / "store")
    assert Settings.from_env({"EPHEMESH_DATA_DIR": str(data)}).store == chosen
    assert default_store(data, shm=tmp_path / "missing") == str(data / "store")
    assert Settings.from_env({"EPHEMESH_DATA_DIR": str(data),
                              "EPHEMESH_STORE": str(tmp_path / "s")}).store == str(tmp_path / "s")
