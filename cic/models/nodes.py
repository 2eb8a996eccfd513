from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger
from sqlmodel import JSON, Field, SQLModel

from cic.models.base import ID_LEN
from cic.models.types import UTCDateTime, new_id, utcnow

NATIVE_ENGINES = frozenset({"vllm", "sglang", "openai"})


class NodeStatus(StrEnum):
    registering = "registering"
    healthy = "healthy"
    unhealthy = "unhealthy"
    draining = "draining"
    offline = "offline"


class Node(SQLModel, table=True):
    """A GPU node serving one model in one region (a vLLM server, or an OpenAI-compatible one)."""

    __tablename__ = "nodes"

    id: str = Field(default_factory=lambda: new_id("node"), primary_key=True, max_length=ID_LEN)
    name: str = Field(default="", max_length=120)
    provider: str = Field(max_length=40, description="aws, gcp, azure, lambda, local, ...")
    region_code: str = Field(foreign_key="regions.code", index=True, max_length=32)
    model_id: str = Field(foreign_key="models.id", index=True, max_length=64)
    endpoint_url: str = Field(max_length=500, description="base URL of the OpenAI-compatible server, without /v1")
    engine: str = Field(
        default="vllm",
        max_length=40,
        description="'vllm', 'sglang' or 'openai' (OpenAI-native: forwarded as is), else a LiteLLM provider",
    )
    served_model: str = Field(default="", max_length=200, description="the name the server knows the model by")
    api_key_env: str = Field(default="", max_length=100, description="env var holding the upstream's API key")
    status: str = Field(default=NodeStatus.registering.value, max_length=16)
    gpu: str = Field(default="", max_length=60)
    spot: bool = Field(default=False)
    price_per_hour_micros: int = Field(default=0, ge=0, sa_type=BigInteger)
    load: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    last_heartbeat_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    deregistered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class NodeCreate(SQLModel):
    """A node an operator adds by hand (a static upstream: an existing server or a hosted provider)."""

    model: str = Field(max_length=64)
    region: str = Field(max_length=32)
    endpoint_url: str = Field(max_length=500)
    engine: str = Field(default="vllm", max_length=40)
    served_model: str = Field(default="", max_length=200)
    api_key_env: str = Field(default="", max_length=100)
    name: str = Field(default="", max_length=120)
    provider: str = Field(default="static", max_length=40)
    gpu: str = Field(default="", max_length=60)
    spot: bool = False


class NodePublic(SQLModel):
    id: str
    name: str
    provider: str
    region: str
    model: str
    endpoint_url: str
    engine: str
    served_model: str
    status: str
    gpu: str
    spot: bool
    load: dict[str, Any]
    last_heartbeat_at: datetime | None
    created_at: datetime
