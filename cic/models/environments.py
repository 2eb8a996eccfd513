from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, text
from sqlmodel import Field, SQLModel

from cic.models.base import ID_LEN
from cic.models.orgs import LimitsMixin
from cic.models.types import UTCDateTime, new_id, utcnow

ENV_NAME_PATTERN = r"^[a-z][a-z0-9-]{0,30}$"


class Environment(LimitsMixin, table=True):
    __tablename__ = "environments"
    # Names are unique among an org's live environments; a deleted one frees its name.
    __table_args__ = (
        Index(
            "uq_environments_org_id_name_live",
            "org_id",
            "name",
            unique=True,
            postgresql_where=text("deleted_at IS NULL"),
            sqlite_where=text("deleted_at IS NULL"),
        ),
    )

    id: str = Field(default_factory=lambda: new_id("env"), primary_key=True, max_length=ID_LEN)
    org_id: str = Field(foreign_key="orgs.id", ondelete="CASCADE", index=True, max_length=ID_LEN)
    name: str = Field(max_length=32)
    region_code: str = Field(foreign_key="regions.code", max_length=32)
    allow_cross_region_failover: bool = Field(default=False)
    routing_policy: str | None = Field(default=None, max_length=32, description="overrides the deployment's")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    deleted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class EnvironmentModel(SQLModel, table=True):
    """The models enabled in an environment."""

    __tablename__ = "environment_models"

    environment_id: str = Field(foreign_key="environments.id", ondelete="CASCADE", primary_key=True, max_length=ID_LEN)
    model_id: str = Field(foreign_key="models.id", primary_key=True, max_length=64)


class EnvironmentCreate(LimitsMixin):
    name: str = Field(max_length=32, schema_extra={"pattern": ENV_NAME_PATTERN})
    region: str = Field(max_length=32)
    models: list[str] = Field(min_length=1, max_length=100)
    allow_cross_region_failover: bool = False
    routing_policy: str | None = Field(default=None, max_length=32)


class EnvironmentUpdate(LimitsMixin):
    region: str | None = Field(default=None, max_length=32)
    models: list[str] | None = Field(default=None, min_length=1, max_length=100)
    allow_cross_region_failover: bool | None = None
    routing_policy: str | None = Field(default=None, max_length=32)


class EnvironmentPublic(SQLModel):
    id: str
    org_id: str
    name: str
    region: str
    models: list[str]
    allow_cross_region_failover: bool
    routing_policy: str | None = None
    rpm: int | None
    tpm: int | None
    tpd: int | None
    max_concurrency: int | None
    base_url: str
    created_at: datetime
    updated_at: datetime
