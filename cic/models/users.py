from __future__ import annotations

from datetime import datetime

from pydantic import EmailStr
from sqlmodel import Field, SQLModel

from cic.models.base import ID_LEN
from cic.models.types import UTCDateTime, new_id, utcnow


class UserBase(SQLModel):
    email: EmailStr = Field(max_length=320)
    name: str = Field(default="", max_length=200)


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: str = Field(default_factory=lambda: new_id("usr"), primary_key=True, max_length=ID_LEN)
    email: str = Field(max_length=320, unique=True)
    name: str = Field(default="", max_length=200)
    # None for accounts made by an operator or through OAuth until a password is set.
    password_hash: str | None = Field(default=None, max_length=255)
    is_platform_admin: bool = Field(default=False)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    disabled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class UserCreate(UserBase):
    password: str = Field(max_length=256)


class UserLogin(SQLModel):
    email: EmailStr
    password: str = Field(max_length=256)


class UserPublic(SQLModel):
    id: str
    email: str
    name: str
    is_platform_admin: bool
    created_at: datetime


class UserSession(SQLModel, table=True):
    """A dashboard / management-API log-in. Only the token's HMAC is stored."""

    __tablename__ = "user_sessions"

    id: str = Field(default_factory=lambda: new_id("ses"), primary_key=True, max_length=ID_LEN)
    user_id: str = Field(foreign_key="users.id", ondelete="CASCADE", index=True, max_length=ID_LEN)
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    user_agent: str = Field(default="", max_length=300)
    ip: str = Field(default="", max_length=64)


class SessionToken(SQLModel):
    token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_at: datetime
    user: UserPublic
