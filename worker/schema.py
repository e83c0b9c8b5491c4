"""The records' schema revision: Alembic, with the revisions in
``worker/migrations/versions/`` (one file per change of ``records.py``'s
tables; the first is the schema as it stood when migrations came).

``upgrade(engine)`` brings a database to the newest revision (``ephemesh db
upgrade``); ``check(engine)`` says whether it is there, and ``Records``
refuses any other database with a one-line ``SchemaOutdated`` naming the
command to run.  An empty database is made at the newest revision by
whoever opens it first (``ephemesh serve`` on one box, the tests), unless
the opener asks to refuse it (``ephemesh worker`` and ``cron``: a host
joining others never makes their schema).
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

# Alembic says at INFO what it sets up (on import) and runs; a refusal stays one line
logging.getLogger("alembic").setLevel(logging.WARNING)

from alembic.config import Config  # noqa: E402
from alembic.runtime.migration import MigrationContext  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402
from sqlalchemy import inspect, text  # noqa: E402
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError  # noqa: E402

from converter.exits import CommandFailed  # noqa: E402

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: the PostgreSQL advisory lock that serializes upgrades ("emdb")
UPGRADE_LOCK = 0x656D6462
HINT = "run 'ephemesh db upgrade'"
#: how long an opener waits for a racing one to finish making an empty database
RACE_WAIT_S = 5.0


class SchemaOutdated(CommandFailed):
    """The database is not at this ephemesh's revision (one line, exit 1)."""


def _config(connection=None) -> Config:
    config = Config(str(MIGRATIONS / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head() -> str:
    """The newest revision this ephemesh knows."""
    return _script().get_current_head()


def revisions() -> list[str]:
    """Every revision, oldest first."""
    return [r.revision for r in reversed(list(_script().walk_revisions()))]


def current(connection) -> str | None:
    """The database's revision (None: none recorded)."""
    return MigrationContext.configure(connection).get_current_revision()


def state(engine) -> tuple[str, str | None]:
    """``("current" | "empty" | "unversioned" | "behind" | "unknown", revision)``."""
    with engine.connect() as c:
        rev = current(c)
        tables = set(inspect(c).get_table_names()) - {"alembic_version"}
    if rev == head():
        return "current", rev
    if rev is None:
        return ("unversioned" if tables else "empty"), None
    return ("behind" if rev in revisions() else "unknown"), rev


def upgrade(engine, revision: str = "heads", attempts: int = 5) -> None:
    """Bring the database to ``revision`` (default the newest), one upgrader
    at a time: PostgreSQL's advisory lock; on SQLite a racing creator's
    "already exists" is waited out and the state looked at again."""
    from alembic import command

    for attempt in range(attempts):
        try:
            with engine.begin() as c:
                if c.dialect.name == "postgresql":
                    c.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": UPGRADE_LOCK})
                command.upgrade(_config(c), revision)
            return
        except (OperationalError, ProgrammingError, IntegrityError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.1 * (attempt + 1))


def check(engine, *, create_empty: bool = True) -> None:
    """Refuse (``SchemaOutdated``) a database not at the newest revision;
    an empty one is upgraded when ``create_empty``."""
    found, rev = state(engine)
    if found == "unversioned" and create_empty:
        # another opener may be making the empty database right now (SQLite's
        # DDL is not in the transaction: its tables show before their revision)
        end = time.monotonic() + RACE_WAIT_S
        while found == "unversioned" and time.monotonic() < end:
            time.sleep(0.05)
            found, rev = state(engine)
    if found == "current":
        return
    if found == "empty" and create_empty:
        upgrade(engine)
        return
    raise SchemaOutdated({
        "empty": f"the records database is empty: {HINT}",
        "unversioned": f"the records database was made before migrations: {HINT}",
        "behind": f"the records database is at revision {rev}, this ephemesh needs {head()}: "
                  f"{HINT}",
        "unknown": f"the records database is at revision {rev}, which this ephemesh does not "
                   f"know (a newer one upgraded it); run that one",
    }[found])


def create_or_complete(tables) -> None:
    """In a revision's ``upgrade``: create each of ``tables`` that is missing,
    and add to one made before migrations (``create_all`` by a build that had
    it) the columns it lacks, with their server defaults."""
    import sqlalchemy as sa
    from alembic import op

    bind = op.get_bind()
    present = sa.inspect(bind)
    have = set(present.get_table_names())
    for table in tables:
        if table.name not in have:
            table.create(bind)
            continue
        columns = {c["name"] for c in present.get_columns(table.name)}
        for column in table.columns:
            if column.name not in columns:
                default = column.server_default.arg if column.server_default else None
                op.add_column(table.name, sa.Column(column.name, column.type,
                                                    nullable=column.nullable,
                                                    server_default=default))
