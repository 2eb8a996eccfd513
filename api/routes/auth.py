from __future__ import annotations

from fastapi import APIRouter, Request, status
from pydantic import BaseModel

from api.deps import CurrentUser, SessionDep, SessionTokenDep, SettingsDep
from cic.errors import AuthenticationError
from cic.models.orgs import OrgPublic
from cic.models.users import SessionToken, UserCreate, UserLogin, UserPublic
from cic.services import oauth, orgs, users
from cic.services.authz import Actor
from cic.views import org_public, user_public

router = APIRouter(prefix="/auth", tags=["auth"])


def _issue(request: Request, session: SessionDep, settings: SettingsDep, user_id: str) -> SessionToken:
    user = session.get(users.User, user_id)
    assert user is not None
    token, row = users.start_session(
        session,
        user,
        pepper=settings.key_pepper.get_secret_value(),
        ttl_hours=settings.session_ttl_hours,
        user_agent=request.headers.get("user-agent", ""),
        ip=request.client.host if request.client else "",
    )
    session.commit()
    return SessionToken(token=token, expires_at=row.expires_at, user=user_public(user))


@router.post("/signup", status_code=status.HTTP_201_CREATED, response_model=SessionToken)
def signup(body: UserCreate, request: Request, session: SessionDep, settings: SettingsDep) -> SessionToken:
    """Create an account with email and password; answers with a session token."""
    user = users.create_user(session, email=body.email, password=body.password, name=body.name)
    return _issue(request, session, settings, user.id)


@router.post("/login", response_model=SessionToken)
def login(body: UserLogin, request: Request, session: SessionDep, settings: SettingsDep) -> SessionToken:
    try:
        user = users.authenticate(session, body.email, body.password)
    except AuthenticationError:
        # An account made through Google / Microsoft has no password: say which button to use.
        oauth.refuse_password_login(session, body.email)
        raise
    return _issue(request, session, settings, user.id)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(session: SessionDep, settings: SettingsDep, token: SessionTokenDep) -> None:
    users.end_session(session, token, pepper=settings.key_pepper.get_secret_value())
    session.commit()


class Me(BaseModel):
    user: UserPublic
    orgs: list[OrgPublic]


@router.get("/me", response_model=Me)
def me(user: CurrentUser, session: SessionDep) -> Me:
    actor = Actor.user(user.id)
    return Me(user=user_public(user), orgs=[org_public(o, r) for o, r in orgs.list_orgs(session, actor)])
