"""Records on SQLite and on the real PostgreSQL: the same behaviour from both."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest

from worker.records import Records
from worker.retention import record


@pytest.fixture
def records(database_url):
    r = Records(database_url)
    yield r
    r.close()


def test_ledger_holds_one_row_per_object_and_flags_late_ones(records):
    now = time.time()
    assert records.record_deletion("input", "job1", 100, now - 50, now + 10, "converted", now=now)
    assert not records.record_deletion("input", "job1", 100, now - 50, now + 10, "expired",
                                       now=now)  # a second sweeper's row for the same object
    assert records.record_deletion("result", "job1", 7, now - 4000, now - 5, "expired", now=now)
    rows = records.ledger()
    assert [(r["kind"], r["reason"], r["late"]) for r in rows] == [
        ("input", "converted", False), ("result", "expired", True)]
    assert records.recorded("input", "job1") and not records.recorded("input", "job2")


def test_a_results_ledger_row_and_its_jobs_deleted_status_go_together(records):
    now = time.time()
    records.add_job("done1", "o", now - 100, now + 3500)
    records.finish_job("done1", {"triangles": 12})
    records.add_job("failed1", "o", now - 100, now + 3500)
    records.fail_job("failed1", "bad_input", "no series")
    assert record(records, "result", "done1", 7, now - 90, now, "expired", now=now)
    assert record(records, "result", "failed1", 7, now - 90, now, "expired", now=now)
    done, failed = records.job("done1"), records.job("failed1")
    assert (done["status"], done["report"]) == ("deleted", None)
    assert failed["status"] == "failed"  # only a done job's model can go
    records.set_job("done1", status="done", report="{}")
    # a second sweeper's row is refused, and its update goes with it
    assert not record(records, "result", "done1", 7, now - 90, now, "expired", now=now)
    assert records.job("done1")["status"] == "done"


def test_purge_summary_per_day_kind_and_reason(records):
    day = 86400
    base = 1_790_000_000  # a fixed UTC day boundary is irrelevant: days come from the rows
    records.record_deletion("input", "a", 10, base - 100, base + 3500, "converted", now=base)
    records.record_deletion("input", "b", 20, base - 3000, base + 600, "converted", now=base + 1)
    records.record_deletion("input", "c", 5, base - 10, base + 10, "expired", now=base + 20)
    records.record_deletion("access-log", "r1", 0, base - 31 * day, base - day, "expired",
                            count=12, now=base + 2 * day)
    summary = records.purge_summary()
    first_day = time.strftime("%Y-%m-%d", time.gmtime(base))
    by_key = {(s["day"], s["kind"], s["reason"]): s for s in summary}
    conv = by_key[(first_day, "input", "converted")]
    assert (conv["count"], conv["bytes"], conv["oldest_age_s"], conv["late"]) == (2, 30, 3001.0, 0)
    expired = by_key[(first_day, "input", "expired")]
    assert expired["late"] == 1
    [logs] = [s for s in summary if s["kind"] == "access-log"]
    assert logs["count"] == 12
    assert records.purge_summary(since=base + day) == [logs]


def test_access_log_purge_keeps_recent_rows(records):
    now = time.time()
    records.log_access("198.51.100.7", "POST", "/api/v1/jobs", 202, 1234, at=now - 40 * 86400)
    records.log_access("198.51.100.8", "GET", "/", 200, 10, at=now)
    n, oldest = records.purge_access_log(now - 30 * 86400)
    assert n == 1 and oldest == pytest.approx(now - 40 * 86400)
    assert [r["ip"] for r in records.access_rows()] == ["198.51.100.8"]


def test_api_keys_are_stored_as_hashes(records):
    key_id, plaintext = records.create_key("lab robot")
    assert plaintext.startswith("emk_") and len(plaintext) > 40
    listed = records.list_keys()
    assert [(k["id"], k["name"]) for k in listed] == [(key_id, "lab robot")]
    assert plaintext not in repr(listed)
    row = records.verify_key(plaintext)
    assert row["id"] == key_id and row["last_used"] is None  # the row as it was
    assert records.list_keys()[0]["last_used"] is not None
    assert records.verify_key(plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")) is None
    assert records.verify_key("nonsense") is None and records.verify_key("") is None
    assert records.revoke_key(listed[0]["prefix"])
    assert not records.revoke_key(listed[0]["prefix"])
    assert records.verify_key(plaintext) is None
    events = [a["event"] for a in records.audit_rows()]
    assert events[:2] == ["key-revoked", "key-created"]
    with pytest.raises(ValueError):
        records.create_key("  ")


def test_admin_passwords_are_argon2_hashes(records):
    records.add_admin("ada", "correct horse battery")
    assert records.verify_admin("ada", "correct horse battery")
    assert not records.verify_admin("ada", "wrong password!")
    assert not records.verify_admin("nobody", "correct horse battery")
    with records.engine.connect() as c:
        stored = c.exec_driver_sql("SELECT password_hash FROM admins").scalar()
    assert stored.startswith("$argon2id$") and "horse" not in stored
    records.add_admin("ada", "a new long password")  # reset
    assert records.verify_admin("ada", "a new long password")
    assert [a["name"] for a in records.list_admins()] == ["ada"]
    with pytest.raises(ValueError, match="10 characters"):
        records.add_admin("bob", "short")


def test_jobs_change_state_only_from_the_states_allowed(records):
    now = time.time()
    records.add_job("j1", "owner", now, now + 60, input_bytes=5)
    assert records.finish_job("j1", {"triangles": 4})
    assert not records.fail_job("j1", "expired", "late")  # done stays done
    assert records.job("j1")["status"] == "done"
    records.add_job("j2", "owner", now, now - 1)
    assert [j["id"] for j in records.unfinished_jobs(now)] == ["j2"]
    assert records.fail_job("j2", "expired", "x")
    assert records.unfinished_jobs(now) == []


def _open_records(url):
    Records(url).close()


def test_processes_starting_together_all_get_the_tables(tmp_path, postgres_url):
    """Web, workers and cron open the records at once on a fresh database."""
    ctx = mp.get_context("fork")
    for url in (f"sqlite:///{tmp_path / 'fresh.db'}", postgres_url):
        procs = [ctx.Process(target=_open_records, args=(url,)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * 6
