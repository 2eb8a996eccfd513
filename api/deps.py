"""Everything a route can ask for, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlmodel import Session

from cic import events
from cic.errors import AuthenticationError, PermissionDenied
from cic.models import User
from cic.services import users
from cic.services.authz import Actor
from cic.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_db(request: Request, engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    """A session per request. Routes commit what they change; anything uncommitted is rolled back.
    After a commit, what the change invalidates is published to every worker's caches."""
    with Session(engine, expire_on_commit=False) as session:
        events.attach_publisher(session, request.app.state.publisher)
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_db)]

_bearer = HTTPBearer(auto_error=False, description="A session token from /api/v1/auth/login")


def get_session_token(
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise AuthenticationError(
            "Log in first: send 'Authorization: Bearer <session token>'.", code="missing_credentials"
        )
    return creds.credentials


SessionTokenDep = Annotated[str, Depends(get_session_token)]


def get_current_user(session: SessionDep, settings: SettingsDep, token: SessionTokenDep) -> User:
    return users.resolve_session(session, token, pepper=settings.key_pepper.get_secret_value())


CurrentUser = Annotated[User, Depends(get_current_user)]


def get_actor(request: Request, user: CurrentUser) -> Actor:
    ip = request.client.host if request.client else ""
    return Actor.user(user.id, is_platform_admin=user.is_platform_admin, ip=ip)


ActorDep = Annotated[Actor, Depends(get_actor)]


def get_platform_admin(user: CurrentUser, actor: ActorDep) -> Actor:
    if not user.is_platform_admin:
        raise PermissionDenied("This needs a platform operator account.", code="not_platform_admin")
    return actor


AdminDep = Annotated[Actor, Depends(get_platform_admin)]
