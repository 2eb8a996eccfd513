from __future__ import annotations

from fastapi import APIRouter, status

from api.deps import ActorDep, SessionDep, SettingsDep
from cic.models.environments import EnvironmentCreate, EnvironmentPublic, EnvironmentUpdate
from cic.services import environments
from cic.views import env_public

router = APIRouter(prefix="/orgs/{org}/environments", tags=["environments"])


@router.get("", response_model=list[EnvironmentPublic])
def list_envs(org: str, actor: ActorDep, session: SessionDep, settings: SettingsDep) -> list[EnvironmentPublic]:
    row, envs = environments.list_envs(session, actor, org)
    return [env_public(session, row, e, settings.public_base_url) for e in envs]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=EnvironmentPublic)
def create_env(
    org: str, body: EnvironmentCreate, actor: ActorDep, session: SessionDep, settings: SettingsDep
) -> EnvironmentPublic:
    """Create an environment in a region with the models it may call (owners and admins)."""
    env = environments.create_env(session, actor, org, body)
    session.commit()
    row, _ = environments.get_env(session, actor, org, env.id)
    return env_public(session, row, env, settings.public_base_url)


@router.get("/{env}", response_model=EnvironmentPublic)
def get_env(org: str, env: str, actor: ActorDep, session: SessionDep, settings: SettingsDep) -> EnvironmentPublic:
    row, e = environments.get_env(session, actor, org, env)
    return env_public(session, row, e, settings.public_base_url)


@router.patch("/{env}", response_model=EnvironmentPublic)
def update_env(
    org: str, env: str, body: EnvironmentUpdate, actor: ActorDep, session: SessionDep, settings: SettingsDep
) -> EnvironmentPublic:
    row, e = environments.update_env(session, actor, org, env, body)
    session.commit()
    return env_public(session, row, e, settings.public_base_url)


@router.delete("/{env}", status_code=status.HTTP_204_NO_CONTENT)
def delete_env(org: str, env: str, actor: ActorDep, session: SessionDep) -> None:
    """Delete an environment; its keys stop working at once. Its usage history is kept."""
    environments.delete_env(session, actor, org, env)
    session.commit()
