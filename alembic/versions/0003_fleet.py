"""fleet: node agents, bootstrap tokens, deployments, launches, routing policy

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 11:30:03.094115
"""

from collections.abc import Sequence

import sqlalchemy as sa

import cic.models.types
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("model_id", sa.String(length=64), nullable=False),
        sa.Column("region_code", sa.String(length=32), nullable=False),
        sa.Column("replicas", sa.Integer(), nullable=False),
        sa.Column("accelerators", sa.String(length=60), nullable=False),
        sa.Column("spot", sa.Boolean(), nullable=False),
        sa.Column("on_demand_after_preemptions", sa.Integer(), nullable=False),
        sa.Column("created_at", cic.models.types.UTCDateTime(), nullable=False),
        sa.Column("updated_at", cic.models.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_deployments_model_id_models")),
        sa.ForeignKeyConstraint(["region_code"], ["regions.code"], name=op.f("fk_deployments_region_code_regions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployments")),
        sa.UniqueConstraint("model_id", "region_code", name=op.f("uq_deployments_model_id_region_code")),
    )
    op.create_table(
        "node_tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=24), nullable=False),
        sa.Column("region_code", sa.String(length=32), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", cic.models.types.UTCDateTime(), nullable=False),
        sa.Column("expires_at", cic.models.types.UTCDateTime(), nullable=False),
        sa.Column("revoked_at", cic.models.types.UTCDateTime(), nullable=True),
        sa.Column("max_uses", sa.Integer(), nullable=True),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["region_code"], ["regions.code"], name=op.f("fk_node_tokens_region_code_regions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_node_tokens_token_hash")),
    )
    op.create_table(
        "launches",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("deployment_id", sa.String(length=32), nullable=True),
        sa.Column("cluster_name", sa.String(length=100), nullable=False),
        sa.Column("model_id", sa.String(length=64), nullable=False),
        sa.Column("region_code", sa.String(length=32), nullable=False),
        sa.Column("accelerators", sa.String(length=60), nullable=False),
        sa.Column("spot", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("node_id", sa.String(length=32), nullable=True),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.Column("created_at", cic.models.types.UTCDateTime(), nullable=False),
        sa.Column("updated_at", cic.models.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"], ["deployments.id"], name=op.f("fk_launches_deployment_id_deployments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_launches")),
        sa.UniqueConstraint("cluster_name", name=op.f("uq_launches_cluster_name")),
    )
    with op.batch_alter_table("launches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_launches_deployment_id"), ["deployment_id"], unique=False)

    with op.batch_alter_table("environments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("routing_policy", sa.String(length=32), nullable=True))

    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("managed", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("agent_version", sa.String(length=40), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("launch_id", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("launch_id")
        batch_op.drop_column("agent_version")
        batch_op.drop_column("managed")

    with op.batch_alter_table("environments", schema=None) as batch_op:
        batch_op.drop_column("routing_policy")

    with op.batch_alter_table("launches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_launches_deployment_id"))

    op.drop_table("launches")
    op.drop_table("node_tokens")
    op.drop_table("deployments")
