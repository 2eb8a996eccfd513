from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Index, func
from sqlmodel import Field, SQLModel

from cic.models.base import ID_LEN, BigIntPK
from cic.models.types import UTCDateTime, utcnow


class UsageStatus(StrEnum):
    ok = "ok"
    error = "error"
    cancelled = "cancelled"


class UsageRecord(SQLModel, table=True):
    """Exactly one row per inference request. Cost is in integer pico-dollars (tokens × µ$ per 1M)."""

    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_records_org_id_created_at", "org_id", "created_at"),
        Index("ix_usage_records_environment_id_created_at", "environment_id", "created_at"),
        Index("ix_usage_records_ingested_at", "ingested_at"),
        Index("ix_usage_records_created_at", "created_at"),  # the roll-up reads whole hours
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    request_id: str = Field(max_length=64, unique=True)
    org_id: str = Field(max_length=ID_LEN)
    environment_id: str = Field(max_length=ID_LEN)
    api_key_id: str = Field(max_length=ID_LEN)
    model_id: str = Field(max_length=64)
    region_code: str = Field(default="", max_length=32)
    node_id: str | None = Field(default=None, max_length=ID_LEN)
    endpoint: str = Field(max_length=32, description="chat.completions, completions, embeddings")
    stream: bool = Field(default=False)
    status: str = Field(max_length=16)
    http_status: int = Field(default=200)
    error_code: str | None = Field(default=None, max_length=64)
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    cached_tokens: int = Field(default=0, ge=0)
    latency_ms: int = Field(default=0, ge=0)
    ttft_ms: int | None = Field(default=None, ge=0)
    input_per_1m_micros: int = Field(default=0, ge=0, sa_type=BigInteger)
    output_per_1m_micros: int = Field(default=0, ge=0, sa_type=BigInteger)
    cost_picousd: int = Field(default=0, ge=0, sa_type=BigInteger)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, description="when the request arrived")
    # When the row reached the database (the database's clock): a record replayed from the spool hours
    # later gets a late ``ingested_at``, which is how the roll-up finds the hours it must fold again.
    ingested_at: datetime | None = Field(
        default=None, sa_type=UTCDateTime, sa_column_kwargs={"server_default": func.now(), "nullable": False}
    )


class UsageRow(SQLModel):
    day: date | None = None
    model: str | None = None
    environment: str | None = None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    errors: int
    error_rate: float = Field(default=0.0, description="errors / requests")
    cost: float = Field(description="USD")
    cost_usd: str = Field(description="USD, exact decimal")
    latency_p50_ms: int | None = None
    latency_p95_ms: int | None = None
    ttft_p50_ms: int | None = Field(default=None, description="time to first token (streams)")
    ttft_p95_ms: int | None = None


class UsageReport(SQLModel):
    org_id: str
    since: datetime
    until: datetime
    group_by: list[str]
    rows: list[UsageRow]
    totals: UsageRow
    as_of: datetime | None = Field(
        default=None, description="usage ingested up to this instant is included (the roll-ups' freshness)"
    )
