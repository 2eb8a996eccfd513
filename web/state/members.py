"""Members and invitations of an org (the Members page, and onboarding's invite step)."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import quote

import reflex as rx
from reflex.event import EventSpec

from cic.services.orgs import slugify
from web.api import ApiError
from web.state.auth import email_problem
from web.state.format import when
from web.state.session import SessionState

ROLES = ["member", "admin", "owner"]


def invitation_row(i: dict[str, Any]) -> dict[str, str]:
    return {
        "id": str(i.get("id", "")),
        "email": str(i.get("email", "")),
        "role": str(i.get("role", "member")),
        "expires": when(i.get("expires_at")),
        "inviter": str(i.get("inviter_name") or ""),
    }


class InviteFormState(SessionState):
    """Invite someone by email with a role."""

    invite_email_error: str = ""
    invite_error: str = ""
    invite_busy: bool = False
    invite_role: str = "member"
    sent: list[dict[str, str]] = []
    # The invitation link, when no mail went out (no mail server configured, or it failed): to pass on.
    share_link: str = ""

    @rx.event
    def set_invite_role(self, role: str) -> None:
        self.invite_role = role if role in ROLES else "member"

    async def _invite(self, org: str, form: dict[str, Any]) -> bool:
        self.invite_email_error = self.invite_error = ""
        self.share_link = ""
        email = str(form.get("email", "")).strip()
        if problem := email_problem(email):
            self.invite_email_error = problem
            return False
        try:
            created = await self.api(
                "POST", f"/orgs/{quote(org, safe='')}/invitations", json={"email": email, "role": self.invite_role}
            )
        except ApiError as exc:
            if exc.unauthenticated:
                raise
            if exc.param == "email" or exc.status == 409:
                self.invite_email_error = exc.message
            elif exc.status in (404, 405) and exc.code in ("not_found", ""):
                self.invite_error = "Invitations are not available on this server yet."
            else:
                self.invite_error = exc.message
            return False
        self.sent = [invitation_row(created), *self.sent]
        self.share_link = str(created.get("accept_url") or "")
        return True


class MembersState(InviteFormState):
    loading: bool = True
    error: str = ""
    members: list[dict[str, str]] = []
    invitations: list[dict[str, str]] = []
    invitations_available: bool = True
    remove_target: str = ""
    remove_email: str = ""
    busy: bool = False

    @rx.event
    async def load(self) -> Any:
        self.loading = True
        self.error = ""
        yield
        try:
            if (redirect := await self.enter_org()) is not None:
                yield redirect
                return
            if self.org_missing:
                return
            await self._fetch()
        except ApiError as exc:
            if exc.unauthenticated:
                yield self.login_redirect()
                return
            self.error = exc.message
        finally:
            self.loading = False

    async def _fetch(self) -> None:
        org = self.current_org
        rows = await self.api("GET", f"/orgs/{org}/members")
        self.members = [
            {
                "user_id": m["user_id"],
                "email": m["email"],
                "name": m.get("name") or "",
                "role": m["role"],
                "joined": when(m.get("created_at")),
            }
            for m in rows
        ]
        self.invitations_available = True
        if self.can_manage:
            try:
                self.invitations = [invitation_row(i) for i in await self.api("GET", f"/orgs/{org}/invitations")]
            except ApiError as exc:
                if exc.unauthenticated:
                    raise
                self.invitations = []
                self.invitations_available = exc.status not in (404, 405)
        else:
            self.invitations = []

    @rx.event
    async def invite(self, form: dict[str, Any]) -> Any:
        self.invite_busy = True
        yield
        try:
            if await self._invite(self.current_org, form):
                yield rx.toast.success(f"Invitation sent to {self.sent[0]['email']}")
                yield rx.set_value("f-email", "")
                await self._fetch()
        except ApiError as exc:
            if exc.unauthenticated:
                yield self.login_redirect()
                return
            self.invite_error = exc.message
        finally:
            self.invite_busy = False

    @rx.event
    async def cancel_invitation(self, invitation_id: str) -> Any:
        try:
            await self.api("DELETE", f"/orgs/{self.current_org}/invitations/{invitation_id}")
            await self._fetch()
        except ApiError as exc:
            if exc.unauthenticated:
                return self.login_redirect()
            self.error = exc.message
        return None

    @rx.event
    def ask_remove(self, user_id: str, email: str) -> None:
        self.remove_target = user_id
        self.remove_email = email

    @rx.event
    def cancel_remove(self) -> None:
        self.remove_target = ""

    @rx.event
    async def confirm_remove(self) -> Any:
        self.busy = True
        yield
        try:
            await self.api("DELETE", f"/orgs/{self.current_org}/members/{self.remove_target}")
            self.remove_target = ""
            await self._fetch()
        except ApiError as exc:
            if exc.unauthenticated:
                yield self.login_redirect()
                return
            self.error = exc.message
            self.remove_target = ""
        finally:
            self.busy = False

    @rx.event
    async def change_role(self, user_id: str, role: str) -> Any:
        try:
            await self.api("PATCH", f"/orgs/{self.current_org}/members/{user_id}", json={"role": role})
            await self._fetch()
        except ApiError as exc:
            if exc.unauthenticated:
                return self.login_redirect()
            self.error = exc.message
        return None


class OnboardingState(InviteFormState):
    step: str = "org"
    org_name_error: str = ""
    org_error: str = ""
    org_busy: bool = False
    created_slug: str = ""
    created_name: str = ""

    @rx.event
    async def load(self) -> EventSpec | None:
        self.org_name_error = self.org_error = ""
        self.invite_email_error = self.invite_error = ""
        if (redirect := await self.require_login()) is not None:
            return redirect
        if self.step == "invite" and not self.created_slug:
            self.step = "org"
        return None

    @rx.event
    async def create_org(self, form: dict[str, Any]) -> Any:
        self.org_name_error = self.org_error = ""
        name = str(form.get("name", "")).strip()
        if not name:
            self.org_name_error = "Name your organization (your company or team)."
            return
        if len(name) > 120:
            self.org_name_error = "Keep the name under 120 characters."
            return
        self.org_busy = True
        yield
        try:
            try:
                org = await self.api("POST", "/orgs", json={"name": name})
            except ApiError as exc:
                if exc.status != 409 or exc.param != "slug":
                    raise
                # Another org has this name's address: take the name anyway, with a distinct address.
                slug = f"{slugify(name)[:40] or 'org'}-{secrets.token_hex(2)}"
                org = await self.api("POST", "/orgs", json={"name": name, "slug": slug})
            await self.refresh_me()
            self.created_slug = org["slug"]
            self.created_name = org["name"]
            self.current_org = org["slug"]
            self.sent = []
            self.step = "invite"
        except ApiError as exc:
            if exc.unauthenticated:
                yield self.login_redirect()
                return
            if exc.param in ("name", "slug"):
                self.org_name_error = exc.message
            else:
                self.org_error = exc.message
        finally:
            self.org_busy = False

    @rx.event
    async def invite(self, form: dict[str, Any]) -> Any:
        self.invite_busy = True
        yield
        try:
            if await self._invite(self.created_slug, form):
                yield rx.set_value("f-email", "")
        except ApiError as exc:
            if exc.unauthenticated:
                yield self.login_redirect()
                return
            self.invite_error = exc.message
        finally:
            self.invite_busy = False

    @rx.event
    def finish(self) -> EventSpec:
        slug = self.created_slug
        self.step = "org"
        self.created_slug = ""
        self.sent = []
        return rx.redirect(f"/orgs/{slug}/environments")
