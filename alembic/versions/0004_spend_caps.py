"""monthly spend caps

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 12:06:50.815251
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("monthly_budget_cents", sa.BigInteger(), nullable=True))

    with op.batch_alter_table("environments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("monthly_budget_cents", sa.BigInteger(), nullable=True))

    with op.batch_alter_table("orgs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("monthly_budget_cents", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orgs", schema=None) as batch_op:
        batch_op.drop_column("monthly_budget_cents")

    with op.batch_alter_table("environments", schema=None) as batch_op:
        batch_op.drop_column("monthly_budget_cents")

    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("monthly_budget_cents")
