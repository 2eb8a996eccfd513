"""API keys: created (plaintext shown once), listed, limited, revoked, rotated, authenticated."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType

from sqlmodel import Session, col, select

from cic import events, security
from cic.errors import AuthenticationError, NotFound, ValidationFailed
from cic.limits import Limits, check_narrows, org_limits
from cic.models import ApiKey, BillingAccount, Environment, Org, Role
from cic.models.billing import BillingStatus
from cic.models.keys import ApiKeyCreate, ApiKeyUpdate
from cic.models.types import utcnow
from cic.services import audit
from cic.services.authz import Actor, authorize_org
from cic.services.environments import LIMIT_FIELDS, enabled_models, find_env, org_effective_limits
from cic.services.reservations import org_reservations

DEFAULT_ROTATION_GRACE_HOURS = 24


USABLE = frozenset({"active", "rotating"})


def key_status(key: ApiKey, now: datetime | None = None) -> str:
    """``active``; ``rotating`` (replaced, still valid until its grace period ends); ``revoked``; ``expired``."""
    now = now or utcnow()
    if key.revoked_at is not None and key.revoked_at <= now:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    if key.revoked_at is not None:
        return "rotating"
    return "active"


def _check_key_limits(org: Org, env: Environment, key: ApiKey) -> None:
    parent = org_effective_limits(org).narrowed_by(limits_of(env))
    check_narrows(parent, limits_of(key), "environment", "key")


def _check_allowed_models(session: Session, env: Environment, models: list[str] | None) -> list[str] | None:
    if models is None:
        return None
    enabled = set(enabled_models(session, env.id))
    wanted = list(dict.fromkeys(models))
    outside = [m for m in wanted if m not in enabled]
    if outside:
        raise ValidationFailed(
            f"Models not enabled in environment '{env.name}': {', '.join(repr(m) for m in outside)}.",
            param="allowed_models",
            code="unknown_model",
        )
    return wanted


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    env: Environment
    plaintext: str


def create_key(session: Session, actor: Actor, org_ref: str, data: ApiKeyCreate, *, pepper: str) -> CreatedKey:
    org, _ = authorize_org(session, actor, org_ref, Role.admin)
    env = find_env(session, org, data.environment)
    allowed = _check_allowed_models(session, env, data.allowed_models)
    new = security.generate_api_key(pepper, env.name)
    key = ApiKey(
        org_id=org.id,
        environment_id=env.id,
        name=data.name.strip(),
        prefix=new.prefix,
        last4=new.last4,
        key_hash=new.hash,
        allowed_models=allowed,
        created_by=actor.name,
        expires_at=utcnow() + timedelta(days=data.expires_in_days) if data.expires_in_days else None,
        **{f: getattr(data, f) for f in LIMIT_FIELDS},
    )
    _check_key_limits(org, env, key)
    session.add(key)
    audit.record(
        session,
        actor,
        "key.created",
        org_id=org.id,
        target_type="api_key",
        target_id=key.id,
        name=key.name,
        environment=env.name,
        prefix=key.prefix,
    )
    session.flush()
    return CreatedKey(key=key, env=env, plaintext=new.plaintext)


def list_keys(
    session: Session, actor: Actor, org_ref: str, env_ref: str | None = None
) -> tuple[Org, list[tuple[ApiKey, Environment]]]:
    org, _ = authorize_org(session, actor, org_ref)
    q = (
        select(ApiKey, Environment)
        .join(Environment, col(Environment.id) == col(ApiKey.environment_id))
        .where(ApiKey.org_id == org.id)
    )
    if env_ref:
        q = q.where(ApiKey.environment_id == find_env(session, org, env_ref).id)
    return org, list(session.exec(q.order_by(col(ApiKey.created_at).desc())).all())


def _get(session: Session, org: Org, key_id: str) -> tuple[ApiKey, Environment]:
    key = session.get(ApiKey, key_id)
    if key is None or key.org_id != org.id:
        raise NotFound(f"API key '{key_id}' not found in '{org.slug}'.", param="key_id", code="key_not_found")
    env = session.get(Environment, key.environment_id)
    assert env is not None
    return key, env


def get_key(session: Session, actor: Actor, org_ref: str, key_id: str) -> tuple[ApiKey, Environment]:
    org, _ = authorize_org(session, actor, org_ref)
    return _get(session, org, key_id)


def update_key(
    session: Session, actor: Actor, org_ref: str, key_id: str, data: ApiKeyUpdate
) -> tuple[ApiKey, Environment]:
    org, _ = authorize_org(session, actor, org_ref, Role.admin)
    key, env = _get(session, org, key_id)
    changes = data.model_dump(exclude_unset=True)
    if changes.get("name"):
        key.name = changes["name"].strip()
    if "allowed_models" in changes:
        key.allowed_models = _check_allowed_models(session, env, changes["allowed_models"])
    for f in LIMIT_FIELDS:
        if f in changes:
            setattr(key, f, changes[f])
    _check_key_limits(org, env, key)
    session.add(key)
    events.invalidate(session, keys=(key.id,))
    audit.record(session, actor, "key.updated", org_id=org.id, target_type="api_key", target_id=key.id, changes=changes)
    return key, env


def revoke_key(session: Session, actor: Actor, org_ref: str, key_id: str) -> tuple[ApiKey, Environment]:
    """Revoke now. Revoking an already revoked key changes nothing and is not an error."""
    org, _ = authorize_org(session, actor, org_ref, Role.admin)
    key, env = _get(session, org, key_id)
    now = utcnow()
    if key.revoked_at is None or key.revoked_at > now:
        key.revoked_at = now
        session.add(key)
        events.invalidate(session, keys=(key.id,))
        audit.record(session, actor, "key.revoked", org_id=org.id, target_type="api_key", target_id=key.id)
    return key, env


def rotate_key(
    session: Session, actor: Actor, org_ref: str, key_id: str, *, pepper: str, grace_hours: int | None = None
) -> tuple[CreatedKey, ApiKey]:
    """A new key with the same settings; the old one keeps working for ``grace_hours`` (default 24)."""
    org, _ = authorize_org(session, actor, org_ref, Role.admin)
    old, env = _get(session, org, key_id)
    now = utcnow()
    if key_status(old, now) != "active":
        raise ValidationFailed(
            f"API key '{key_id}' is {key_status(old, now)} and cannot be rotated.", param="key_id", code="key_inactive"
        )
    grace = DEFAULT_ROTATION_GRACE_HOURS if grace_hours is None else grace_hours
    new = security.generate_api_key(pepper, env.name)
    replacement = ApiKey(
        org_id=org.id,
        environment_id=env.id,
        name=old.name,
        prefix=new.prefix,
        last4=new.last4,
        key_hash=new.hash,
        allowed_models=old.allowed_models,
        created_by=actor.name,
        expires_at=old.expires_at,
        rotated_from_id=old.id,
        **{f: getattr(old, f) for f in LIMIT_FIELDS},
    )
    session.add(replacement)
    # The old key stops at the end of the grace period, never later than it would have anyway.
    cutoff = now + timedelta(hours=grace)
    old.revoked_at = min(cutoff, old.expires_at) if old.expires_at else cutoff
    session.add(old)
    events.invalidate(session, keys=(old.id,))
    audit.record(
        session,
        actor,
        "key.rotated",
        org_id=org.id,
        target_type="api_key",
        target_id=old.id,
        replacement=replacement.id,
        old_key_valid_until=old.revoked_at.isoformat(),
    )
    session.flush()
    return CreatedKey(key=replacement, env=env, plaintext=new.plaintext), old


@dataclass(frozen=True)
class KeyIdentity:
    """What the data plane needs to know about a presented key."""

    key_id: str
    org_id: str
    org_slug: str
    environment_id: str
    environment: str
    region: str
    allow_cross_region: bool
    routing_policy: str | None
    models: tuple[str, ...]
    allowed_models: tuple[str, ...] | None
    expires_at: datetime | None
    revoked_at: datetime | None
    org_limits: Limits
    env_limits: Limits
    key_limits: Limits
    reservations: Mapping[tuple[str, str], int]  # (model, region) -> reserved tokens per second
    past_due_since: datetime | None = None  # the org's first failed payment, while it is unpaid

    @property
    def valid_until(self) -> datetime | None:
        """When the key stops working: its expiry, or the end of a rotation's grace period."""
        ends = [t for t in (self.expires_at, self.revoked_at) if t is not None]
        return min(ends) if ends else None

    def may_use(self, model: str) -> bool:
        return model in self.models and (self.allowed_models is None or model in self.allowed_models)


