"""The audit log's hash chain on SQLite and PostgreSQL: an intact log
verifies; an edited row, a removed row, a rewritten hash or a row slipped in
are found and named; erased rows stay verifiable (and must be accounted
for); writers in several processes at once never fork the chain; and
``ephemesh audit verify`` says so with its exit code."""

from __future__ import annotations

import json
import multiprocessing
import os

import pytest
from sqlalchemy import delete, insert, select, update

from converter.exits import Exit
from web.cli import run as ephemesh
from worker.audit import ERASED_EVENT
from worker.records import Records, audit_log


@pytest.fixture
def records(database_url):
    made = Records(database_url)
    for n in range(8):
        made.audit("admin-login", f"admin:ada{n}", {"address": f"{n:016x}", "result": "failed"})
    yield made
    made.close()


def _ids(records):
    return [r["id"] for r in records.audit_chain()]


def _sql(records, statement):
    with records.engine.begin() as c:
        c.execute(statement)


def test_an_untouched_log_verifies(records):
    check = records.verify_audit()
    assert check.intact and check.rows == 8 and check.erased == 0
    assert len(check.head) == 64 and check.head != "0" * 64
    rows = records.audit_chain()
    assert len({r["chain_sha256"] for r in rows}) == 8


def test_an_edited_row_is_found_and_named(records):
    victim = _ids(records)[3]
    _sql(records, update(audit_log).where(audit_log.c.id == victim)
         .values(detail=json.dumps({"address": "0" * 16, "result": "ok"})))
    check = records.verify_audit()
    assert not check.intact
    assert check.problems == [f"row {victim} (admin-login, {_when(records, victim)}) was changed"]


def test_an_edit_with_its_content_hash_rewritten_breaks_the_chain(records):
    from worker.audit import content_hash

    victim = _ids(records)[2]
    row = next(r for r in records.audit_chain() if r["id"] == victim)
    forged = json.dumps({"address": "f" * 16, "result": "ok"})
    _sql(records, update(audit_log).where(audit_log.c.id == victim).values(
        detail=forged, content_sha256=content_hash(row["at"], row["event"], row["actor"], forged)))
    problems = records.verify_audit().problems
    assert len(problems) == 1 and f"row {victim} " in problems[0]
    assert "does not follow" in problems[0]


@pytest.mark.parametrize("which", [0, 4, 7])
def test_a_removed_row_is_found(records, which):
    ids = _ids(records)
    _sql(records, delete(audit_log).where(audit_log.c.id == ids[which]))
    check = records.verify_audit()
    if which == 7:  # the last row: only the head changes (note it outside the database)
        assert check.intact and check.rows == 7
        return
    assert len(check.problems) == 1, check.problems
    after = f"row {ids[which - 1]}" if which else "the start"
    assert check.problems[0].startswith(f"row {ids[which + 1]} ")
    assert f"does not follow from {after}: a row between them was removed" in check.problems[0]


def test_a_row_slipped_in_without_hashes_is_found(records):
    _sql(records, insert(audit_log).values(at=1.0, event="admin-login", actor="admin:eve",
                                           detail="{}", erased=False))
    problems = records.verify_audit().problems
    assert len(problems) == 1 and "has no hash" in problems[0]


def test_erased_rows_are_reported_as_erased_not_tampered(records):
    ids = _ids(records)
    assert records.erase_audit_rows(ids[2:4]) == 2
    records.audit(ERASED_EVENT, "cli", {"access_rows": 0, "audit_rows": 2, "redis_keys": 0})
    check = records.verify_audit()
    assert check.intact, check.problems
    assert check.erased == 2 and check.rows == 9
    erased = [r for r in records.audit_chain() if r["erased"]]
    assert all(r["detail"] is None and r["actor"] == "erased" for r in erased)


def test_rows_marked_erased_without_an_erasure_record_are_found(records):
    ids = _ids(records)
    _sql(records, update(audit_log).where(audit_log.c.id == ids[1])
         .values(erased=True, detail=None, actor="erased"))
    problems = records.verify_audit().problems
    assert problems == ["1 rows are marked erased, but the erasure records account for 0"]


def _append(url, n, start):
    start.wait()
    made = Records(url)
    for i in range(n):
        made.audit("upload", f"key:{os.getpid()}", {"job": f"{i:022d}"})
    made.close()


def test_concurrent_writers_never_fork_the_chain(database_url, tmp_path):
    Records(database_url).close()  # the tables, made once
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_append, args=(database_url, 25, start)) for _ in range(4)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    records = Records(database_url)
    try:
        check = records.verify_audit()
        assert check.intact, check.problems[:3]
        assert check.rows == 100
        with records.engine.connect() as c:
            chains = [r[0] for r in c.execute(select(audit_log.c.chain_sha256))]
        assert len(set(chains)) == 100  # no two rows continue the same predecessor
    finally:
        records.close()


def test_the_command_says_intact_or_tampered(records, database_url, monkeypatch, tmp_path,
                                             capsys):
    monkeypatch.setenv("EPHEMESH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EPHEMESH_DATABASE_URL", database_url)
    assert ephemesh(["audit", "verify"]) == Exit.DONE
    out = capsys.readouterr().out
    assert out.startswith("audit log: 8 rows, chain intact; head ")
    victim = _ids(records)[5]
    _sql(records, update(audit_log).where(audit_log.c.id == victim).values(actor="admin:eve"))
    assert ephemesh(["audit", "verify"]) == Exit.INVALID
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("ephemesh: error: the audit log was tampered")
    assert f"row {victim} " in err and "was changed" in err


def _when(records, row_id):
    import time

    at = next(r["at"] for r in records.audit_chain() if r["id"] == row_id)
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))
