import pytest
from sqlmodel import Session, select

from cic.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from cic.models import Environment, EnvironmentModel, Role
from cic.models.environments import EnvironmentCreate, EnvironmentUpdate
from cic.services import environments, orgs
from cic.services.authz import Actor
from tests.factories import make_env, make_org, make_user


def test_create_and_list(session: Session) -> None:
    owner = make_user(session)
    org = make_org(session, owner)
    env = make_env(session, owner, org, "staging", "eu-west", ["mistral-7b", "llama-3-8b", "mistral-7b"])
    assert environments.enabled_models(session, env.id) == ["llama-3-8b", "mistral-7b"]
    _, envs = environments.list_envs(session, Actor.user(owner.id), org.slug)
    assert [e.name for e in envs] == ["staging"]


def test_unknown_region_and_models_named_and_nothing_written(session: Session) -> None:
    owner = make_user(session)
    org = make_org(session, owner)
    a = Actor.user(owner.id)
    with pytest.raises(ValidationFailed, match="Unknown region 'mars'"):
        environments.create_env(session, a, org.id, EnvironmentCreate(name="dev", region="mars", models=["llama-3-8b"]))
    with pytest.raises(ValidationFailed, match="'gpt-9', 'llama-5'"):
        environments.create_env(
            session,
            a,
            org.id,
            EnvironmentCreate(name="dev", region="us-east", models=["llama-3-8b", "gpt-9", "llama-5"]),
        )
    session.rollback()
    assert session.exec(select(Environment)).all() == []
    assert session.exec(select(EnvironmentModel)).all() == []


def test_duplicate_name_conflicts_until_deleted(session: Session) -> None:
    owner = make_user(session)
    org = make_org(session, owner)
    make_env(session, owner, org, "dev")
    with pytest.raises(Conflict, match="'dev' already exists"):
        make_env(session, owner, org, "dev")
    session.rollback()
    environments.delete_env(session, Actor.user(owner.id), org.id, "dev")
    session.commit()
    with pytest.raises(NotFound):
        environments.get_env(session, Actor.user(owner.id), org.id, "dev")
    again = make_env(session, owner, org, "dev")
    assert again.deleted_at is None


def test_same_env_name_in_two_orgs(session: Session) -> None:
    a, b = make_user(session), make_user(session)
    make_env(session, a, make_org(session, a), "prod")
    make_env(session, b, make_org(session, b), "prod")


def test_update_and_member_cannot_manage(session: Session) -> None:
    owner, member = make_user(session), make_user(session)
    org = make_org(session, owner)
    orgs.add_member(session, Actor.user(owner.id), org.id, email=member.email, role=Role.member)
    env = make_env(session, owner, org)
    _, env = environments.update_env(
        session,
        Actor.user(owner.id),
        org.id,
        env.id,
        EnvironmentUpdate(models=["qwen-2.5-7b"], rpm=50, region="in-mumbai"),
    )
    session.commit()
    assert environments.enabled_models(session, env.id) == ["qwen-2.5-7b"]
    assert (env.rpm, env.region_code) == (50, "in-mumbai")
    with pytest.raises(PermissionDenied):
        environments.update_env(session, Actor.user(member.id), org.id, env.id, EnvironmentUpdate(rpm=1))
    with pytest.raises(PermissionDenied):
        environments.create_env(
            session, Actor.user(member.id), org.id, EnvironmentCreate(name="x", region="us-east", models=["llama-3-8b"])
        )


def test_bad_env_name() -> None:
    with pytest.raises(ValueError, match="pattern"):
        EnvironmentCreate(name="Prod Env", region="us-east", models=["llama-3-8b"])
