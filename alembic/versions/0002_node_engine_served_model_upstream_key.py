"""node engine, served model, upstream key

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 11:13:32.507415
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("engine", sa.String(length=40), nullable=False, server_default="vllm"))
        batch_op.add_column(sa.Column("served_model", sa.String(length=200), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("api_key_env", sa.String(length=100), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("api_key_env")
        batch_op.drop_column("served_model")
        batch_op.drop_column("engine")