def authenticate_key(session: Session, plaintext: str, *, pepper: str) -> KeyIdentity:
    """Resolve a presented key, refusing unknown, revoked and expired ones (401)."""
    if not security.looks_like_api_key(plaintext):
        raise AuthenticationError("Incorrect API key provided.", code="invalid_api_key")
    return identity_by_hash(session, security.hash_secret(pepper, plaintext))


def identity_by_hash(session: Session, key_hash: str) -> KeyIdentity:
    row = session.exec(
        select(ApiKey, Environment, Org)
        .join(Environment, col(Environment.id) == col(ApiKey.environment_id))
        .join(Org, col(Org.id) == col(ApiKey.org_id))
        .where(ApiKey.key_hash == key_hash)
    ).first()
    if row is None:
        raise AuthenticationError("Incorrect API key provided.", code="invalid_api_key")
    key, env, org = row
    status = key_status(key)
    if status not in USABLE or env.deleted_at is not None:
        reason = "expired" if status == "expired" else "revoked"
        raise AuthenticationError(f"This API key is {reason}.", code="invalid_api_key")
    return KeyIdentity(
        key_id=key.id,
        org_id=key.org_id,
        org_slug=org.slug,
        environment_id=env.id,
        environment=env.name,
        region=env.region_code,
        allow_cross_region=env.allow_cross_region_failover,
        routing_policy=env.routing_policy,
        models=tuple(enabled_models(session, env.id)),
        allowed_models=tuple(key.allowed_models) if key.allowed_models is not None else None,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        org_limits=org_limits(org.plan, limits_of(org)),
        env_limits=limits_of(env),
        key_limits=limits_of(key),
        reservations=MappingProxyType(org_reservations(session, org.id)),
        past_due_since=_past_due_since(session, org.id),
    )


def _past_due_since(session: Session, org_id: str) -> datetime | None:
    acct = session.get(BillingAccount, org_id)
    if acct is None or acct.status != BillingStatus.past_due.value:
        return None
    return acct.past_due_since


def limits_of(row: Org | Environment | ApiKey) -> Limits:
    return Limits.of(row)
