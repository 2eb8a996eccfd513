"""Sign-in with an OpenID provider: sign-ins in flight (``oauth_states``) and linking provider
identities to accounts (``oauth_identities``).

A sign-in's ``state``, ``nonce``, PKCE ``code_verifier`` and return path live in the database between
the redirect to the provider and its callback, so any API worker or instance can finish it. A state is
spent by one conditional UPDATE (unused, unexpired, same provider), so a replayed or concurrent
callback finds it gone.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal
from urllib.parse import urlsplit

from sqlalchemy import delete, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from cic import security
from cic.errors import AuthenticationError, Conflict, ValidationFailed
from cic.models import OAuthIdentity, OAuthState, User
from cic.models.types import utcnow
from cic.oidc import OAuthFailure, VerifiedIdentity
from cic.services import audit, users
from cic.services.authz import Actor

# Keep spent and expired states this long for forensics, then drop them.
STATE_RETENTION = timedelta(days=1)
_NEXT_RE = re.compile(r"^/[A-Za-z0-9\-._~!$&'()*+,;=:@%/?#]*$")


@dataclass(frozen=True)
class PendingSignIn:
    """What the redirect to the provider carries; the database keeps the rest."""

    state: str
    nonce: str
    code_verifier: str


def safe_next(value: str | None) -> str:
    """The dashboard path to return to: relative to the dashboard, never another site.

    ``/orgs/acme?tab=keys`` is fine; ``https://evil.example``, ``//evil.example``, ``/\\evil.example``
    and anything with control characters are refused."""
    if value is None or value == "":
        return "/"
    bad = ValidationFailed(
        "'next' must be a path on the dashboard, such as /orgs/acme.", param="next", code="invalid_next"
    )
    if len(value) > 512 or not _NEXT_RE.match(value) or value.startswith("//"):
        raise bad
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        raise bad
    return value


def begin(session: Session, *, provider: str, next_path: str, pepper: str, ttl_s: int) -> PendingSignIn:
    """Record a sign-in about to be sent to ``provider``."""
    now = utcnow()
    # Housekeeping: forget sign-ins that ended long ago (one indexed DELETE).
    session.exec(delete(OAuthState).where(col(OAuthState.expires_at) < now - STATE_RETENTION))
    pending = PendingSignIn(
        state=secrets.token_urlsafe(32),
        nonce=secrets.token_urlsafe(32),
        code_verifier=secrets.token_urlsafe(64),  # 86 characters, within PKCE's 43-128
    )
    session.add(
        OAuthState(
            state_hash=security.hash_secret(pepper, pending.state),
            provider=provider,
            nonce=pending.nonce,
            code_verifier=pending.code_verifier,
            next_path=next_path,
            expires_at=now + timedelta(seconds=ttl_s),
        )
    )
    session.flush()
    return pending


def consume_state(session: Session, *, provider: str, state: str, pepper: str) -> OAuthState:
    """Spend the sign-in ``state`` names, or raise ``OAuthFailure('oauth_state')``."""
    if not state or len(state) > 256:
        raise OAuthFailure("oauth_state", "missing or oversized state parameter")
    state_hash = security.hash_secret(pepper, state)
    now = utcnow()
    result = session.exec(
        update(OAuthState)
        .where(
            col(OAuthState.state_hash) == state_hash,
            col(OAuthState.provider) == provider,
            col(OAuthState.used_at).is_(None),
            col(OAuthState.expires_at) > now,
        )
        .values(used_at=now)
    )
    row = session.exec(select(OAuthState).where(OAuthState.state_hash == state_hash)).first()
    assert isinstance(result, CursorResult)
    if result.rowcount != 1 or row is None:
        if row is None:
            why = "unknown state"
        elif row.provider != provider:
            why = f"state was issued for {row.provider}"
        elif row.used_at is not None:
            why = "state already used"
        else:
            why = "state expired"
        raise OAuthFailure("oauth_state", why)
    return row


SignInKind = Literal["returning", "linked", "created"]


def resolve_user(session: Session, identity: VerifiedIdentity, *, ip: str = "") -> tuple[User, SignInKind]:
    """The account a verified identity signs in to.

    1. An identity already linked (same provider and subject) → its account.
    2. Otherwise an account with the same email → link the identity to it (the provider vouched for
       the email, so the person owns the address the account was made with).
    3. Otherwise a new account, without a password, and the identity.
    Only identities whose email the provider verified get this far (``OAuthFailure('oauth_email')``).
    """
    if not identity.email_verified:
        raise OAuthFailure("oauth_email", f"{identity.provider} did not verify the email {identity.email}")
    try:
        email = users.normalise_email(identity.email)
    except ValidationFailed as exc:
        raise OAuthFailure("oauth_email", f"unusable email {identity.email!r}") from exc
    now = utcnow()
    linked = session.exec(
        select(OAuthIdentity).where(
            OAuthIdentity.provider == identity.provider, OAuthIdentity.subject == identity.subject
        )
    ).first()
    kind: SignInKind
    if linked is not None:
        user = session.get(User, linked.user_id)
        assert user is not None  # the foreign key cascades
        kind = "returning"
    else:
        existing = users.get_by_email(session, email)
        if existing is not None:
            user, kind = existing, "linked"
        else:
            user = users.create_user(session, email=email, password=None, name=identity.name)
            kind = "created"
        linked = OAuthIdentity(user_id=user.id, provider=identity.provider, subject=identity.subject)
    if user.disabled_at is not None:
        raise OAuthFailure("account_disabled", f"account {user.id} is disabled")
    linked.email = email
    linked.last_login_at = now
    session.add(linked)
    session.flush()
    actor = Actor.user(user.id, ip=ip)
    if kind == "linked":
        audit.record(
            session, actor, "user.identity_linked", target_type="user", target_id=user.id, provider=identity.provider
        )
    audit.record(
        session, actor, "user.signed_in", target_type="user", target_id=user.id, provider=identity.provider, kind=kind
    )
    return user, kind


def sign_in(session: Session, identity: VerifiedIdentity, *, ip: str = "") -> tuple[User, SignInKind]:
    """``resolve_user``, safe against a concurrent first sign-in of the same person: the loser of
    the race (unique email or identity) rolls back to a savepoint and finds the winner's rows."""
    try:
        with session.begin_nested():
            return resolve_user(session, identity, ip=ip)
    except (IntegrityError, Conflict):
        return resolve_user(session, identity, ip=ip)


def refuse_password_login(session: Session, email: str) -> None:
    """After a failed password log-in: when the account has no password and signs in through a
    provider, say so (401) instead of "incorrect password", so the person knows which button to use."""
    try:
        user = users.get_by_email(session, email)
    except ValidationFailed:
        return
    if user is None or user.password_hash is not None:
        return
    providers = sorted({i.provider for i in identities_of(session, user.id)})
    if not providers:
        return
    names = " or ".join(p.capitalize() for p in providers)
    raise AuthenticationError(
        f"This account has no password: it signs in with {names}. Use 'Sign in with {names}' instead.",
        code="use_oauth_provider",
    )


def identities_of(session: Session, user_id: str) -> list[OAuthIdentity]:
    return list(
        session.exec(
            select(OAuthIdentity).where(OAuthIdentity.user_id == user_id).order_by(col(OAuthIdentity.created_at))
        )
    )
