"""Admin pages: login, purge reports (table, chart, CSV, JSON), retention
status, API keys, audit log; ``ephemesh admin add``."""

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import csrf_token
from web import purge_chart
from worker.records import Records

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def admin(client, records):
    records.add_admin("ada", "correct horse battery")
    token = csrf_token(client, "/admin/login")
    resp = client.post("/admin/login", data={"csrf_token": token, "name": "ada",
                                             "password": "correct horse battery"})
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/admin/")
    return client


def _ledger(records):
    now = time.time()
    day = 86400
    records.record_deletion("input", "job-a-000001", 1000, now - 2 * day - 30,
                            now - 2 * day + 3570, "converted", now=now - 2 * day)
    records.record_deletion("result", "job-a-000001", 5000, now - 2 * day - 30,
                            now - 2 * day + 3570, "expired", now=now - 2 * day + 3565)
    # late: deleted 50 minutes after its deadline
    records.record_deletion("result", "job-b-000002", 7000, now - day - 7000,
                            now - day - 3400, "expired", now=now - day)
    records.record_deletion("access-log", "2024-01-01", 0, now - 31 * day, now - day + 60,
                            "expired", count=42, now=now - day)


def test_admin_pages_need_a_login(client):
    for path in ("/admin/", "/admin/keys", "/admin/audit", "/admin/purges.csv",
                 "/admin/purges.json", "/admin/retention.json"):
        resp = client.get(path)
        assert resp.status_code == 303 and resp.headers["Location"].endswith("/admin/login"), path


def test_purge_report_table_chart_and_downloads(admin, records):
    _ledger(records)
    html = admin.get("/admin/").get_data(as_text=True)
    assert '<table class="purges' in html
    assert html.count('<tr class="late">') == 1
    assert "1 late" in html
    assert "<svg" in html and 'class="hour"' in html and "1 h" in html
    assert html.count('class="bar') in (2, 3)  # one bar per day with deletions
    assert 'class="bar late"' in html
    assert "<polyline" in html

    rows = list(csv.DictReader(io.StringIO(admin.get("/admin/purges.csv").get_data(as_text=True))))
    assert {(r["kind"], r["reason"]) for r in rows} == {
        ("input", "converted"), ("result", "expired"), ("access-log", "expired")}
    access = next(r for r in rows if r["kind"] == "access-log")
    assert access["count"] == "42"
    late = [r for r in rows if r["late"] != "0"]
    assert len(late) == 1 and float(late[0]["oldest_age_s"]) > 3600

    body = json.loads(admin.get("/admin/purges.json").data)
    assert len(body["rows"]) == len(rows)
    assert sum(r["late"] for r in body["rows"]) == 1
    assert admin.get("/admin/purges.csv").headers["Cache-Control"] == "no-store"


def test_the_chart_is_a_calendar(records):
    """One day with deletions is one slim bar on a week's axis (not a bar
    across the whole chart); days without deletions are gaps."""
    now = time.time()
    records.record_deletion("input", "job-c-000003", 10, now - 60, now + 3540, "converted",
                            now=now)
    chart = purge_chart.chart(records.purge_summary(now - 30 * 86400))
    assert len(chart["bars"]) == 1 and len(chart["labels"]) == 7
    assert chart["bars"][0]["w"] <= chart["plot_w"] / 7
    assert chart["labels"][-1]["text"] == time.strftime("%m-%d", time.gmtime(now))


def test_the_chart_spans_the_days_shown(admin, records):
    """"Days shown" is the chart's axis too (30 asked once drew 7)."""
    now = time.time()
    records.record_deletion("input", "job-c-000004", 10, now - 60, now + 3540, "converted",
                            now=now)
    records.record_deletion("input", "job-c-000005", 10, now - 20 * 86400 - 60,
                            now - 20 * 86400 + 3540, "converted", now=now - 20 * 86400)
    for days, slots in ((30, 30), (7, 7), (90, 90)):
        chart = purge_chart.chart(records.purge_summary(now - days * 86400), days=days)
        first = time.strftime("%m-%d", time.gmtime(now - (slots - 1) * 86400))
        assert len(chart["bars"]) == (2 if days > 20 else 1), days
        assert chart["bars"][0]["w"] <= chart["plot_w"] / slots
        assert chart["labels"][-1]["text"] == time.strftime("%m-%d", time.gmtime(now))
        # the first slot is the first day shown
        span = (chart["labels"][-1]["x"] - chart["labels"][0]["x"]) / (chart["plot_w"] / slots)
        assert len(chart["labels"]) <= 8 and round(span) <= slots - 1
        if len(chart["labels"]) == slots:
            assert chart["labels"][0]["text"] == first
    html = admin.get("/admin/?days=30").get_data(as_text=True)
    assert html.count('class="bar') == 2  # the day 20 days ago is on the 30-day axis
    html = admin.get("/admin/?days=7").get_data(as_text=True)
    assert html.count('class="bar') == 1


