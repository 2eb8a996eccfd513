from __future__ import annotations

from datetime import datetime

from sqlmodel import JSON, Field, SQLModel

from cic.models.base import ID_LEN
from cic.models.orgs import LimitsMixin
from cic.models.types import UTCDateTime, new_id, utcnow


class ApiKey(LimitsMixin, table=True):
    """An inference API key. The plaintext is shown once; only its HMAC-SHA256 is stored."""

    __tablename__ = "api_keys"

    id: str = Field(default_factory=lambda: new_id("key"), primary_key=True, max_length=ID_LEN)
    org_id: str = Field(foreign_key="orgs.id", ondelete="CASCADE", index=True, max_length=ID_LEN)
    environment_id: str = Field(foreign_key="environments.id", ondelete="CASCADE", index=True, max_length=ID_LEN)
    name: str = Field(max_length=100)
    prefix: str = Field(max_length=64, description="the first characters of the key, safe to display")
    last4: str = Field(max_length=4)
    key_hash: str = Field(max_length=64, unique=True)
    allowed_models: list[str] | None = Field(default=None, sa_type=JSON)
    created_by: str = Field(max_length=64, description="user id, or 'cli' for an operator")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    rotated_from_id: str | None = Field(default=None, max_length=ID_LEN)


class ApiKeyCreate(LimitsMixin):
    name: str = Field(min_length=1, max_length=100)
    environment: str = Field(max_length=64, description="environment name or id")
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)
    allowed_models: list[str] | None = Field(default=None, max_length=100)


class ApiKeyUpdate(LimitsMixin):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    allowed_models: list[str] | None = Field(default=None, max_length=100)


class ApiKeyRotate(SQLModel):
    grace_hours: int | None = Field(
        default=None, ge=0, le=168, description="how long the old key keeps working (default 24)"
    )


class ApiKeyPublic(SQLModel):
    id: str
    org_id: str
    environment_id: str
    environment: str
    name: str
    display: str = Field(description="prefix…last4, for recognising the key")
    status: str
    allowed_models: list[str] | None
    rpm: int | None
    tpm: int | None
    tpd: int | None
    max_concurrency: int | None
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    rotated_from_id: str | None


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="the plaintext key; shown this once and never again")
