"""Environments: an org's dev / staging / prod (or custom) spaces, each with a region and models."""

from __future__ import annotations

import re

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from cic import events
from cic.errors import Conflict, NotFound, ValidationFailed
from cic.limits import FIELDS, Limits, check_narrows, org_limits
from cic.models import ApiKey, Environment, EnvironmentModel, Org, Role
from cic.models.environments import ENV_NAME_PATTERN, EnvironmentCreate, EnvironmentUpdate
from cic.models.types import utcnow
from cic.services import audit, catalog
from cic.services.authz import Actor, authorize_org

_NAME_RE = re.compile(ENV_NAME_PATTERN)
LIMIT_FIELDS = FIELDS


def org_effective_limits(org: Org) -> Limits:
    return org_limits(org.plan, Limits.of(org))


def check_env_limits(org: Org, env: Environment) -> None:
    check_narrows(org_effective_limits(org), Limits.of(env), "organization", "environment")


# The gateway's routing policies (api/gateway/policies.py registers these names).
ROUTING_POLICIES = ("round_robin", "least_load", "latency", "cost", "prefix_affinity")


def _check_policy(policy: str | None) -> None:
    if policy is not None and policy not in ROUTING_POLICIES:
        raise ValidationFailed(
            f"Unknown routing policy '{policy}'. Choose one of: {', '.join(ROUTING_POLICIES)}.",
            param="routing_policy",
            code="unknown_routing_policy",
        )


def find_env(session: Session, org: Org, ref: str) -> Environment:
    """A live environment of ``org`` by id (``env_…``) or name."""
    q = select(Environment).where(Environment.org_id == org.id, col(Environment.deleted_at).is_(None))
    q = q.where(Environment.id == ref) if ref.startswith("env_") else q.where(Environment.name == ref.lower())
    env = session.exec(q).first()
    if env is None:
        raise NotFound(
            f"Environment '{ref}' not found in '{org.slug}'.", param="environment", code="environment_not_found"
        )
    return env


def enabled_models(session: Session, env_id: str) -> list[str]:
    return list(
        session.exec(
            select(EnvironmentModel.model_id)
            .where(EnvironmentModel.environment_id == env_id)
            .order_by(col(EnvironmentModel.model_id))
        )
    )


def _set_models(session: Session, env: Environment, models: list[str]) -> None:
    for row in session.exec(select(EnvironmentModel).where(EnvironmentModel.environment_id == env.id)):
        session.delete(row)
    session.flush()
    for m in models:
        session.add(EnvironmentModel(environment_id=env.id, model_id=m))


def create_env(session: Session, actor: Actor, org_ref: str, data: EnvironmentCreate) -> Environment:
    org, _ = authorize_org(session, actor, org_ref, Role.admin)
    name = data.name.lower()
    if not _NAME_RE.match(name):
        raise ValidationFailed(
            f"'{data.name}' is not a valid environment name: start with a letter; use up to 31 lower-case "
            "letters, digits and dashes.",
            param="name",
            code="invalid_name",
        )
    catalog.require_region(session, data.region)
    models = catalog.require_models(session, data.models)
    _check_policy(data.routing_policy)
    exists = session.exec(
        select(Environment.id).where(
            Environment.org_id == org.id, Environment.name == name, col(Environment.deleted_at).is_(None)
        )
    ).first()
    if exists:
        raise Conflict(f"Environment '{name}' already exists in '{org.slug}'.", param="name", code="environment_exists")
    env = Environment(
        org_id=org.id,
        name=name,
        region_code=data.region,
        allow_cross_region_failover=data.allow_cross_region_failover,
        routing_policy=data.routing_policy,
        **{f: getattr(data, f) for f in LIMIT_FIELDS},
    )
    check_env_limits(org, env)
    session.add(env)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(
            f"Environment '{name}' already exists in '{org.slug}'.", param="name", code="environment_exists"
        ) from exc
    _set_models(session, env, models)
    audit.record(
        session,
        actor,
        "environment.created",
        org_id=org.id,
        target_type="environment",
        target_id=env.id,
        name=name,
        region=data.region,
        models=models,
    )
    session.flush()
    return env


def list_envs(session: Session, actor: Actor, org_ref: str) -> tuple[Org, list[Environment]]:
    org, _ = authorize_org(session, actor, org_ref)
    envs = session.exec(
        select(Environment)
        .where(Environment.org_id == org.id, col(Environment.deleted_at).is_(None))
        .order_by(col(Environment.created_at))
    )
    return org, list(envs)


def get_env(session: Session, actor: Actor, org_ref: str, env_ref: str) -> tuple[Org, Environment]:
    org, _ = authorize_org(session, actor, org_ref)
    return org, find_env(session, org, env_ref)


def update_env(
    session: Session, actor: Actor, org_ref: str, env_ref: str, data: EnvironmentUpdate
) -> tuple[Org, Environment]:
    org, _ = authorize_org(session, actor, org_ref, Role.admin)
    env = find_env(session, org, env_ref)
    changes = data.model_dump(exclude_unset=True)
    if "region" in changes and changes["region"] is not None:
        catalog.require_region(session, changes["region"])
        env.region_code = changes["region"]
    if changes.get("models") is not None:
        _set_models(session, env, catalog.require_models(session, changes["models"]))
    if "routing_policy" in changes:
        _check_policy(changes["routing_policy"])
        env.routing_policy = changes["routing_policy"]
    if changes.get("allow_cross_region_failover") is not None:
        env.allow_cross_region_failover = changes["allow_cross_region_failover"]
    for f in LIMIT_FIELDS:
        if f in changes:
            setattr(env, f, changes[f])
    check_env_limits(org, env)
    env.updated_at = utcnow()
    session.add(env)
    events.invalidate(session, envs=(env.id,))
    audit.record(
        session,
        actor,
        "environment.updated",
        org_id=org.id,
        target_type="environment",
        target_id=env.id,
        changes=changes,
    )
    session.flush()
    return org, env


def delete_env(session: Session, actor: Actor, org_ref: str, env_ref: str) -> Environment:
    """Retire an environment: its keys are revoked at once and its name becomes free again."""
    org, _ = authorize_org(session, actor, org_ref, Role.admin)
    env = find_env(session, org, env_ref)
    now = utcnow()
    env.deleted_at = now
    session.add(env)
    events.invalidate(session, envs=(env.id,))
    revoked = 0
    for key in session.exec(select(ApiKey).where(ApiKey.environment_id == env.id, col(ApiKey.revoked_at).is_(None))):
        key.revoked_at = now
        session.add(key)
        revoked += 1
    audit.record(
        session,
        actor,
        "environment.deleted",
        org_id=org.id,
        target_type="environment",
        target_id=env.id,
        name=env.name,
        keys_revoked=revoked,
    )
    return env
