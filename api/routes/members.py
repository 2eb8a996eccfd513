from __future__ import annotations

from fastapi import APIRouter, status

from api.deps import ActorDep, SessionDep
from cic.models.orgs import MemberCreate, MemberPublic, MemberUpdate
from cic.services import orgs
from cic.views import member_public

router = APIRouter(prefix="/orgs/{org}/members", tags=["members"])


@router.get("", response_model=list[MemberPublic])
def list_members(org: str, actor: ActorDep, session: SessionDep) -> list[MemberPublic]:
    return [member_public(m, u) for m, u in orgs.list_members(session, actor, org)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=MemberPublic)
def add_member(org: str, body: MemberCreate, actor: ActorDep, session: SessionDep) -> MemberPublic:
    """Add an existing account to the organization with a role (owners and admins)."""
    m, user = orgs.add_member(session, actor, org, email=body.email, role=body.role)
    session.commit()
    return member_public(m, user)


@router.patch("/{user_id}", response_model=MemberPublic)
def change_role(org: str, user_id: str, body: MemberUpdate, actor: ActorDep, session: SessionDep) -> MemberPublic:
    m = orgs.change_role(session, actor, org, user_id, body.role)
    session.commit()
    user = session.get(orgs.User, user_id)
    assert user is not None
    return member_public(m, user)


@router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
def remove_member(org: str, user_id: str, actor: ActorDep, session: SessionDep) -> None:
    """Remove a member, or leave the organization yourself."""
    orgs.remove_member(session, actor, org, user_id)
    session.commit()
