"""Migrations (Alembic, ``worker/schema.py``, ``worker/migrations/``): every
revision upgrades from empty and from the one before to exactly the tables
``worker/records.py`` declares, on SQLite and PostgreSQL; a database made
before migrations is brought there with its rows; ``Records``, ``worker`` and
``cron`` refuse any other database with one line naming ``ephemesh db upgrade``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from tests.helpers import ROOT
from worker import records as R
from worker import schema
from worker.records import Records


def _differences(engine) -> list:
    with engine.connect() as c:
        return compare_metadata(MigrationContext.configure(c), R.metadata)


def _tables(engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def test_upgrade_from_empty_makes_exactly_the_declared_tables(database_url):
    engine = sa.create_engine(database_url)
    try:
        assert schema.state(engine) == ("empty", None)
        schema.upgrade(engine)
        assert schema.state(engine) == ("current", schema.head())
        assert _tables(engine) == set(R.metadata.tables) | {"alembic_version"}
        assert _differences(engine) == []  # a change to records.py needs its revision
        schema.upgrade(engine)  # again: nothing to do
        assert schema.state(engine) == ("current", schema.head())
    finally:
        engine.dispose()


@pytest.mark.parametrize("revision", schema.revisions())
def test_each_revision_upgrades_from_the_one_before(database_url, revision):
    engine = sa.create_engine(database_url)
    try:
        before = schema._script().get_revision(revision).down_revision
        if before:
            schema.upgrade(engine, before)
            assert schema.state(engine)[1] == before
        schema.upgrade(engine, revision)
        assert schema.state(engine)[1] == revision
        schema.upgrade(engine)
        assert _differences(engine) == []
        r = Records(database_url)  # opens without complaint
        r.add_job("j1", "key:1", 1.0, 2.0)
        assert r.job("j1")["status"] == "queued"
        r.close()
    finally:
        engine.dispose()


def _pre_migration_database(engine) -> None:
    """Tables as round 1 made them (create_all, no alembic_version), before the
    receipts' and the audit chain's columns, with a row in each that matters."""
    old = sa.MetaData()
    for table in R.metadata.sorted_tables:
        dropped = {"seq", "received_sha256", "received", "converted", "content_sha256",
                   "chain_sha256", "erased"}
        sa.Table(table.name, old, *(sa.Column(c.name, c.type, primary_key=c.primary_key,
                                              nullable=c.nullable, index=c.index,
                                              unique=c.unique)
                                    for c in table.columns if c.name not in dropped),
                 *(sa.UniqueConstraint(*[c.name for c in u.columns], name=u.name)
                   for u in table.constraints if isinstance(u, sa.UniqueConstraint)))
    old.create_all(engine)
    with engine.begin() as c:
        c.execute(old.tables["jobs"].insert().values(
            id="old", owner="key:1", created=1.0, deadline=2.0, status="done", pick=False,
            input_bytes=5))
        c.execute(old.tables["purge_ledger"].insert().values(
            kind="input", object_id="old", count=1, bytes=5, deleted=1.5, reason="converted",
            late=False))


def test_a_database_from_before_migrations_is_refused_then_upgraded(database_url):
    engine = sa.create_engine(database_url)
    try:
        _pre_migration_database(engine)
        with pytest.raises(schema.SchemaOutdated) as refused:
            Records(database_url)
        assert str(refused.value) == ("the records database was made before migrations: run "
                                      "'ephemesh db upgrade'")
        schema.upgrade(engine)
        assert _differences(engine) == []
        r = Records(database_url)
        old = r.job("old")
        assert (old["input_bytes"], old["seq"], old["received_sha256"]) == (5, 0, None)
        assert r.receipt_rows("old")[0]["reason"] == "converted"
        r.audit("test", "cli", {"n": 1})
        assert r.verify_audit().intact
        r.close()
    finally:
        engine.dispose()


def test_an_unknown_revision_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    Records(url).close()
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff'"))
    engine.dispose()
    with pytest.raises(schema.SchemaOutdated, match="at revision ffff, which this ephemesh does "
                                                    "not know"):
        Records(url)


def _run(args, env):
    return subprocess.run([sys.executable, "-m", "web.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_worker_and_cron_refuse_an_empty_database_until_db_upgrade(tmp_path, redis_url):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPHEMESH_")}
    env.update(EPHEMESH_DATA_DIR=str(tmp_path / "data"), EPHEMESH_REDIS_URL=redis_url)
    line = "ephemesh: error: the records database is empty: run 'ephemesh db upgrade'"
    for command in (["worker", "--burst"], ["cron"], ["db", "current"]):
        out = _run(command, env)
        assert (out.returncode, out.stderr.strip()) == (1, line), command
    assert _run(["db", "current"], env).stdout.strip() == "none (empty)"
    out = _run(["db", "upgrade"], env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"records database at revision {schema.head()} (was empty)"
    assert _run(["db", "upgrade"], env).stdout.strip().endswith("(it was already)")
    out = _run(["db", "current"], env)
    assert (out.returncode, out.stdout.strip()) == (0, f"{schema.head()} (the newest)")
    out = _run(["worker", "--burst"], env)
    assert out.returncode == 0, out.stderr
