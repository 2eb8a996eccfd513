"""reserved capacity

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 12:11:11.257992
"""

from collections.abc import Sequence

import sqlalchemy as sa

import cic.models.types
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reservations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("org_id", sa.String(length=32), nullable=False),
        sa.Column("model_id", sa.String(length=64), nullable=False),
        sa.Column("region_code", sa.String(length=32), nullable=False),
        sa.Column("tokens_per_s", sa.Integer(), nullable=False),
        sa.Column("created_at", cic.models.types.UTCDateTime(), nullable=False),
        sa.Column("updated_at", cic.models.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_reservations_model_id_models")),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_reservations_org_id_orgs"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["region_code"], ["regions.code"], name=op.f("fk_reservations_region_code_regions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reservations")),
        sa.UniqueConstraint(
            "org_id", "model_id", "region_code", name=op.f("uq_reservations_org_id_model_id_region_code")
        ),
    )
    with op.batch_alter_table("reservations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reservations_org_id"), ["org_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("reservations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reservations_org_id"))

    op.drop_table("reservations")
