from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, UniqueConstraint
from sqlmodel import Field, SQLModel

from cic.models.base import ID_LEN
from cic.models.types import UTCDateTime, new_id, utcnow

SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?$"


class Plan(StrEnum):
    free = "free"
    developer = "developer"
    business = "business"
    enterprise = "enterprise"


class Role(StrEnum):
    owner = "owner"
    admin = "admin"
    member = "member"

    @property
    def rank(self) -> int:
        return {Role.member: 1, Role.admin: 2, Role.owner: 3}[self]


class LimitsMixin(SQLModel):
    """Per-layer limit overrides; ``None`` means inherit from the layer above (or the plan)."""

    rpm: int | None = Field(default=None, ge=1, description="requests per minute")
    tpm: int | None = Field(default=None, ge=1, description="tokens per minute")
    tpd: int | None = Field(default=None, ge=1, description="tokens per day")
    max_concurrency: int | None = Field(default=None, ge=1, description="requests in flight")
    monthly_budget_cents: int | None = Field(
        default=None, ge=1, sa_type=BigInteger, description="spend cap for the calendar month, in US cents"
    )


class OrgBase(SQLModel):
    name: str = Field(min_length=1, max_length=120)


class Org(OrgBase, LimitsMixin, table=True):
    __tablename__ = "orgs"

    id: str = Field(default_factory=lambda: new_id("org"), primary_key=True, max_length=ID_LEN)
    slug: str = Field(max_length=48, unique=True)
    plan: str = Field(default=Plan.free.value, max_length=20)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class OrgCreate(OrgBase):
    slug: str | None = Field(default=None, max_length=48, schema_extra={"pattern": SLUG_PATTERN})
    plan: Plan = Plan.free


class OrgUpdate(LimitsMixin):
    """Name, and limits: an owner or admin may tighten the plan's limits; only an operator may raise
    them or change the plan."""

    name: str | None = Field(default=None, min_length=1, max_length=120)
    plan: Plan | None = None


class OrgPublic(OrgBase):
    id: str
    slug: str
    plan: str
    created_at: datetime
    rpm: int | None
    tpm: int | None
    tpd: int | None
    max_concurrency: int | None
    role: Role | None = None  # the caller's role, when a user asks


class Membership(SQLModel, table=True):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("org_id", "user_id"),)

    id: str = Field(default_factory=lambda: new_id("mem"), primary_key=True, max_length=ID_LEN)
    org_id: str = Field(foreign_key="orgs.id", ondelete="CASCADE", max_length=ID_LEN)
    user_id: str = Field(foreign_key="users.id", ondelete="CASCADE", index=True, max_length=ID_LEN)
    role: str = Field(max_length=16)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class MemberCreate(SQLModel):
    email: str = Field(max_length=320)
    role: Role = Role.member


class MemberUpdate(SQLModel):
    role: Role


class MemberPublic(SQLModel):
    user_id: str
    email: str
    name: str
    role: Role
    created_at: datetime


class Reservation(SQLModel, table=True):
    """Reserved capacity: an org's guaranteed tokens per second of a model in a region. When the model's
    nodes are saturated, reserved traffic is admitted up to this rate and shared traffic waits or is shed."""

    __tablename__ = "reservations"
    __table_args__ = (UniqueConstraint("org_id", "model_id", "region_code"),)

    id: str = Field(default_factory=lambda: new_id("rsv"), primary_key=True, max_length=ID_LEN)
    org_id: str = Field(foreign_key="orgs.id", ondelete="CASCADE", index=True, max_length=ID_LEN)
    model_id: str = Field(foreign_key="models.id", max_length=64)
    region_code: str = Field(foreign_key="regions.code", max_length=32)
    tokens_per_s: int = Field(ge=1)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ReservationPublic(SQLModel):
    id: str
    org_id: str
    model: str
    region: str
    tokens_per_s: int
    created_at: datetime
