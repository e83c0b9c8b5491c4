"""An API key's default conversion options (``api_keys.options``: JSON of
options checked like a job's, e.g. ``{"preset": "bone"}``; what a STOW-RS
request converts with when its query names none).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("api_keys")}
    if "options" not in columns:
        op.add_column("api_keys", sa.Column("options", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("api_keys", "options")
