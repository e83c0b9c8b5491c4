"""``ephemesh serve`` runs the whole service on one machine and stops all of
it on SIGTERM: web (waitress), workers, cron, a private Redis."""

import io
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import psutil
import pytest

from tests.helpers import raw_request, wait_for
from tests.web.served import Served
from worker.config import Settings


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
        view = wait_for(lambda: (v := json.loads(_request(served.url + job["links"]["self"],
                                                          headers=auth)[2]))["status"]
                        in ("done", "failed") and v, 90, "the job to end")
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


def _fds(pid) -> dict:
    """The server's open files: fd → target (sockets, pipes and devices left out)."""
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/") and (not target.startswith("/dev/")
                                       or target.startswith("/dev/shm/")):
            out[fd] = target
    return out


def test_upload_bytes_never_touch_the_system_temp_dir(tmp_path):
    """waitress buffers a body over 512 kB in a temporary file before Flask
    sees it: that file must be in the spool directory (next to the store,
    on a tmpfs in production), never in /tmp."""
    served = Served(tmp_path / "svc", workers=1).start()
    try:
        store = Settings.from_env({"EPHEMESH_DATA_DIR": str(tmp_path / "svc" / "data")}).store
        spool = store + "/.spool"
        before = _fds(served.proc.pid)
        sock = socket.create_connection(("127.0.0.1", served.port))
        sock.sendall(b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                     b"boundary=zz\r\nContent-Length: 8000000\r\n\r\n" + b"\x11" * 3_000_000)
        end = time.monotonic() + 15
        new = {}
        while time.monotonic() < end and not new:
            new = {fd: t for fd, t in _fds(served.proc.pid).items() if before.get(fd) != t}
            time.sleep(0.05)
        sock.close()
        assert new, "the body buffer was not found among the server's files"
        for target in new.values():
            assert target.startswith(spool + "/"), new
    finally:
        assert served.stop() == 0, served.log()


