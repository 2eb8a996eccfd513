"""Usage roll-ups: what the dashboard, budgets and billing read instead of raw usage records.

One row per (hour or day) × org × environment × key × model × region, with sums and mergeable latency
histograms (``cic.billing.histogram``), so any slice over any range is a sum of rows and its
percentiles come from merged histograms — never a scan of the raw records.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Date, Index, UniqueConstraint
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Field, SQLModel

from cic.models.base import ID_LEN, BigIntPK
from cic.models.types import UTCDateTime, utcnow


class CountsArray(ARRAY):
    """``bigint[]`` without SQLAlchemy's pass over every element (a Python call per bucket, per row):
    lists of ints go to PostgreSQL as array literals (``{46,3,0,1}``, cast to ``bigint[]`` by the
    server: half the time psycopg takes to type and dump a list element by element), and come back
    as psycopg decodes them."""

    cache_ok = True

    def __init__(self) -> None:
        super().__init__(BigInteger())

    def bind_processor(self, dialect: Any) -> Any:
        def literal(value: list[int] | None) -> str | None:
            return None if value is None else "{" + ",".join(map(str, value)) + "}"

        return literal

    def result_processor(self, dialect: Any, coltype: Any) -> Any:  # None: the values as psycopg made them
        return None


# A histogram (cic.billing.histogram): [first bucket, counts…] — bigint[] on PostgreSQL, a JSON list elsewhere.
HIST = JSON().with_variant(CountsArray(), "postgresql")
DIMENSIONS = ("org_id", "environment_id", "api_key_id", "model_id", "region_code")
TOTALS_DIMENSIONS = ("org_id", "environment_id", "model_id", "region_code")  # the same, summed over keys


class RollupMeasures(SQLModel):
    requests: int = Field(default=0, sa_type=BigInteger)
    errors: int = Field(default=0, sa_type=BigInteger)
    prompt_tokens: int = Field(default=0, sa_type=BigInteger)
    completion_tokens: int = Field(default=0, sa_type=BigInteger)
    cached_tokens: int = Field(default=0, sa_type=BigInteger)
    cost_picousd: int = Field(default=0, sa_type=BigInteger)
    latency_ms_sum: int = Field(default=0, sa_type=BigInteger)
    ttft_count: int = Field(default=0, sa_type=BigInteger)
    ttft_ms_sum: int = Field(default=0, sa_type=BigInteger)
    # bigint[] on PostgreSQL: read in binary and added position by position, no keys to parse.
    latency_hist: list[int] = Field(default_factory=list, sa_type=HIST)
    ttft_hist: list[int] = Field(default_factory=list, sa_type=HIST)


class RollupKeys(SQLModel):
    org_id: str = Field(max_length=ID_LEN)
    environment_id: str = Field(max_length=ID_LEN)
    api_key_id: str = Field(max_length=ID_LEN)
    model_id: str = Field(max_length=64)
    region_code: str = Field(default="", max_length=32)


class UsageHourly(RollupKeys, RollupMeasures, table=True):
    __tablename__ = "usage_hourly"
    __table_args__ = (
        UniqueConstraint("hour", *DIMENSIONS),
        Index("ix_usage_hourly_org_id_hour", "org_id", "hour"),
        Index("ix_usage_hourly_updated_at", "updated_at"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    hour: datetime = Field(sa_type=UTCDateTime, description="start of the UTC hour")
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class UsageDaily(RollupKeys, RollupMeasures, table=True):
    __tablename__ = "usage_daily"
    __table_args__ = (
        UniqueConstraint("day", *DIMENSIONS),
        Index("ix_usage_daily_org_id_day", "org_id", "day"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    day: date = Field(sa_type=Date, description="UTC day")
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class RollupTotalsKeys(SQLModel):
    org_id: str = Field(max_length=ID_LEN)
    environment_id: str = Field(max_length=ID_LEN)
    model_id: str = Field(max_length=64)
    region_code: str = Field(default="", max_length=32)


class UsageHourlyTotals(RollupTotalsKeys, RollupMeasures, table=True):
    """The hourly rows summed over keys (org × environment × model × region × hour)."""

    __tablename__ = "usage_hourly_totals"
    __table_args__ = (
        UniqueConstraint("hour", *TOTALS_DIMENSIONS),
        Index("ix_usage_hourly_totals_org_id_hour", "org_id", "hour"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    hour: datetime = Field(sa_type=UTCDateTime, description="start of the UTC hour")
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class UsageDailyTotals(RollupTotalsKeys, RollupMeasures, table=True):
    """The daily rows summed over keys (org × environment × model × region × day): what dashboards and
    statements group by, a fraction of the rows when an org has many keys."""

    __tablename__ = "usage_daily_totals"
    __table_args__ = (
        UniqueConstraint("day", *TOTALS_DIMENSIONS),
        Index("ix_usage_daily_totals_org_id_day", "org_id", "day"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    day: date = Field(sa_type=Date, description="UTC day")
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class RollupCursor(SQLModel, table=True):
    """How far a consumer has read a stream (usage records by ``ingested_at``, hourly rows by
    ``updated_at``). Readers re-read a margin behind the cursor, so a row committed late is never missed;
    what they compute from it is idempotent."""

    __tablename__ = "rollup_cursors"

    name: str = Field(primary_key=True, max_length=64)
    position: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
