"""Data-subject requests on SQLite and PostgreSQL: real requests from two
addresses leave access-log rows, audit rows with pseudonyms, rate-limit
counters and locks; ``ephemesh subject export`` finds the rows of one address
and no others (last month's pseudonyms too, while that month's key exists),
``erase`` (the command, and the admin page) removes exactly those, the audit
chain still verifies, and the erasure's own audit row holds no address."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
from sqlalchemy import select

from converter.exits import Exit
from tests.helpers import csrf_token, make_settings
from web import create_app
from web.cli import run as ephemesh
from web.security import PSEUDONYM_KEY, forget_salts
from worker.records import access_log, audit_log

SUBJECT, OTHER = "203.0.113.7", "198.51.100.9"
LAST_MONTH = time.strftime("%Y-%m", time.gmtime(time.time() - 32 * 86400))


def _pseudonym(salt, month, value):
    """The documented pseudonym, computed here on its own (the test's oracle)."""
    return hmac.new(f"{salt}|{month}".encode(), value.encode(), hashlib.sha256).hexdigest()[:16]


@pytest.fixture(params=["sqlite", "postgres"])
def served(request, tmp_path, redis_url, monkeypatch):
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    settings = make_settings(tmp_path, redis_url, database_url=url)
    forget_salts()
    app = create_app({"TESTING": True, "EPHEMESH_SETTINGS": settings, "SECRET_KEY": "subjects"})
    for name, value in settings.as_env().items():
        monkeypatch.setenv(name, value)
    yield app
    app.extensions["ephemesh.service"].close()


def _client(app, address):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def _traffic(app, address):
    """What a visitor from ``address`` leaves: page views, refused API keys,
    failed admin logins (audit rows, locks, rate-limit counters)."""
    client = _client(app, address)
    for path in ("/", "/privacy", "/"):
        assert client.get(path).status_code == 200
    for _ in range(2):
        assert client.get("/api/v1/jobs/x", headers={"Authorization": "Bearer emk_nope"}) \
            .status_code == 401
    token = csrf_token(client, "/admin/login")
    for _ in range(2):
        client.post("/admin/login", data={"csrf_token": token, "name": "ada", "password": "bad"})


def _state(app):
    svc = app.extensions["ephemesh.service"]
    with svc.records.engine.connect() as c:
        access = [dict(r) for r in c.execute(select(access_log)).mappings()]
        audit = [dict(r) for r in c.execute(select(audit_log)).mappings()]
    keys = sorted(k.decode() for k in svc.redis.scan_iter(count=1000))
    return access, audit, keys


@pytest.fixture
def visited(served):
    svc = served.extensions["ephemesh.service"]
    svc.records.add_admin("ada", "correct horse battery")
    _traffic(served, SUBJECT)
    _traffic(served, OTHER)
    redis = svc.redis
    month = time.strftime("%Y-%m", time.gmtime())
    salt = redis.get(PSEUDONYM_KEY + month).decode()
    redis.set(PSEUDONYM_KEY + LAST_MONTH, "ab" * 32, ex=3600)
    mine = {_pseudonym(salt, month, SUBJECT), _pseudonym(salt, month, f"address:{SUBJECT}"),
            _pseudonym("ab" * 32, LAST_MONTH, SUBJECT)}
    theirs = {_pseudonym(salt, month, OTHER), _pseudonym(salt, month, f"address:{OTHER}")}
    # last month's row of the subject (its key still exists) and an unlinkable one
    svc.records.audit("api-key-refused", "unknown",
                      {"address": _pseudonym("ab" * 32, LAST_MONTH, SUBJECT)})
    svc.records.audit("api-key-refused", "unknown",
                      {"address": _pseudonym("cd" * 32, "2020-01", SUBJECT)})
    return mine, theirs


def _about(row, pseudonyms):
    return any(p in (row["detail"] or "") for p in pseudonyms)


def test_export_finds_the_rows_of_that_address_and_no_others(served, visited, capsys):
    mine, theirs = visited
    access, audit, keys = _state(served)
    assert ephemesh(["subject", "export", "--address", SUBJECT]) == Exit.DONE
    found = json.loads(capsys.readouterr().out)
    assert found["address"] == SUBJECT
    expected = {r["id"] for r in access if r["ip"] == SUBJECT}
    assert len(expected) >= 7 and {r["id"] for r in access} - expected  # the other's are there
    assert {r["id"] for r in found["access_log"]} == expected
    assert {r["id"] for r in found["audit_log"]} == {r["id"] for r in audit if _about(r, mine)}
    assert len(found["audit_log"]) == 5  # 2 refused keys, 2 failed logins, last month's row
    assert not any(_about(r, theirs) for r in found["audit_log"])
    names = [k["key"] for k in found["redis_keys"]]
    assert names and all(any(p in k for p in mine) for k in names)
    assert any(k.startswith("ephemesh:lock:login:") for k in names)
    assert any(k.startswith("ephemesh:lock:api-auth:") for k in names)
    assert any("ephemesh:limit" in k for k in names)
    assert set(names) == {k for k in keys if any(p in k for p in mine)}
    assert {p["month"] for p in found["pseudonyms"]} == {LAST_MONTH, time.strftime("%Y-%m")}


def test_erase_removes_exactly_those_and_the_chain_still_verifies(served, visited, capsys):
    mine, theirs = visited
    access, audit, keys = _state(served)
    assert ephemesh(["subject", "erase", "--address", SUBJECT]) == Exit.DONE
    out = capsys.readouterr().out
    after_access, after_audit, after_keys = _state(served)
    assert not any(r["ip"] == SUBJECT for r in after_access)
    assert [r for r in after_access if r["ip"] == OTHER] == [r for r in access if r["ip"] == OTHER]
    erased = {r["id"] for r in after_audit if r["erased"]}
    assert erased == {r["id"] for r in audit if _about(r, mine)}
    assert f"{len(erased)} audit rows redacted" in out
    untouched = {r["id"]: r for r in audit if r["id"] not in erased}
    assert all(untouched[r["id"]] == r for r in after_audit if r["id"] in untouched)
    assert any(_about(r, theirs) for r in after_audit)
    assert not any(any(p in k for p in mine) for k in after_keys)
    assert {k for k in keys if any(p in k for p in theirs)} <= set(after_keys)
    record = after_audit[-1]
    assert record["event"] == "subject-erased" and record["actor"] == "cli"
    assert SUBJECT not in record["detail"] and not _about(record, mine)
    assert json.loads(record["detail"])["audit_rows"] == len(erased)
    check = served.extensions["ephemesh.service"].records.verify_audit()
    assert check.intact and check.erased == len(erased)
    assert ephemesh(["audit", "verify"]) == Exit.DONE
    assert f"{len(erased)} erased on request" in capsys.readouterr().out
    # asked again: nothing is left about that address
    assert ephemesh(["subject", "export", "--address", SUBJECT]) == Exit.DONE
    again = json.loads(capsys.readouterr().out)
    assert again["access_log"] == [] and again["audit_log"] == [] and again["redis_keys"] == []


def test_the_admin_page_exports_and_erases(served, visited):
    mine, _ = visited
    admin = _client(served, "192.0.2.1")
    token = csrf_token(admin, "/admin/login")
    assert admin.post("/admin/login", data={"csrf_token": token, "name": "ada",
                                            "password": "correct horse battery"}).status_code == 303
    page = admin.get("/admin/subjects")
    assert page.status_code == 200 and b"Data-subject requests" in page.data
    token = csrf_token(admin, "/admin/subjects")
    got = admin.post("/admin/subjects/export", data={"csrf_token": token, "address": SUBJECT})
    assert got.status_code == 200 and got.mimetype == "application/json"
    assert len(got.json["audit_log"]) == 5 and got.json["access_log"]
    bad = admin.post("/admin/subjects/export", data={"csrf_token": token, "address": "nobody"})
    assert bad.status_code == 400 and b"is not an IP address" in bad.data
    unconfirmed = admin.post("/admin/subjects/erase", data={"csrf_token": token,
                                                           "address": SUBJECT})
    assert unconfirmed.status_code == 400
    done = admin.post("/admin/subjects/erase", data={"csrf_token": token, "address": SUBJECT,
                                                     "confirm": "yes"})
    assert done.status_code == 200 and b'id="erased"' in done.data
    access, audit, _ = _state(served)
    assert not any(r["ip"] == SUBJECT for r in access)
    assert not any(_about(r, mine) for r in audit if not r["erased"])
    assert [r["actor"] for r in audit if r["event"] == "subject-erased"] == ["admin:ada"]


@pytest.mark.parametrize("text", ["nobody", "203.0.113", "::g", "", "1.2.3.4\nrm"])
def test_an_address_that_is_not_an_ip_address_is_one_line_exit_2(text, capsys):
    assert ephemesh(["subject", "export", "--address", text]) == Exit.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ephemesh: error: ")
    assert "is not an IP address" in err


def test_every_spelling_of_an_ipv6_address_is_one_subject(served, capsys):
    client = _client(served, "2001:db8::7")
    client.get("/")
    assert ephemesh(["subject", "export", "--address", "2001:0db8:0000::0007"]) == Exit.DONE
    found = json.loads(capsys.readouterr().out)
    assert found["address"] == "2001:db8::7" and len(found["access_log"]) == 1
