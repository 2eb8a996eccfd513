from __future__ import annotations

from fastapi import APIRouter, status

from api.deps import ActorDep, SessionDep, SettingsDep
from cic.models.keys import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic, ApiKeyRotate, ApiKeyUpdate
from cic.services import keys
from cic.views import key_created, key_public

router = APIRouter(prefix="/orgs/{org}/keys", tags=["keys"])


@router.get("", response_model=list[ApiKeyPublic])
def list_keys(org: str, actor: ActorDep, session: SessionDep, environment: str | None = None) -> list[ApiKeyPublic]:
    _, rows = keys.list_keys(session, actor, org, environment)
    return [key_public(k, e) for k, e in rows]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated)
def create_key(
    org: str, body: ApiKeyCreate, actor: ActorDep, session: SessionDep, settings: SettingsDep
) -> ApiKeyCreated:
    """Create an API key. The plaintext ``key`` is in this response only; store it now."""
    created = keys.create_key(session, actor, org, body, pepper=settings.key_pepper.get_secret_value())
    session.commit()
    return key_created(created)


@router.get("/{key_id}", response_model=ApiKeyPublic)
def get_key(org: str, key_id: str, actor: ActorDep, session: SessionDep) -> ApiKeyPublic:
    return key_public(*keys.get_key(session, actor, org, key_id))


@router.patch("/{key_id}", response_model=ApiKeyPublic)
def update_key(org: str, key_id: str, body: ApiKeyUpdate, actor: ActorDep, session: SessionDep) -> ApiKeyPublic:
    key, env = keys.update_key(session, actor, org, key_id, body)
    session.commit()
    return key_public(key, env)


@router.post("/{key_id}/revoke", response_model=ApiKeyPublic)
def revoke_key(org: str, key_id: str, actor: ActorDep, session: SessionDep) -> ApiKeyPublic:
    """Revoke a key now. Idempotent."""
    key, env = keys.revoke_key(session, actor, org, key_id)
    session.commit()
    return key_public(key, env)


@router.post("/{key_id}/rotate", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated)
def rotate_key(
    org: str,
    key_id: str,
    actor: ActorDep,
    session: SessionDep,
    settings: SettingsDep,
    body: ApiKeyRotate | None = None,
) -> ApiKeyCreated:
    """Issue a replacement key; the old one keeps working for ``grace_hours`` (default 24), then stops."""
    created, _old = keys.rotate_key(
        session,
        actor,
        org,
        key_id,
        pepper=settings.key_pepper.get_secret_value(),
        grace_hours=body.grace_hours if body else None,
    )
    session.commit()
    return key_created(created)
