"""Admin sessions live on the server: a copied admin cookie is refused once
the session ended (logout, a new password, the account removed); 1 h idle,
8 h at most; no name and no address in Redis."""

import json
import os
import subprocess
import sys

import pytest
import redis

from tests.helpers import ROOT, csrf_token
from web import sessions

PASSWORD = "correct horse battery"


def _login(app, name="ada", password=PASSWORD):
    client = app.test_client()
    token = csrf_token(client, "/admin/login")
    resp = client.post("/admin/login", data={"csrf_token": token, "name": name,
                                             "password": password})
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/admin/")
    return client


def _copy(app, client):
    """Another browser holding a copy of ``client``'s cookie."""
    thief = app.test_client()
    thief.set_cookie("ephemesh", client.get_cookie("ephemesh").value)
    return thief


def _in(client) -> bool:
    resp = client.get("/admin/")
    assert resp.status_code in (200, 303)
    return resp.status_code == 200


@pytest.fixture
def ada(records):
    records.add_admin("ada", PASSWORD)


def test_a_copied_cookie_is_refused_after_logout(app, ada):
    client = _login(app)
    thief = _copy(app, client)
    assert _in(thief) and _in(client)
    resp = client.post("/admin/logout", data={"csrf_token": csrf_token(client, "/admin/")})
    assert resp.status_code == 303
    assert not _in(thief) and not _in(client)
    # logging in again is a new session; the old copy stays dead
    again = _login(app)
    assert _in(again) and not _in(thief)


def test_a_copied_cookie_is_refused_after_a_password_change(app, ada, records):
    client = _login(app)
    thief = _copy(app, client)
    assert _in(thief)
    records.add_admin("ada", "a brand new password")  # what `ephemesh admin add ada` does
    assert not _in(thief) and not _in(client)
    assert _in(_login(app, password="a brand new password"))


def test_a_copied_cookie_is_refused_after_removal(app, ada, settings):
    client = _login(app)
    thief = _copy(app, client)
    assert _in(thief)
    env = dict(os.environ, **settings.as_env())
    cli = [sys.executable, "-m", "web.cli", "admin", "remove"]
    proc = subprocess.run([*cli, "ada"], env=env, capture_output=True, text=True, cwd=ROOT,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert not _in(thief) and not _in(client)
    # a name that is not an account: one line, exit 1, nothing changed
    again = subprocess.run([*cli, "nobody"], env=env, capture_output=True, text=True,
                           cwd=ROOT, timeout=60)
    assert again.returncode == 1 and again.stderr.count("\n") == 1
    assert again.stderr.startswith("ephemesh: error: there is no admin account 'nobody'")


def test_sessions_end_when_idle_and_after_eight_hours(app, ada, records, redis_url):
    conn = redis.Redis.from_url(redis_url)
    try:
        store = sessions.AdminSessions(conn, records)
        start = 1_000_000.0
        token = store.start("ada", now=start)
        key = sessions._key(token)
        assert 0 < conn.ttl(key) <= sessions.IDLE_S  # idle: gone an hour after the last use
        assert store.current(token, now=start + 3000) == "ada"
        assert 0 < conn.ttl(key) <= sessions.IDLE_S
        # near the absolute end the key lives only until then
        assert store.current(token, now=start + sessions.ABSOLUTE_S - 100) == "ada"
        assert 0 < conn.ttl(key) <= 100
        assert store.current(token, now=start + sessions.ABSOLUTE_S + 1) is None
        assert conn.exists(key) == 0
        assert store.current("not-a-token") is None and store.current(None) is None
        with pytest.raises(ValueError):
            store.start("nobody")
    finally:
        conn.close()
    assert sessions.IDLE_S == 3600 and sessions.ABSOLUTE_S == 8 * 3600


def test_no_name_and_no_address_in_redis(app, ada, redis_url):
    client = _login(app)
    conn = redis.Redis.from_url(redis_url)
    try:
        keys = [k.decode() for k in conn.keys(sessions.PREFIX + "*")]
        assert len(keys) == 1
        value = conn.get(keys[0]).decode()
        cookie = client.get_cookie("ephemesh").value
    finally:
        conn.close()
    # the key: a hash of the token (not the token, no name, no address)
    digest = keys[0][len(sessions.PREFIX):]
    assert len(digest) == 32 and set(digest) <= set("0123456789abcdef")
    assert digest not in cookie
    # the value: the account's number, the login's time, the password's fingerprint
    held = json.loads(value)
    assert set(held) == {"admin", "since", "password"} and isinstance(held["admin"], int)
    assert "127.0.0.1" not in value
