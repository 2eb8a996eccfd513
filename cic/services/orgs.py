"""Organizations and their members."""

from __future__ import annotations

import re

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from cic import events
from cic.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from cic.limits import FIELDS as LIMIT_FIELDS
from cic.limits import PLAN_LIMITS, Limits, check_narrows
from cic.models import Membership, Org, Plan, Role, User
from cic.models.orgs import SLUG_PATTERN, OrgUpdate
from cic.services import audit, users
from cic.services.authz import Actor, authorize_org

_SLUG_RE = re.compile(SLUG_PATTERN)

# First path segments of the platform's own URLs: an org slug must never shadow them in a
# tenant-scoped base URL (/{org}/{env}/v1/...).
RESERVED_SLUGS = frozenset(
    {
        "api",
        "v1",
        "docs",
        "docs-assets",
        "openapi.json",
        "health",
        "ready",
        "metrics",
        "internal",
        "static",
        "admin",
        "auth",
        "login",
        "signup",
        "logout",
        "dashboard",
        "billing",
        "settings",
        "_next",
        "_event",
        "_upload",
    }
)


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:48].rstrip("-")


def create_org(
    session: Session,
    actor: Actor,
    *,
    name: str,
    owner: User,
    slug: str | None = None,
    plan: Plan = Plan.free,
) -> Org:
    name = name.strip()
    if not name:
        raise ValidationFailed("Organization name must not be empty.", param="name")
    slug = (slug or slugify(name)).lower()
    if not _SLUG_RE.match(slug):
        raise ValidationFailed(
            f"'{slug}' is not a valid slug: use 1-48 lower-case letters, digits and dashes.",
            param="slug",
            code="invalid_slug",
        )
    if slug in RESERVED_SLUGS:
        raise ValidationFailed(f"The slug '{slug}' is reserved; choose another.", param="slug", code="slug_reserved")
    if session.exec(select(Org.id).where(Org.slug == slug)).first() is not None:
        raise Conflict(
            f"The organization slug '{slug}' is taken; choose another slug.", param="slug", code="slug_taken"
        )
    org = Org(name=name, slug=slug, plan=plan.value)
    session.add(org)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(
            f"The organization slug '{slug}' is taken; choose another slug.", param="slug", code="slug_taken"
        ) from exc
    session.add(Membership(org_id=org.id, user_id=owner.id, role=Role.owner.value))
    audit.record(
        session,
        actor,
        "org.created",
        org_id=org.id,
        target_type="org",
        target_id=org.id,
        slug=slug,
        owner=owner.id,
        plan=plan.value,
    )
    session.flush()
    return org


def list_orgs(session: Session, actor: Actor) -> list[tuple[Org, Role]]:
    if actor.user_id is None:
        return [(o, Role.owner) for o in session.exec(select(Org).order_by(col(Org.created_at)))]
    rows = session.exec(
        select(Org, Membership.role)
        .join(Membership, col(Membership.org_id) == col(Org.id))
        .where(Membership.user_id == actor.user_id)
        .order_by(col(Org.created_at))
    )
    return [(o, Role(r)) for o, r in rows]


def update_org(session: Session, actor: Actor, ref: str, data: OrgUpdate) -> Org:
    org, _ = authorize_org(session, actor, ref, Role.admin)
    changes = data.model_dump(exclude_unset=True)
    if changes.get("name"):
        org.name = changes["name"].strip()
    if "plan" in changes and changes["plan"] is not None:
        if not actor.is_platform_admin:
            raise PermissionDenied("Only an operator (or billing) can change the plan.", code="insufficient_role")
        org.plan = Plan(changes["plan"]).value
    limit_changes = {f: changes[f] for f in LIMIT_FIELDS if f in changes}
    if limit_changes:
        for f, v in limit_changes.items():
            setattr(org, f, v)
        if not actor.is_platform_admin:
            # Members of the org may tighten their plan's limits, never widen them.
            check_narrows(
                PLAN_LIMITS.get(org.plan, Limits()),
                Limits.of(org),
                f"{org.plan} plan",
                "organization",
            )
    session.add(org)
    events.invalidate(session, orgs=(org.id,))
    audit.record(
        session,
        actor,
        "org.updated",
        org_id=org.id,
        target_type="org",
        target_id=org.id,
        changes={k: (v.value if isinstance(v, Plan) else v) for k, v in changes.items()},
    )
    return org


