import pytest
from sqlmodel import Session, select

from cic.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from cic.models import AuditEvent, Membership, Org, Role
from cic.services import orgs
from cic.services.authz import Actor, authorize_org
from tests.factories import make_org, make_user


def test_create_org_makes_owner_and_audit(session: Session) -> None:
    owner = make_user(session)
    org = orgs.create_org(session, Actor.user(owner.id), name="Acme Labs!", owner=owner)
    session.commit()
    assert org.slug == "acme-labs"
    m = session.exec(select(Membership).where(Membership.org_id == org.id)).one()
    assert (m.user_id, m.role) == (owner.id, "owner")
    assert session.exec(select(AuditEvent).where(AuditEvent.action == "org.created")).one().org_id == org.id


def test_duplicate_slug_conflicts_and_leaves_nothing(session: Session) -> None:
    owner = make_user(session)
    make_org(session, owner, "Acme")
    with pytest.raises(Conflict, match="slug 'acme' is taken"):
        orgs.create_org(session, Actor.user(owner.id), name="ACME", owner=owner)
    session.rollback()
    assert len(session.exec(select(Org)).all()) == 1


def test_invalid_slug(session: Session) -> None:
    owner = make_user(session)
    with pytest.raises(ValidationFailed):
        orgs.create_org(session, Actor.user(owner.id), name="x", owner=owner, slug="-Bad Slug-")
    with pytest.raises(ValidationFailed):
        orgs.create_org(session, Actor.user(owner.id), name="!!!", owner=owner)


def test_outsider_sees_not_found_member_sees_forbidden(session: Session) -> None:
    owner, member, outsider = make_user(session), make_user(session), make_user(session)
    org = make_org(session, owner)
    orgs.add_member(session, Actor.user(owner.id), org.slug, email=member.email, role=Role.member)
    session.commit()
    with pytest.raises(NotFound):
        authorize_org(session, Actor.user(outsider.id), org.slug)
    assert authorize_org(session, Actor.user(member.id), org.slug)[1] is Role.member
    with pytest.raises(PermissionDenied):
        authorize_org(session, Actor.user(member.id), org.slug, Role.admin)


def test_roles_and_last_owner(session: Session) -> None:
    owner, admin, other = make_user(session), make_user(session), make_user(session)
    org = make_org(session, owner)
    o, a = Actor.user(owner.id), Actor.user(admin.id)
    orgs.add_member(session, o, org.id, email=admin.email, role=Role.admin)
    session.commit()
    with pytest.raises(PermissionDenied, match="Only an owner"):
        orgs.add_member(session, a, org.id, email=other.email, role=Role.owner)
    orgs.add_member(session, a, org.id, email=other.email, role=Role.member)
    with pytest.raises(Conflict):
        orgs.add_member(session, a, org.id, email=other.email, role=Role.member)
    with pytest.raises(PermissionDenied):
        orgs.change_role(session, a, org.id, owner.id, Role.member)
    with pytest.raises(Conflict, match="at least one owner"):
        orgs.change_role(session, o, org.id, owner.id, Role.admin)
    with pytest.raises(Conflict, match="at least one owner"):
        orgs.remove_member(session, o, org.id, owner.id)
    orgs.change_role(session, o, org.id, admin.id, Role.owner)
    orgs.change_role(session, o, org.id, owner.id, Role.member)  # two owners now; one may step down
    session.commit()
    roles = {u.email: m.role for m, u in orgs.list_members(session, o, org.id)}
    assert roles == {owner.email: "member", admin.email: "owner", other.email: "member"}


def test_member_may_leave_but_not_remove_others(session: Session) -> None:
    owner, m1, m2 = make_user(session), make_user(session), make_user(session)
    org = make_org(session, owner)
    for u in (m1, m2):
        orgs.add_member(session, Actor.user(owner.id), org.id, email=u.email, role=Role.member)
    session.commit()
    with pytest.raises(PermissionDenied):
        orgs.remove_member(session, Actor.user(m1.id), org.id, m2.id)
    orgs.remove_member(session, Actor.user(m1.id), org.id, m1.id)
    session.commit()
    with pytest.raises(NotFound):
        authorize_org(session, Actor.user(m1.id), org.id)


def test_add_unknown_email(session: Session) -> None:
    owner = make_user(session)
    org = make_org(session, owner)
    with pytest.raises(NotFound, match="sign up first"):
        orgs.add_member(session, Actor.user(owner.id), org.id, email="nobody@example.com", role=Role.member)


def test_reserved_slugs_refused(session: Session) -> None:
    owner = make_user(session)
    for name in ("API", "v1", "Docs"):
        with pytest.raises(ValidationFailed, match="reserved"):
            orgs.create_org(session, Actor.user(owner.id), name=name, owner=owner)
