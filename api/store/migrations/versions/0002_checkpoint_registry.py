"""The registry tells the truth: pinned checkpoints, pruned ones, the API's verification of digests.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from api.store.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("checkpoints") as table:
        table.add_column(sa.Column("pinned", sa.Boolean(), nullable=False, server_default=sa.false()))
        table.add_column(sa.Column("deleted_at", UTCDateTime()))
        table.add_column(sa.Column("verification", sa.String(16), nullable=False, server_default="pending"))


def downgrade() -> None:
    with op.batch_alter_table("checkpoints") as table:
        table.drop_column("verification")
        table.drop_column("deleted_at")
        table.drop_column("pinned")