def test_retention_status_shows_a_fault_when_the_sweeper_is_late(admin, records):
    html = admin.get("/admin/").get_data(as_text=True)
    assert "FAULT" in html and "never" in html
    records.record_sweep(0, 0, now=time.time() - 300)
    html = admin.get("/admin/").get_data(as_text=True)
    assert "FAULT" in html and "has not run in the last two minutes" in html
    records.record_sweep(0, 0)
    html = admin.get("/admin/").get_data(as_text=True)
    assert "FAULT" not in html and '<span class="badge ok">OK</span>' in html
    status = json.loads(admin.get("/admin/retention.json").data)
    assert status["fault"] is False and status["last_sweep_age_s"] < 60


def test_keys_are_created_once_listed_and_revoked(admin, records):
    token = csrf_token(admin, "/admin/keys")
    page = admin.post("/admin/keys", data={"csrf_token": token, "name": "lab scripts"})
    html = page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "no-store"
    key = html.split('id="new-key" class="key" readonly value="')[1].split('"')[0]
    assert key.startswith("emk_")
    assert key not in admin.get("/admin/keys").get_data(as_text=True)  # shown once
    api = admin.application.test_client()
    auth = {"Authorization": f"Bearer {key}"}
    assert api.get("/api/v1/jobs/nope", headers=auth).status_code == 404
    resp = admin.post("/admin/keys/revoke", data={"csrf_token": token, "prefix": key[:12]})
    assert resp.status_code == 303
    assert "revoked" in admin.get("/admin/keys").get_data(as_text=True)
    assert api.get("/api/v1/jobs/nope", headers=auth).status_code == 401
    assert admin.post("/admin/keys/revoke", data={"csrf_token": token, "prefix": "nope"}
                      ).status_code == 404


def test_audit_log_shows_logins_and_key_events(admin, records):
    token = csrf_token(admin, "/admin/keys")
    admin.post("/admin/keys", data={"csrf_token": token, "name": "k"})
    html = admin.get("/admin/audit").get_data(as_text=True)
    assert "admin-login" in html and "key-created" in html and "admin:ada" in html
    token = csrf_token(admin, "/admin/audit")
    assert admin.post("/admin/logout", data={"csrf_token": token}).status_code == 303
    assert admin.get("/admin/").status_code == 303


def test_a_wrong_password_is_refused_and_audited(client, records):
    records.add_admin("ada", "correct horse battery")
    token = csrf_token(client, "/admin/login")
    resp = client.post("/admin/login", data={"csrf_token": token, "name": "ada",
                                             "password": "nope"})
    assert resp.status_code == 401 and "Wrong name or password" in resp.get_data(as_text=True)
    resp = client.post("/admin/login", data={"csrf_token": token, "name": "mallory",
                                             "password": "nope"})
    rows = records.audit_rows(event="admin-login")
    assert [r["actor"] for r in rows] == ["unknown", "admin:ada"]
    assert "mallory" not in repr(rows)


def test_cli_admin_add_reads_the_password_without_echo(settings):
    env = dict(os.environ, **settings.as_env())
    proc = subprocess.run([sys.executable, "-m", "web.cli", "admin", "add", "ops",
                           "--password-stdin"], input="a long enough secret\n", env=env,
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "a long enough secret" not in proc.stdout + proc.stderr
    records = Records(settings.database_url)
    try:
        assert records.verify_admin("ops", "a long enough secret")
        assert not records.verify_admin("ops", "something else")
    finally:
        records.close()
    short = subprocess.run([sys.executable, "-m", "web.cli", "admin", "add", "ops2",
                            "--password-stdin"], input="short\n", env=env,
                           capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert short.returncode == 2
    assert short.stderr.count("\n") == 1 and "Traceback" not in short.stderr


def test_a_key_needs_a_name(admin):
    token = csrf_token(admin, "/admin/keys")
    resp = admin.post("/admin/keys", data={"csrf_token": token, "name": "  "})
    assert resp.status_code == 400 and "1 to 80 characters" in resp.get_data(as_text=True)


def test_a_locked_login_says_how_long(make_app, records):
    app = make_app(EPHEMESH_LOGIN_MAX_FAILURES=2, EPHEMESH_LOCKOUT_SECONDS=300)
    records.add_admin("ada", "correct horse battery")
    client = app.test_client()
    token = csrf_token(client, "/admin/login")
    for _ in range(2):
        client.post("/admin/login", data={"csrf_token": token, "name": "ada", "password": "x"})
    resp = client.post("/admin/login", data={"csrf_token": token, "name": "ada",
                                             "password": "correct horse battery"})
    assert resp.status_code == 429 and 240 <= int(resp.headers["Retry-After"]) <= 300
