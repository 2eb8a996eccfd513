from datetime import timedelta

import pytest
from sqlmodel import Session, select

from cic.errors import AuthenticationError, NotFound, PermissionDenied, ValidationFailed
from cic.models import ApiKey, Role
from cic.models.keys import ApiKeyCreate, ApiKeyUpdate
from cic.models.types import utcnow
from cic.services import environments, keys, orgs
from cic.services.authz import Actor
from tests.factories import make_env, make_org, make_user


@pytest.fixture
def setup(session: Session) -> tuple[Actor, str]:
    owner = make_user(session)
    org = make_org(session, owner)
    make_env(session, owner, org, "prod", models=["llama-3-8b", "mistral-7b"])
    return Actor.user(owner.id), org.slug


def _create(session: Session, actor: Actor, org: str, pepper: str, **kw: object) -> keys.CreatedKey:
    created = keys.create_key(
        session,
        actor,
        org,
        ApiKeyCreate(name="svc", environment="prod", **kw),  # type: ignore[arg-type]
        pepper=pepper,
    )
    session.commit()
    return created


def test_create_stores_only_hash_and_authenticates(session: Session, setup: tuple[Actor, str], pepper: str) -> None:
    actor, org = setup
    created = _create(session, actor, org, pepper, rpm=10)
    assert created.plaintext.startswith("clsk_prod_")
    row = session.get(ApiKey, created.key.id)
    assert row is not None
    assert created.plaintext not in {row.key_hash, row.prefix, row.last4}
    ident = keys.authenticate_key(session, created.plaintext, pepper=pepper)
    assert ident.key_id == row.id and ident.environment == "prod" and ident.region == "us-east"
    assert ident.models == ("llama-3-8b", "mistral-7b")
    with pytest.raises(AuthenticationError):
        keys.authenticate_key(
            session, created.plaintext[:-1] + ("A" if created.plaintext[-1] != "A" else "B"), pepper=pepper
        )
    with pytest.raises(AuthenticationError):
        keys.authenticate_key(session, created.plaintext, pepper="wrong-pepper")


def test_revoke_is_immediate_and_idempotent(session: Session, setup: tuple[Actor, str], pepper: str) -> None:
    actor, org = setup
    created = _create(session, actor, org, pepper)
    keys.revoke_key(session, actor, org, created.key.id)
    session.commit()
    with pytest.raises(AuthenticationError, match="revoked"):
        keys.authenticate_key(session, created.plaintext, pepper=pepper)
    key, _ = keys.revoke_key(session, actor, org, created.key.id)
    assert keys.key_status(key) == "revoked"


def test_expiry(session: Session, setup: tuple[Actor, str], pepper: str) -> None:
    actor, org = setup
    created = _create(session, actor, org, pepper, expires_in_days=1)
    assert created.key.expires_at is not None
    assert timedelta(hours=23) < created.key.expires_at - utcnow() <= timedelta(days=1)
    keys.authenticate_key(session, created.plaintext, pepper=pepper)
    created.key.expires_at = utcnow() - timedelta(seconds=1)
    session.add(created.key)
    session.commit()
    with pytest.raises(AuthenticationError, match="expired"):
        keys.authenticate_key(session, created.plaintext, pepper=pepper)


def test_rotate_keeps_old_key_for_grace_period(session: Session, setup: tuple[Actor, str], pepper: str) -> None:
    actor, org = setup
    old = _create(session, actor, org, pepper, rpm=7, allowed_models=["mistral-7b"])
    new, old_row = keys.rotate_key(session, actor, org, old.key.id, pepper=pepper, grace_hours=2)
    session.commit()
    assert new.plaintext != old.plaintext
    assert (new.key.rpm, new.key.allowed_models, new.key.rotated_from_id) == (7, ["mistral-7b"], old.key.id)
    assert keys.key_status(old_row) == "rotating"
    assert old_row.revoked_at is not None
    assert timedelta(hours=1, minutes=59) < old_row.revoked_at - utcnow() <= timedelta(hours=2)
    keys.authenticate_key(session, old.plaintext, pepper=pepper)  # still valid during grace
    keys.authenticate_key(session, new.plaintext, pepper=pepper)
    with pytest.raises(ValidationFailed, match="rotating"):
        keys.rotate_key(session, actor, org, old.key.id, pepper=pepper)
    session.rollback()
    # Grace 0: the old key stops at once.
    new2, _ = keys.rotate_key(session, actor, org, new.key.id, pepper=pepper, grace_hours=0)
    session.commit()
    with pytest.raises(AuthenticationError):
        keys.authenticate_key(session, new.plaintext, pepper=pepper)
    keys.authenticate_key(session, new2.plaintext, pepper=pepper)


def test_allowed_models_must_be_enabled(session: Session, setup: tuple[Actor, str], pepper: str) -> None:
    actor, org = setup
    with pytest.raises(ValidationFailed, match="'gemma-7b'"):
        _create(session, actor, org, pepper, allowed_models=["gemma-7b"])
    session.rollback()
    created = _create(session, actor, org, pepper)
    with pytest.raises(ValidationFailed):
        keys.update_key(session, actor, org, created.key.id, ApiKeyUpdate(allowed_models=["phi-3-mini"]))
    session.rollback()
    key, _ = keys.update_key(session, actor, org, created.key.id, ApiKeyUpdate(name="renamed", tpm=1000))
    session.commit()
    assert (key.name, key.tpm) == ("renamed", 1000)


def test_deleting_environment_revokes_its_keys(session: Session, setup: tuple[Actor, str], pepper: str) -> None:
    actor, org = setup
    created = _create(session, actor, org, pepper)
    environments.delete_env(session, actor, org, "prod")
    session.commit()
    with pytest.raises(AuthenticationError):
        keys.authenticate_key(session, created.plaintext, pepper=pepper)


def test_only_owner_admin_manage_keys_and_orgs_are_isolated(session: Session, pepper: str) -> None:
    owner, member, admin, other = (make_user(session) for _ in range(4))
    org = make_org(session, owner)
    make_env(session, owner, org)
    o = Actor.user(owner.id)
    orgs.add_member(session, o, org.id, email=member.email, role=Role.member)
    orgs.add_member(session, o, org.id, email=admin.email, role=Role.admin)
    session.commit()
    created = _create(session, Actor.user(admin.id), org.id, pepper)
    with pytest.raises(PermissionDenied):
        _create(session, Actor.user(member.id), org.id, pepper)
    with pytest.raises(PermissionDenied):
        keys.revoke_key(session, Actor.user(member.id), org.id, created.key.id)
    _, listed = keys.list_keys(session, Actor.user(member.id), org.id)  # members may read
    assert [k.id for k, _ in listed] == [created.key.id]

    other_org = make_org(session, other)
    make_env(session, other, other_org)
    with pytest.raises(NotFound):
        keys.list_keys(session, Actor.user(other.id), org.id)
    with pytest.raises(NotFound):  # a key id of org A through org B
        keys.revoke_key(session, Actor.user(other.id), other_org.id, created.key.id)
    session.rollback()
    assert session.exec(select(ApiKey).where(ApiKey.id == created.key.id)).one().revoked_at is None
