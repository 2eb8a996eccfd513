"""Who is acting, and what they may touch."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, select

from cic.errors import NotFound, PermissionDenied
from cic.models import Membership, Org, Role


@dataclass(frozen=True)
class Actor:
    """A caller: a signed-in user, or the operator at the CLI (``system``)."""

    user_id: str | None
    is_platform_admin: bool = False
    label: str = ""
    ip: str = ""

    @classmethod
    def system(cls, label: str = "cli") -> Actor:
        return cls(user_id=None, is_platform_admin=True, label=label)

    @classmethod
    def user(cls, user_id: str, *, is_platform_admin: bool = False, ip: str = "") -> Actor:
        return cls(user_id=user_id, is_platform_admin=is_platform_admin, label=user_id, ip=ip)

    @property
    def name(self) -> str:
        return self.label or (self.user_id or "system")


def find_org(session: Session, ref: str) -> Org | None:
    """An org by id (``org_…``) or slug."""
    if ref.startswith("org_"):
        org = session.get(Org, ref)
        if org is not None:
            return org
    return session.exec(select(Org).where(Org.slug == ref.lower())).first()


def role_in(session: Session, org_id: str, user_id: str) -> Role | None:
    m = session.exec(select(Membership).where(Membership.org_id == org_id, Membership.user_id == user_id)).first()
    return Role(m.role) if m else None


def authorize_org(session: Session, actor: Actor, ref: str, need: Role = Role.member) -> tuple[Org, Role]:
    """Resolve an org the actor can see, with at least role ``need``.

    An org the actor is not a member of is reported as missing (404), never as forbidden, so one
    tenant cannot learn whether another tenant's org exists.
    """
    org = find_org(session, ref)
    if org is None:
        raise NotFound(f"Organization '{ref}' not found.", param="org", code="org_not_found")
    if actor.is_platform_admin:
        return org, Role.owner
    role = role_in(session, org.id, actor.user_id) if actor.user_id else None
    if role is None:
        raise NotFound(f"Organization '{ref}' not found.", param="org", code="org_not_found")
    if role.rank < need.rank:
        raise PermissionDenied(
            f"This needs the {need.value} role in '{org.slug}'; you are {role.value}.",
            code="insufficient_role",
        )
    return org, role