# --- members ------------------------------------------------------------------------------------


def list_members(session: Session, actor: Actor, ref: str) -> list[tuple[Membership, User]]:
    org, _ = authorize_org(session, actor, ref)
    rows = session.exec(
        select(Membership, User)
        .join(User, col(User.id) == col(Membership.user_id))
        .where(Membership.org_id == org.id)
        .order_by(col(Membership.created_at))
    )
    return list(rows.all())


def _check_can_grant(actor_role: Role, role: Role) -> None:
    if role is Role.owner and actor_role is not Role.owner:
        raise PermissionDenied("Only an owner can make someone an owner.", code="insufficient_role")


def add_member(session: Session, actor: Actor, ref: str, *, email: str, role: Role) -> tuple[Membership, User]:
    org, actor_role = authorize_org(session, actor, ref, Role.admin)
    _check_can_grant(actor_role, role)
    user = users.get_by_email(session, email)
    if user is None:
        raise NotFound(
            f"No account with email '{email}'; ask them to sign up first.", param="email", code="user_not_found"
        )
    if session.exec(select(Membership).where(Membership.org_id == org.id, Membership.user_id == user.id)).first():
        raise Conflict(f"'{user.email}' is already a member of '{org.slug}'.", param="email", code="already_member")
    m = Membership(org_id=org.id, user_id=user.id, role=role.value)
    session.add(m)
    audit.record(session, actor, "member.added", org_id=org.id, target_type="user", target_id=user.id, role=role.value)
    session.flush()
    return m, user


def _membership(session: Session, org: Org, user_id: str) -> Membership:
    m = session.exec(select(Membership).where(Membership.org_id == org.id, Membership.user_id == user_id)).first()
    if m is None:
        raise NotFound(f"User '{user_id}' is not a member of '{org.slug}'.", param="user_id", code="member_not_found")
    return m


def _owners(session: Session, org: Org) -> int:
    return len(
        session.exec(
            select(Membership.id).where(Membership.org_id == org.id, Membership.role == Role.owner.value)
        ).all()
    )


def change_role(session: Session, actor: Actor, ref: str, user_id: str, role: Role) -> Membership:
    org, actor_role = authorize_org(session, actor, ref, Role.admin)
    m = _membership(session, org, user_id)
    current = Role(m.role)
    _check_can_grant(actor_role, role)
    if current is Role.owner and actor_role is not Role.owner:
        raise PermissionDenied("Only an owner can change an owner's role.", code="insufficient_role")
    if current is Role.owner and role is not Role.owner and _owners(session, org) == 1:
        raise Conflict("An organization needs at least one owner; make someone else owner first.", code="last_owner")
    m.role = role.value
    session.add(m)
    audit.record(
        session,
        actor,
        "member.role_changed",
        org_id=org.id,
        target_type="user",
        target_id=user_id,
        role=role.value,
        previous=current.value,
    )
    return m


def remove_member(session: Session, actor: Actor, ref: str, user_id: str) -> None:
    org, actor_role = authorize_org(session, actor, ref, Role.member)
    m = _membership(session, org, user_id)
    leaving_self = actor.user_id == user_id
    if not leaving_self and actor_role.rank < Role.admin.rank:
        raise PermissionDenied("Only an owner or admin can remove members.", code="insufficient_role")
    if Role(m.role) is Role.owner:
        if not leaving_self and actor_role is not Role.owner:
            raise PermissionDenied("Only an owner can remove an owner.", code="insufficient_role")
        if _owners(session, org) == 1:
            raise Conflict(
                "An organization needs at least one owner; make someone else owner first.", code="last_owner"
            )
    session.delete(m)
    audit.record(session, actor, "member.removed", org_id=org.id, target_type="user", target_id=user_id)