def test_refusals_made_by_waitress_are_the_apps(tmp_path):
    """Requests waitress refuses by itself (body over the cap, malformed,
    unknown transfer coding) get the app's problem+json or error page, with
    its headers; a body just over the cap is refused before it is read."""
    served = Served(tmp_path / "svc", workers=1, EPHEMESH_MAX_UPLOAD_MB=2).start()
    try:
        over = 2 * 1024 * 1024 + 1
        status, headers, body = raw_request(served.port, (
            "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer emk_x\r\n"
            "Content-Type: multipart/form-data; boundary=zz\r\n"
            f"Content-Length: {over}\r\nExpect: 100-continue\r\n\r\n").encode())
        assert status == 413
        assert headers["content-type"] == "application/problem+json"
        problem = json.loads(body)
        assert problem["code"] == "too_large" and problem["status"] == 413
        assert "larger than 2 MB" in problem["detail"]
        assert headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "set-cookie" not in headers
        # the browser's script asks for JSON: the page shows the detail
        status, headers, body = raw_request(served.port, (
            "POST /jobs HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n"
            f"Content-Type: multipart/form-data; boundary=zz\r\nContent-Length: {over}\r\n\r\n"
        ).encode())
        assert status == 413 and json.loads(body)["code"] == "too_large"
        # a plain form post gets the error page
        status, headers, body = raw_request(served.port, (
            "POST /jobs HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\n"
            f"Content-Type: multipart/form-data; boundary=zz\r\nContent-Length: {over}\r\n\r\n"
        ).encode())
        assert status == 413 and headers["content-type"].startswith("text/html")
        assert b"Error code: <code>too_large</code>" in body
        # a body of exactly the cap reaches the app (which refuses the bad key)
        status, headers, body = raw_request(served.port, (
            "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer emk_x\r\n"
            "Content-Type: multipart/form-data; boundary=zz\r\n"
            f"Content-Length: {over - 1}\r\n\r\n").encode() + b"z" * (over - 1))
        assert status == 401 and json.loads(body)["code"] == "invalid_key"
        status, headers, body = raw_request(served.port, (
            b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"))
        assert status == 501 and json.loads(body)["code"] == "not_implemented"
        status, headers, body = raw_request(served.port, b"NONSENSE\r\n\r\n")
        assert status == 400 and b"bad_request" in body
        assert headers["x-content-type-options"] == "nosniff"
    finally:
        assert served.stop() == 0, served.log()
    assert "Traceback" not in served.log()


@pytest.mark.parametrize("case", ["port in use", "database", "setting", "rate", "cookies",
                                  "data dir", "redis"])
def test_serve_refuses_in_one_line_before_starting_anything(tmp_path, case):
    served = Served(tmp_path / "svc")
    served.root.mkdir(parents=True, exist_ok=True)
    blocker = None
    expect = {"port in use": "cannot listen on 127.0.0.1:",
              "database": "cannot open the database postgresql+psycopg://nobody:***@",
              "setting": "EPHEMESH_MAX_UPLOAD_MB", "rate": "EPHEMESH_RATE_LIMIT",
              "cookies": "EPHEMESH_SECURE_COOKIES", "data dir": "cannot create",
              "redis": "cannot reach Redis"}[case]
    if case == "port in use":
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", served.port))
        blocker.listen(1)
    elif case == "database":
        served.env["EPHEMESH_DATABASE_URL"] = "postgresql+psycopg://nobody:secret@127.0.0.1:1/x"
    elif case == "setting":
        served.env["EPHEMESH_MAX_UPLOAD_MB"] = "0"
    elif case == "rate":
        served.env["EPHEMESH_RATE_LIMIT"] = "lots"
    elif case == "cookies":
        served.env["EPHEMESH_SECURE_COOKIES"] = "maybe"
    elif case == "data dir":
        (tmp_path / "file").write_text("")
        served.env["EPHEMESH_DATA_DIR"] = str(tmp_path / "file" / "data")
    elif case == "redis":
        served.env["EPHEMESH_REDIS_URL"] = "redis://127.0.0.1:1/0"
        served.args.append("--no-workers")
    try:
        started = time.monotonic()
        proc = subprocess.Popen(served.args, env=served.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=served.root)
        try:
            _, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # it is serving: stop it (and all it started) cleanly
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=60)
            raise AssertionError(f"serve started instead of refusing: {stderr}") from None
        took = time.monotonic() - started
    finally:
        if blocker is not None:
            blocker.close()
    assert proc.returncode != 0
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith("ephemesh: error: ") and expect in stderr, stderr
    assert "secret" not in stderr
    assert took < 15, took
    # nothing was started: no Redis socket, no worker ever logged
    assert not (tmp_path / "svc" / "data" / "redis.sock").exists()


@pytest.mark.parametrize("part", ["cron", "redis-server"])
def test_a_part_that_dies_stops_everything_with_one_line(tmp_path, part):
    """Without cron nothing is deleted on time, without Redis nothing works:
    serve must not go on answering as if all were well, but stop everything
    and exit non-zero (a service manager then starts it again)."""
    served = Served(tmp_path / "svc", workers=1).start()
    children = psutil.Process(served.proc.pid).children(recursive=True)
    victim = next(p for p in children if part in " ".join(p.cmdline()))
    os.kill(victim.pid, signal.SIGKILL)
    try:
        code = served.proc.wait(30)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        served.stop()
    assert code not in (None, 0), served.log()
    errors = [line for line in served.log().splitlines() if line.startswith("ephemesh: error:")]
    assert len(errors) == 1 and "exited" in errors[0], served.log()
    for child in children:
        assert not psutil.pid_exists(child.pid) or \
            psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE


def test_behind_a_proxy_each_client_is_itself(tmp_path):
    """Behind nginx (EPHEMESH_TRUSTED_PROXIES=1) the client is the address
    the proxy forwards, over the scheme it forwards: its own access-log row,
    its own rate limit, HSTS over HTTPS. Without a declared proxy the same
    headers are ignored."""
    import sqlite3

    served = Served(tmp_path / "svc", workers=1, EPHEMESH_TRUSTED_PROXIES=1,
                    EPHEMESH_RATE_LIMIT="3/minute").start()
    try:
        def get(addr):
            return _request(served.url + "/privacy", headers={
                "X-Forwarded-For": addr, "X-Forwarded-Proto": "https"})

        status, headers, _ = get("203.0.113.7")
        assert status == 200 and "max-age" in headers.get("Strict-Transport-Security", "")
        assert [get("203.0.113.7")[0] for _ in range(3)] == [200, 200, 429]
        assert get("198.51.100.9")[0] == 200  # another client, its own limit
    finally:
        assert served.stop() == 0, served.log()
    db = sqlite3.connect(tmp_path / "svc" / "data" / "ephemesh.db")
    addresses = [r[0] for r in db.execute("select ip from access_log")]
    db.close()
    assert addresses.count("203.0.113.7") == 4 and addresses.count("198.51.100.9") == 1


def test_without_a_proxy_forwarded_headers_are_ignored(tmp_path):
    import sqlite3

    served = Served(tmp_path / "svc", workers=1).start()
    try:
        status, headers, _ = _request(served.url + "/privacy", headers={
            "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"})
        assert status == 200 and "Strict-Transport-Security" not in headers
    finally:
        assert served.stop() == 0, served.log()
    db = sqlite3.connect(tmp_path / "svc" / "data" / "ephemesh.db")
    addresses = {r[0] for r in db.execute("select ip from access_log")}
    db.close()
    assert addresses == {"127.0.0.1"}


def test_every_listening_socket_answers_refusals_as_the_app(app):
    """A host name with several addresses gives waitress several sockets
    (a server per socket): each must render its refusals through the app."""
    import threading

    from web.server import listen, make_server

    sockets = listen("127.0.0.1", 0) + listen("127.0.0.1", 0)
    server = make_server(app, sockets, threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for sock in sockets:
            status, headers, body = raw_request(sock.getsockname()[1], (
                b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n"))
            assert status == 413 and json.loads(body)["code"] == "too_large"
    finally:
        server.close()
        thread.join(5)


def test_serve_warns_once_when_nobody_is_named_responsible(tmp_path):
    """Without EPHEMESH_CONTROLLER and EPHEMESH_CONTACT the privacy page cannot
    say who is responsible: one warning line at start, and none once they are set."""
    unnamed = Served(tmp_path / "a").start()
    assert unnamed.stop() == 0
    warnings = [line for line in unnamed.log().splitlines() if "ephemesh: warning:" in line]
    assert warnings == ["ephemesh: warning: EPHEMESH_CONTROLLER and EPHEMESH_CONTACT not set: "
                        "the privacy page cannot say who is responsible for the data or how to "
                        "reach them"]
    named = Served(tmp_path / "b", EPHEMESH_CONTROLLER="Ada Clinic, 1 Main Street",
                   EPHEMESH_CONTACT="privacy@ada.example").start()
    try:
        _, _, page = _request(named.url + "/privacy")
        assert b"Ada Clinic, 1 Main Street" in page and b"privacy@ada.example" in page
    finally:
        assert named.stop() == 0
    assert "ephemesh: warning:" not in named.log()
