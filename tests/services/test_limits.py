import pytest
from sqlmodel import Session

from cic.errors import PermissionDenied, ValidationFailed
from cic.limits import PLAN_LIMITS, Limits, org_limits
from cic.models import Plan
from cic.models.environments import EnvironmentUpdate
from cic.models.keys import ApiKeyCreate, ApiKeyUpdate
from cic.models.orgs import OrgUpdate
from cic.services import environments, keys, orgs
from cic.services.authz import Actor
from tests.factories import make_env, make_org, make_user


def test_plan_defaults_from_the_seeds() -> None:
    assert PLAN_LIMITS["free"] == Limits(rpm=60, tpd=100_000)
    assert PLAN_LIMITS["developer"] == Limits(rpm=600, tpd=10_000_000)
    assert PLAN_LIMITS["business"] == Limits(rpm=6_000, tpd=100_000_000)
    assert org_limits("free", Limits(rpm=30)) == Limits(rpm=30, tpd=100_000)
    assert org_limits("enterprise", Limits()) == Limits()


def test_limits_only_narrow(session: Session, pepper: str) -> None:
    owner = make_user(session)
    org = make_org(session, owner)
    actor = Actor.user(owner.id)
    env = make_env(session, owner, org)
    with pytest.raises(ValidationFailed, match="cannot exceed the organization's"):
        environments.update_env(session, actor, org.id, env.id, EnvironmentUpdate(rpm=61))
    session.rollback()
    environments.update_env(session, actor, org.id, env.id, EnvironmentUpdate(rpm=40, tpm=5000))
    session.commit()
    with pytest.raises(ValidationFailed, match="key's rpm"):
        keys.create_key(session, actor, org.id, ApiKeyCreate(name="k", environment="prod", rpm=41), pepper=pepper)
    session.rollback()
    created = keys.create_key(session, actor, org.id, ApiKeyCreate(name="k", environment="prod", rpm=10), pepper=pepper)
    session.commit()
    with pytest.raises(ValidationFailed, match="tpm"):
        keys.update_key(session, actor, org.id, created.key.id, ApiKeyUpdate(tpm=6000))
    session.rollback()


def test_members_tighten_operators_raise(session: Session) -> None:
    owner = make_user(session)
    org = make_org(session, owner)
    actor = Actor.user(owner.id)
    orgs.update_org(session, actor, org.id, OrgUpdate(rpm=30))
    session.commit()
    with pytest.raises(ValidationFailed, match="free plan"):
        orgs.update_org(session, actor, org.id, OrgUpdate(rpm=600))
    session.rollback()
    with pytest.raises(PermissionDenied):
        orgs.update_org(session, actor, org.id, OrgUpdate(plan=Plan.business))
    session.rollback()
    row = orgs.update_org(session, Actor.system(), org.id, OrgUpdate(plan=Plan.business, rpm=10_000))
    session.commit()
    assert (row.plan, row.rpm) == ("business", 10_000)
