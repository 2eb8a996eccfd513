"""Accounts and log-in sessions."""

from __future__ import annotations

from datetime import timedelta

from email_validator import EmailNotValidError, validate_email
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from cic import security
from cic.errors import AuthenticationError, Conflict, NotFound, ValidationFailed
from cic.models import User, UserSession
from cic.models.types import utcnow
from cic.services import audit
from cic.services.authz import Actor


def normalise_email(email: str) -> str:
    try:
        return validate_email(email.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise ValidationFailed(
            f"'{email}' is not a valid email address: {exc}", param="email", code="invalid_email"
        ) from exc


def get_by_email(session: Session, email: str) -> User | None:
    return session.exec(select(User).where(User.email == normalise_email(email))).first()


def create_user(
    session: Session,
    *,
    email: str,
    password: str | None,
    name: str = "",
    is_platform_admin: bool = False,
    actor: Actor | None = None,
) -> User:
    """A new account. ``password=None`` makes one that can only sign in once a password is set."""
    email = normalise_email(email)
    if password is not None:
        security.check_password_strength(password, email)
    if get_by_email(session, email) is not None:
        raise Conflict(f"An account with email '{email}' already exists.", param="email", code="email_taken")
    user = User(
        email=email,
        name=name.strip(),
        password_hash=security.hash_password(password) if password is not None else None,
        is_platform_admin=is_platform_admin,
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent sign-up with the same email
        raise Conflict(f"An account with email '{email}' already exists.", param="email", code="email_taken") from exc
    audit.record(session, actor or Actor.user(user.id), "user.created", target_type="user", target_id=user.id)
    return user


def set_password(session: Session, email: str, password: str, actor: Actor) -> User:
    user = get_by_email(session, email)
    if user is None:
        raise NotFound(f"No account with email '{email}'.", param="email", code="user_not_found")
    security.check_password_strength(password, user.email)
    user.password_hash = security.hash_password(password)
    session.add(user)
    # A new password ends every existing session.
    for s in session.exec(select(UserSession).where(UserSession.user_id == user.id, UserSession.revoked_at == None)):  # noqa: E711
        s.revoked_at = utcnow()
        session.add(s)
    audit.record(session, actor, "user.password_set", target_type="user", target_id=user.id)
    return user


def authenticate(session: Session, email: str, password: str) -> User:
    try:
        email = normalise_email(email)
    except ValidationFailed:
        email = ""
    user = session.exec(select(User).where(User.email == email)).first() if email else None
    ok = security.verify_password(user.password_hash if user else None, password)
    if user is None or not ok or user.disabled_at is not None:
        raise AuthenticationError("Incorrect email or password.")
    return user


def start_session(
    session: Session, user: User, *, pepper: str, ttl_hours: int, user_agent: str = "", ip: str = ""
) -> tuple[str, UserSession]:
    token = security.generate_session_token()
    row = UserSession(
        user_id=user.id,
        token_hash=security.hash_secret(pepper, token),
        expires_at=utcnow() + timedelta(hours=ttl_hours),
        user_agent=user_agent[:300],
        ip=ip[:64],
    )
    session.add(row)
    session.flush()
    return token, row


def resolve_session(session: Session, token: str, *, pepper: str) -> User:
    """The user a session token belongs to, or ``AuthenticationError``."""
    if not token.startswith(security.SESSION_PREFIX + "_"):
        raise AuthenticationError("Invalid session token.", code="invalid_session")
    row = session.exec(select(UserSession).where(UserSession.token_hash == security.hash_secret(pepper, token))).first()
    now = utcnow()
    if row is None or row.revoked_at is not None:
        raise AuthenticationError("Invalid session token.", code="invalid_session")
    if row.expires_at <= now:
        raise AuthenticationError("Session expired; log in again.", code="session_expired")
    user = session.get(User, row.user_id)
    if user is None or user.disabled_at is not None:
        raise AuthenticationError("Invalid session token.", code="invalid_session")
    return user


def end_session(session: Session, token: str, *, pepper: str) -> None:
    row = session.exec(select(UserSession).where(UserSession.token_hash == security.hash_secret(pepper, token))).first()
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
