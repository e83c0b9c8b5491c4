"""Scan workspaces: the ``scans`` table (opaque id, owner's hash, times,
status, error code, size — never a series description, time or UID) and
``scan_jobs`` (which job was made from which scan).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _tables() -> list[sa.Table]:
    m = sa.MetaData()
    C, S, F = sa.Column, sa.String, sa.Float
    return [
        sa.Table("scans", m,
                 C("id", S(64), primary_key=True),
                 C("owner", S(128), nullable=False, index=True),
                 C("created", F, nullable=False),
                 C("deadline", F, nullable=False),
                 C("status", S(16), nullable=False),
                 C("error_code", S(64)),
                 C("error_message", S(300)),
                 C("input_bytes", sa.BigInteger, nullable=False, server_default="0"),
                 C("received_sha256", S(64))),
        sa.Table("scan_jobs", m,
                 C("job_id", S(64), primary_key=True),
                 C("scan_id", S(64), nullable=False, index=True)),
    ]


def upgrade() -> None:
    from worker.schema import create_or_complete

    create_or_complete(_tables())


def downgrade() -> None:
    for table in reversed(_tables()):
        op.drop_table(table.name)
