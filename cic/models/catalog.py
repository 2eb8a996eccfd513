from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, UniqueConstraint
from sqlmodel import Field, SQLModel

from cic.models.base import BigIntPK
from cic.models.types import UTCDateTime, utcnow


class ModelKind(StrEnum):
    chat = "chat"
    completion = "completion"
    embedding = "embedding"


class Region(SQLModel, table=True):
    __tablename__ = "regions"

    code: str = Field(primary_key=True, max_length=32)
    name: str = Field(max_length=120)
    country: str = Field(max_length=2, description="ISO 3166-1 alpha-2 country the data stays in")
    residency_note: str = Field(default="", max_length=500)
    active: bool = Field(default=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class RegionPublic(SQLModel):
    code: str
    name: str
    country: str
    residency_note: str
    active: bool


class CatalogModel(SQLModel, table=True):
    """A model the platform can serve. ``provider`` is ``vllm`` for our own fleet, or a LiteLLM provider."""

    __tablename__ = "models"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=120)
    family: str = Field(max_length=40)
    kind: str = Field(max_length=16)
    context_length: int = Field(ge=1)
    vram_gb: int = Field(ge=0, description="GPU memory needed to serve it (fp16)")
    hf_repo: str = Field(default="", max_length=200, description="weights vLLM serves for it")
    provider: str = Field(default="vllm", max_length=40)
    active: bool = Field(default=True)
    # The OpenAI model a customer would otherwise call, at its list price per 1M tokens (µ$): the
    # dashboard's "savings vs OpenAI list price" is the same tokens priced at these.
    reference_model: str = Field(default="", max_length=64)
    reference_input_per_1m_micros: int = Field(default=0, ge=0, sa_type=BigInteger)
    reference_output_per_1m_micros: int = Field(default=0, ge=0, sa_type=BigInteger)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ModelPrice(SQLModel, table=True):
    """Price per 1M tokens in integer micro-dollars, per region, from ``effective_from`` on."""

    __tablename__ = "model_prices"
    __table_args__ = (UniqueConstraint("model_id", "region_code", "effective_from"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigIntPK)
    model_id: str = Field(foreign_key="models.id", ondelete="CASCADE", max_length=64)
    region_code: str = Field(foreign_key="regions.code", max_length=32)
    input_per_1m_micros: int = Field(ge=0, sa_type=BigInteger)
    output_per_1m_micros: int = Field(ge=0, sa_type=BigInteger)
    reserved_tps_month_micros: int = Field(
        default=0, ge=0, sa_type=BigInteger, description="reserved capacity: µ$ per token/s per calendar month"
    )
    effective_from: datetime = Field(sa_type=UTCDateTime)


class PricePublic(SQLModel):
    region: str
    input_per_1m: float
    output_per_1m: float
    reserved_per_tps_month: float = 0.0
    currency: str = "usd"


class ReferencePricePublic(SQLModel):
    model: str
    input_per_1m: float
    output_per_1m: float


class ModelPublic(SQLModel):
    id: str
    name: str
    family: str
    kind: ModelKind
    context_length: int
    vram_gb: int
    provider: str
    prices: list[PricePublic] = []
    reference: ReferencePricePublic | None = None
