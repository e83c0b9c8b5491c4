"""The records as they were when migrations came (round 2): jobs, batches,
purge ledger, access log, audit log, API keys, usage, sweeps, admins.

A database made before migrations (by ``metadata.create_all`` and the old
hand-written column check) has these tables, perhaps without the columns
added last (the receipts' and the audit chain's); this revision creates
what is missing and adds the missing columns, so ``ephemesh db upgrade``
brings such a database here too.  The tables are written out in full: a
revision never imports ``worker/records.py``, which moves on.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _tables() -> list[sa.Table]:
    m = sa.MetaData()
    C, S, F, N, B, T = sa.Column, sa.String, sa.Float, sa.Integer, sa.Boolean, sa.Text
    big = sa.BigInteger
    return [
        sa.Table("jobs", m,
                 C("id", S(64), primary_key=True),
                 C("owner", S(128), nullable=False, index=True),
                 C("batch_id", S(64), index=True),
                 C("seq", N, nullable=False, server_default="0"),
                 C("created", F, nullable=False),
                 C("deadline", F, nullable=False),
                 C("status", S(16), nullable=False),
                 C("pick", B, nullable=False, server_default=sa.false()),
                 C("input_bytes", big, nullable=False, server_default="0"),
                 C("error_code", S(64)),
                 C("error_message", S(300)),
                 C("series", T),
                 C("report", T),
                 C("finished", F),
                 C("received_sha256", S(64))),
        sa.Table("batches", m,
                 C("id", S(64), primary_key=True),
                 C("owner", S(128), nullable=False, index=True),
                 C("created", F, nullable=False),
                 C("deadline", F, nullable=False),
                 C("status", S(16), nullable=False),
                 C("error_code", S(64)),
                 C("error_message", S(300)),
                 C("received_sha256", S(64))),
        sa.Table("purge_ledger", m,
                 C("id", N, primary_key=True, autoincrement=True),
                 C("kind", S(32), nullable=False),
                 C("object_id", S(64), nullable=False),
                 C("count", N, nullable=False, server_default="1"),
                 C("bytes", big, nullable=False, server_default="0"),
                 C("created", F),
                 C("deadline", F),
                 C("deleted", F, nullable=False),
                 C("reason", S(16), nullable=False),
                 C("late", B, nullable=False, server_default=sa.false()),
                 C("received", F),
                 C("converted", F),
                 C("received_sha256", S(64)),
                 sa.UniqueConstraint("kind", "object_id", name="uq_ledger_object")),
        sa.Table("access_log", m,
                 C("id", N, primary_key=True, autoincrement=True),
                 C("at", F, nullable=False, index=True),
                 C("ip", S(64), nullable=False),
                 C("method", S(8), nullable=False),
                 C("route", S(120), nullable=False),
                 C("status", N, nullable=False),
                 C("bytes", big, nullable=False)),
        sa.Table("audit_log", m,
                 C("id", N, primary_key=True, autoincrement=True),
                 C("at", F, nullable=False, index=True),
                 C("event", S(40), nullable=False),
                 C("actor", S(80), nullable=False),
                 C("detail", T),
                 C("content_sha256", S(64)),
                 C("chain_sha256", S(64)),
                 C("erased", B, nullable=False, server_default=sa.false())),
        sa.Table("api_keys", m,
                 C("id", N, primary_key=True, autoincrement=True),
                 C("name", S(80), nullable=False),
                 C("prefix", S(16), nullable=False, unique=True),
                 C("sha256", S(64), nullable=False, unique=True),
                 C("created", F, nullable=False),
                 C("last_used", F),
                 C("revoked", F)),
        sa.Table("usage", m,
                 C("id", N, primary_key=True, autoincrement=True),
                 C("key_id", N, index=True),
                 C("endpoint", S(80), nullable=False),
                 C("bytes_in", big, nullable=False),
                 C("bytes_out", big, nullable=False),
                 C("at", F, nullable=False)),
        sa.Table("sweeps", m,
                 C("id", N, primary_key=True, autoincrement=True),
                 C("at", F, nullable=False, index=True),
                 C("deleted", N, nullable=False),
                 C("late", N, nullable=False)),
        sa.Table("admins", m,
                 C("id", N, primary_key=True, autoincrement=True),
                 C("name", S(80), nullable=False, unique=True),
                 C("password_hash", S(200), nullable=False),
                 C("created", F, nullable=False)),
    ]


def upgrade() -> None:
    from worker.schema import create_or_complete

    create_or_complete(_tables())


def downgrade() -> None:
    for table in reversed(_tables()):
        op.drop_table(table.name)
