"""Sign-in through OpenID Connect providers (Google, Microsoft): linked identities and pending sign-ins."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from cic.models.base import ID_LEN
from cic.models.types import UTCDateTime, new_id, utcnow


class OAuthIdentity(SQLModel, table=True):
    """An account at a provider, linked to one of our users. The provider's ``sub`` is the key: the
    email can change at the provider and is only a copy of what it last said."""

    __tablename__ = "oauth_identities"
    __table_args__ = (UniqueConstraint("provider", "subject"),)

    id: str = Field(default_factory=lambda: new_id("oid"), primary_key=True, max_length=ID_LEN)
    user_id: str = Field(foreign_key="users.id", ondelete="CASCADE", index=True, max_length=ID_LEN)
    provider: str = Field(max_length=32)
    subject: str = Field(max_length=255)
    email: str = Field(default="", max_length=320)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_login_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class OAuthState(SQLModel, table=True):
    """One sign-in in flight, between the redirect to the provider and its callback. Kept in the
    database so any worker of any instance can finish it; used once, then spent."""

    __tablename__ = "oauth_states"

    id: str = Field(default_factory=lambda: new_id("ost"), primary_key=True, max_length=ID_LEN)
    # HMAC of the ``state`` parameter under the key pepper (the value itself travels in URLs).
    state_hash: str = Field(max_length=64, unique=True)
    provider: str = Field(max_length=32)
    nonce: str = Field(max_length=128)
    code_verifier: str = Field(max_length=128)
    next_path: str = Field(default="/", max_length=512)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class OAuthProviderPublic(SQLModel):
    id: str
    name: str
