"""Table rows to the public shapes the API and the CLI return (never a hash, never a secret)."""

from __future__ import annotations

from sqlmodel import Session

from cic.models import ApiKey, Environment, Membership, Org, Role, User
from cic.models.environments import EnvironmentPublic
from cic.models.keys import ApiKeyCreated, ApiKeyPublic
from cic.models.orgs import MemberPublic, OrgPublic
from cic.models.users import UserPublic
from cic.services.environments import enabled_models
from cic.services.keys import CreatedKey, key_status


def user_public(user: User) -> UserPublic:
    return UserPublic.model_validate(user, from_attributes=True)


def org_public(org: Org, role: Role | None = None) -> OrgPublic:
    out = OrgPublic.model_validate(org, from_attributes=True)
    out.role = role
    return out


def member_public(m: Membership, user: User) -> MemberPublic:
    return MemberPublic(user_id=user.id, email=user.email, name=user.name, role=Role(m.role), created_at=m.created_at)


def env_base_url(public_base_url: str, org: Org, env: Environment) -> str:
    return f"{public_base_url}/{org.slug}/{env.name}/v1"


def env_public(session: Session, org: Org, env: Environment, public_base_url: str) -> EnvironmentPublic:
    return EnvironmentPublic(
        id=env.id,
        org_id=env.org_id,
        name=env.name,
        region=env.region_code,
        models=enabled_models(session, env.id),
        allow_cross_region_failover=env.allow_cross_region_failover,
        routing_policy=env.routing_policy,
        rpm=env.rpm,
        tpm=env.tpm,
        tpd=env.tpd,
        max_concurrency=env.max_concurrency,
        base_url=env_base_url(public_base_url, org, env),
        created_at=env.created_at,
        updated_at=env.updated_at,
    )


def key_public(key: ApiKey, env: Environment) -> ApiKeyPublic:
    return ApiKeyPublic(
        id=key.id,
        org_id=key.org_id,
        environment_id=env.id,
        environment=env.name,
        name=key.name,
        display=f"{key.prefix}…{key.last4}",
        status=key_status(key),
        allowed_models=key.allowed_models,
        rpm=key.rpm,
        tpm=key.tpm,
        tpd=key.tpd,
        max_concurrency=key.max_concurrency,
        created_by=key.created_by,
        created_at=key.created_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        last_used_at=key.last_used_at,
        rotated_from_id=key.rotated_from_id,
    )


def key_created(created: CreatedKey) -> ApiKeyCreated:
    return ApiKeyCreated(**key_public(created.key, created.env).model_dump(), key=created.plaintext)
