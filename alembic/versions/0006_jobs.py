"""jobs: run records per period, and APScheduler's persistent job store

Revision ID: 0006_jobs
Revises: 0005
Create Date: 2026-11-28 15:00:56.512699

``apscheduler_jobs`` has exactly the schema of APScheduler 3's ``SQLAlchemyJobStore`` (which would
otherwise create it at start-up); it is not a model, so ``cic.migrations.include_object`` leaves it
out of the autogenerate comparison.
"""

from collections.abc import Sequence

import sqlalchemy as sa

import cic.models.types
from alembic import op

revision: str = "0006_jobs"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_runs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("period_start", cic.models.types.UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("forced", sa.Boolean(), nullable=False),
        sa.Column("started_at", cic.models.types.UTCDateTime(), nullable=False),
        sa.Column("finished_at", cic.models.types.UTCDateTime(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_runs")),
        sa.UniqueConstraint("name", "period_start", name=op.f("uq_job_runs_name_period_start")),
    )
    op.create_table(
        "apscheduler_jobs",
        sa.Column("id", sa.Unicode(length=191), nullable=False),
        sa.Column("next_run_time", sa.Float(precision=25), nullable=True),
        sa.Column("job_state", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_apscheduler_jobs")),
    )
    op.create_index(op.f("ix_apscheduler_jobs_next_run_time"), "apscheduler_jobs", ["next_run_time"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_apscheduler_jobs_next_run_time"), table_name="apscheduler_jobs")
    op.drop_table("apscheduler_jobs")
    op.drop_table("job_runs")
