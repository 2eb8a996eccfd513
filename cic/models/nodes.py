from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, UniqueConstraint
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
    managed: bool = Field(default=False, description="run by an agent: heartbeats expected, signed calls")
    agent_version: str = Field(default="", max_length=40)
    launch_id: str | None = Field(default=None, max_length=ID_LEN, description="the launch that made it, if any")
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
    price_per_hour: float = Field(description="USD per hour the node costs (spot or on-demand)")
    load: dict[str, Any]
    last_heartbeat_at: datetime | None
    created_at: datetime


class NodeToken(SQLModel, table=True):
    """A bootstrap token an operator hands to a node: it can only register nodes, until it expires."""

    __tablename__ = "node_tokens"

    id: str = Field(default_factory=lambda: new_id("ntk"), primary_key=True, max_length=ID_LEN)
    token_hash: str = Field(max_length=64, unique=True)
    prefix: str = Field(max_length=24)
    region_code: str | None = Field(default=None, foreign_key="regions.code", max_length=32)
    created_by: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    max_uses: int | None = Field(default=None, ge=1)
    uses: int = Field(default=0, ge=0)


class NodeRegister(SQLModel):
    """What an agent says about its node when it registers."""

    model: str = Field(max_length=64)
    region: str = Field(max_length=32)
    provider: str = Field(default="local", max_length=40)
    endpoint_url: str = Field(max_length=500)
    engine: str = Field(default="vllm", max_length=40)
    served_model: str = Field(default="", max_length=200)
    name: str = Field(default="", max_length=120)
    gpu: str = Field(default="", max_length=60)
    spot: bool = False
    price_per_hour: float = Field(default=0, ge=0, description="USD per hour")
    agent_version: str = Field(default="", max_length=40)
    launch_id: str | None = Field(default=None, max_length=ID_LEN)


class NodeRegistered(SQLModel):
    node_id: str
    secret: str = Field(description="signs every later call of this node; shown once")
    heartbeat_interval_s: float


class Heartbeat(SQLModel):
    load: dict[str, Any] = Field(default_factory=dict)
    engine_healthy: bool = True
    draining: bool = False


class HeartbeatReply(SQLModel):
    status: str
    heartbeat_interval_s: float


class Deployment(SQLModel, table=True):
    """Desired capacity: keep ``replicas`` nodes of a model in a region (the reconciler launches them)."""

    __tablename__ = "deployments"
    __table_args__ = (UniqueConstraint("model_id", "region_code"),)

    id: str = Field(default_factory=lambda: new_id("dep"), primary_key=True, max_length=ID_LEN)
    model_id: str = Field(foreign_key="models.id", max_length=64)
    region_code: str = Field(foreign_key="regions.code", max_length=32)
    replicas: int = Field(ge=0)
    accelerators: str = Field(max_length=60, description="SkyPilot accelerator spec, e.g. A10G:1")
    spot: bool = Field(default=True)
    on_demand_after_preemptions: int = Field(default=3, ge=1)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Launch(SQLModel, table=True):
    """One cluster launched for a deployment (or by hand): its fate is tracked to decide replacements."""

    __tablename__ = "launches"

    id: str = Field(default_factory=lambda: new_id("lch"), primary_key=True, max_length=ID_LEN)
    deployment_id: str | None = Field(default=None, foreign_key="deployments.id", index=True, max_length=ID_LEN)
    cluster_name: str = Field(max_length=100, unique=True)
    model_id: str = Field(max_length=64)
    region_code: str = Field(max_length=32)
    accelerators: str = Field(max_length=60)
    spot: bool = Field(default=True)
    status: str = Field(default="launching", max_length=16, description="launching|running|preempted|failed|down")
    node_id: str | None = Field(default=None, max_length=ID_LEN)
    detail: str = Field(default="", max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
