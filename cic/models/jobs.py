"""One row per (job, period): how the scheduled jobs know a period has already been run, by anyone."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Text, UniqueConstraint
from sqlmodel import JSON, Field, SQLModel

from cic.models.base import BigIntPK
from cic.models.types import UTCDateTime


class JobRunStatus(StrEnum):
    running = "running"
    ran = "ran"
    failed = "failed"


class JobRun(SQLModel, table=True):
    """The run of job ``name`` for the period starting at ``period_start`` (its latest attempt).

    ``owner`` identifies the attempt (host, pid, random token): only that attempt may write its
    outcome, so a run that outlived its lock never overwrites a later attempt's record.
    """

    __tablename__ = "job_runs"
    __table_args__ = (UniqueConstraint("name", "period_start"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    name: str = Field(max_length=64)
    period_start: datetime = Field(sa_type=UTCDateTime)
    status: str = Field(max_length=16)
    attempts: int = Field(default=1, ge=1)
    owner: str = Field(max_length=128)
    forced: bool = Field(default=False)
    started_at: datetime = Field(sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    duration_ms: int | None = Field(default=None, ge=0)
    summary: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    error: str | None = Field(default=None, sa_type=Text)
