"""The gate's smaller rules: the access log's method is one of a fixed set
(named on the privacy page); waitress's own refusals on /api are
problem+json whatever waitress made of the request; the data directory is
0700 and the SQLite records database 0600, narrowed at start."""

import json
import logging
import os
import stat
import threading

import pytest

from tests.helpers import make_settings, raw_request
from web import server as web_server
from worker.private import private_dir
from worker.records import ACCESS_METHODS, Records


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_access_log_keeps_a_method_from_a_fixed_set(client, records):
    env = {"REMOTE_ADDR": "198.51.100.21"}
    for method in ("GET", "BREW", "X" * 300, "patch"):
        client.open("/privacy", method=method, environ_base=env)
    methods = [r["method"] for r in records.access_rows_of(["198.51.100.21"])]
    assert sorted(methods) == ["GET", "OTHER", "OTHER", "PATCH"]  # Werkzeug upper-cases it
    assert set(ACCESS_METHODS) == {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"}
    page = client.get("/privacy").get_data(as_text=True)
    assert "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, OTHER" in page


@pytest.fixture
def waitress(app):
    """The app behind waitress (as ``serve`` sets it up) in this process."""
    sockets = web_server.listen("127.0.0.1", 0)
    server = web_server.make_server(app, sockets, threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield sockets[0].getsockname()[1]
    server.close()
    thread.join(10)


@pytest.mark.parametrize("case", ["headers too large", "malformed header", "bad length"])
def test_waitress_refusals_on_the_api_are_problem_json(waitress, case):
    request = {
        # waitress parses these as "GET /" before refusing them
        # (just over waitress's 256 KiB: nothing left unread, so no reset)
        "headers too large": b"GET /api/v1/jobs HTTP/1.1\r\nHost: x\r\nX-Big: "
                             + b"a" * 262_144,
        "malformed header": b"POST /api/v1/jobs?x=1 HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        "bad length": b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    }[case]
    status, headers, body = raw_request(waitress, request)
    expect = {"headers too large": (431, "headers_too_large")}.get(case, (400, "bad_request"))
    assert (status, headers["content-type"]) == (expect[0], "application/problem+json"), body
    problem = json.loads(body)
    assert (problem["status"], problem["code"]) == expect
    assert headers["x-content-type-options"] == "nosniff"
    # the same refusal of a page is the error page
    status, headers, body = raw_request(waitress, request.replace(b"/api/v1/jobs", b"/jobs"))
    assert status == expect[0] and headers["content-type"].startswith("text/html")


def test_requested_path_reads_the_request_line_as_sent():
    assert web_server.requested_path(b"GET /api/v1/jobs?x=1 HTTP/1.1\r\nHost") == "/api/v1/jobs"
    assert web_server.requested_path(b"POST /api/v1/jo") == "/api/v1/jo"
    assert web_server.requested_path(b"NONSENSE\r\n") is None
    assert web_server.requested_path(b"GET http://evil/x HTTP/1.1") == "/x"
    assert web_server.requested_path(b"") is None


def test_the_data_directory_is_0700_and_the_database_0600(tmp_path, redis_url):
    old = os.umask(0)  # even with a careless umask
    try:
        settings = make_settings(tmp_path / "fresh", redis_url)
        private_dir(settings.data_dir)
        Records(settings.database_url).close()
    finally:
        os.umask(old)
    assert _mode(settings.data_dir) == 0o700
    assert _mode(settings.data_dir / "ephemesh.db") == 0o600


def test_open_ones_are_narrowed_at_start_with_a_warning(tmp_path, redis_url, caplog):
    settings = make_settings(tmp_path / "old", redis_url)
    settings.data_dir.mkdir(parents=True)
    Records(settings.database_url).close()
    db = settings.data_dir / "ephemesh.db"
    os.chmod(settings.data_dir, 0o755)
    os.chmod(db, 0o644)
    with caplog.at_level(logging.WARNING, logger="ephemesh.private"):
        private_dir(settings.data_dir)  # what serve, worker and the app do first
        Records(settings.database_url).close()
    assert _mode(settings.data_dir) == 0o700 and _mode(db) == 0o600
    warned = [r.getMessage() for r in caplog.records]
    assert any(str(db) in w and "0644" in w and "0600" in w for w in warned), warned
    assert any(str(settings.data_dir) in w and "0755" in w for w in warned), warned
