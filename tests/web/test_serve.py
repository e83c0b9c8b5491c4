"""``ephemesh serve`` runs the whole service on one machine and stops all of
it on SIGTERM: web (waitress), workers, cron, a private Redis."""

import io
import json
import time
import urllib.error
import urllib.request
import uuid

import psutil

from tests.web.served import Served


def _request(url, data=None, headers=None, method=None):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _multipart(files):
    boundary = uuid.uuid4().hex
    body = io.BytesIO()
    for i, data in enumerate(files):
        body.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
                   f"filename=\"f{i}\"\r\nContent-Type: application/octet-stream\r\n\r\n".encode())
        body.write(data + b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return body.getvalue(), f"multipart/form-data; boundary={boundary}"


def test_ctrl_c_stops_everything(tmp_path):
    import signal

    served = Served(tmp_path, workers=1).start()
    pids = [p.pid for p in psutil.Process(served.proc.pid).children(recursive=True)]
    served.proc.send_signal(signal.SIGINT)
    assert served.proc.wait(60) == 0, served.log()
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert "stopping" in served.log() and "Traceback" not in served.log()


def test_serve_runs_everything_and_stops_on_sigterm(tmp_path, series_zip):
    served = Served(tmp_path, workers=1).start()
    try:
        assert (tmp_path / "data" / "redis.sock").exists()  # the private Redis
        children = psutil.Process(served.proc.pid).children(recursive=True)
        assert len(children) >= 3  # redis-server, worker pool (+ worker), cron
        status, headers, body = _request(served.url + "/")
        assert status == 200 and headers["Server"] == "ephemesh"
        assert "no-referrer" == headers["Referrer-Policy"]

        from worker.config import Settings
        from worker.records import Records
        records = Records(Settings.from_env({"EPHEMESH_DATA_DIR": str(tmp_path / "data")}
                                            ).database_url)
        key = records.create_key("serve test")[1]
        records.close()
        auth = {"Authorization": f"Bearer {key}"}
        body, ctype = _multipart([series_zip])
        status, headers, raw = _request(served.url + "/api/v1/jobs", body,
                                        {**auth, "Content-Type": ctype}, "POST")
        assert status == 202, raw
        job = json.loads(raw)
        end = time.monotonic() + 90
        while time.monotonic() < end:
            view = json.loads(_request(served.url + job["links"]["self"], headers=auth)[2])
            if view["status"] in ("done", "failed"):
                break
            time.sleep(0.3)
        assert view["status"] == "done", view
        status, headers, stl = _request(served.url + job["links"]["result"], headers=auth)
        assert status == 200 and stl[:8] == b"ephemesh"
        # oversized bodies are refused by the app, not by a reset connection
        status, _, raw = _request(served.url + "/api/v1/jobs", b"x" * 100,
                                  {**auth, "Content-Type": "multipart/form-data; boundary=zz",
                                   "Content-Length": str(1 << 34)}, "POST")
        assert status in (413, 400)
    finally:
        pids = [p.pid for p in psutil.Process(served.proc.pid).children(recursive=True)] \
            if served.proc.poll() is None else []
        code = served.stop()
    assert code == 0, served.log()
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert "Traceback" not in served.log()
    assert not (tmp_path / "data" / "redis.sock").exists()


def test_serve_refuses_a_bad_setting_in_one_line(tmp_path):
    served = Served(tmp_path, EPHEMESH_RETENTION_SECONDS="7200")
    served.root.mkdir(parents=True, exist_ok=True)
    import subprocess
    proc = subprocess.run(served.args, env=served.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "EPHEMESH_RETENTION_SECONDS" in proc.stderr
