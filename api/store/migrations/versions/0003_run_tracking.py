"""Where a run is tracked (MLflow run URL, TensorBoard logdir, W&B run), as its trainer reports it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as table:
        table.add_column(sa.Column("tracking", sa.JSON()))


def downgrade() -> None:
    with op.batch_alter_table("runs") as table:
        table.drop_column("tracking")
