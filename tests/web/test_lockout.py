"""Lockouts that cannot be turned against the owner: failed admin logins
lock an (account, address) pair and slow the account down only for the
addresses that failed on it; bad API keys never block an address's valid
keys."""

import json
import time

import pytest
import redis

from tests.helpers import csrf_token

OWNER = "correct horse battery"


@pytest.fixture
def login_app(make_app, records):
    app = make_app(EPHEMESH_LOGIN_MAX_FAILURES=5, EPHEMESH_LOCKOUT_SECONDS=300,
                   EPHEMESH_LOGIN_RATE_LIMIT="100/minute")
    records.add_admin("ops", OWNER)
    records.add_admin("bob", "another long password")
    return app


def attempt(app, name, password, address):
    client = app.test_client()
    env = {"REMOTE_ADDR": address}
    client.environ_base.update(env)
    token = csrf_token(client, "/admin/login")
    return client.post("/admin/login", data={"csrf_token": token, "name": name,
                                             "password": password})


def test_five_wrong_passwords_do_not_keep_the_owner_out(login_app, records, redis_url):
    assert [attempt(login_app, "ops", f"wrong-{i}", "10.0.0.1").status_code
            for i in range(5)] == [401] * 5
    # the owner, from an address with no failures, gets in at once
    started = time.monotonic()
    assert attempt(login_app, "ops", OWNER, "10.0.0.2").status_code == 303
    assert time.monotonic() - started < 2
    # the guessing address is locked out of that account, and only of that one
    locked = attempt(login_app, "ops", OWNER, "10.0.0.1")
    assert locked.status_code == 429 and 240 <= int(locked.headers["Retry-After"]) <= 300
    assert "from this address" in locked.get_data(as_text=True)
    assert attempt(login_app, "bob", "another long password", "10.0.0.1").status_code == 303
    # five more guesses once the lock expires would lock the owner out no more
    results = [json.loads(r["detail"])["result"] for r in records.audit_rows(event="admin-login")]
    assert results.count("failed") == 5 and results.count("locked") == 1
    assert results.count("ok") == 2
    # the keys hold pseudonyms: no address, no account name
    conn = redis.Redis.from_url(redis_url)
    try:
        keys = [k.decode() for k in conn.keys("ephemesh:lock:login*")]
    finally:
        conn.close()
    assert keys and not any("10.0.0" in k or "ops" in k for k in keys)


def test_the_account_is_slowed_down_for_addresses_that_failed(login_app):
    for i in range(5):
        attempt(login_app, "ops", f"wrong-{i}", "10.0.0.1")
    # a sixth failure, from a new address, is checked (that address had none)...
    assert attempt(login_app, "ops", "wrong-5", "10.0.0.3").status_code == 401
    # ...and now that address waits 2 s (2**(6-5)) before its next password is checked
    slowed = attempt(login_app, "ops", OWNER, "10.0.0.3")
    assert slowed.status_code == 429 and 1 <= int(slowed.headers["Retry-After"]) <= 2
    assert "try again in" in slowed.get_data(as_text=True)
    # an address with no failures is never made to wait
    assert attempt(login_app, "ops", OWNER, "10.0.0.4").status_code == 303
    time.sleep(2.1)
    assert attempt(login_app, "ops", OWNER, "10.0.0.3").status_code == 303


def test_the_wait_grows_and_is_bounded(login_app):
    from web.limits import LoginThrottle

    throttle = LoginThrottle(None, 5, 300)
    assert [throttle.wait(n) for n in (1, 4, 5, 6, 7, 10)] == [0, 0, 1, 2, 4, 32]
    assert throttle.wait(50) == LoginThrottle.MAX_WAIT_S
    with pytest.raises(ValueError):
        LoginThrottle(None, 0, 300)


def test_a_valid_key_still_works_from_an_address_that_sent_20_bad_ones(make_app, records,
                                                                        api_key):
    app = make_app(EPHEMESH_API_MAX_AUTH_FAILURES=20, EPHEMESH_KEY_RATE_LIMIT="1000/minute",
                   EPHEMESH_RATE_LIMIT="1000/minute")
    client = app.test_client()
    env = {"REMOTE_ADDR": "10.9.9.9"}
    for i in range(20):
        bad = client.get("/api/v1/jobs/x", environ_base=env,
                         headers={"Authorization": f"Bearer emk_guess{i:04d}xxxxxxxxxxxxxxxxxx"})
        assert bad.status_code == 401 and bad.json["code"] == "invalid_key"
    # the address is blocked for bad keys...
    blocked = client.get("/api/v1/jobs/x", environ_base=env,
                         headers={"Authorization": "Bearer emk_guess9999xxxxxxxxxxxxxxxxxx"})
    assert blocked.status_code == 429 and blocked.json["code"] == "too_many_failures"
    assert int(blocked.headers["Retry-After"]) > 0
    # ...but its valid key works (the job is not there: 404 from the API, not 429)
    good = client.get("/api/v1/jobs/x", environ_base=env,
                      headers={"Authorization": f"Bearer {api_key}"})
    assert good.status_code == 404 and good.json["code"] == "not_found"
    assert len(records.audit_rows(event="api-key-refused")) == 20
