"""``/invite/{token}``: an invitation to join an org; sign in (or up) with the invited email, then accept."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import reflex as rx

from web import api
from web.api import ApiError
from web.state.format import when
from web.state.session import SessionState


class InviteState(SessionState):
    loading: bool = True
    error: str = ""
    invitation: dict[str, str] = {}
    busy: bool = False

    def _invite_token(self) -> str:
        return str(self.router.page.params.get("invite", ""))

    @rx.var
    def email_matches(self) -> bool:
        return self.signed_in and self.user_email.lower() == self.invitation.get("email", "").lower()

    @rx.var
    def login_href(self) -> str:
        return "/login?" + urlencode({"next": self.router.url.path})

    @rx.var
    def signup_href(self) -> str:
        return "/signup?" + urlencode({"next": self.router.url.path})

    @rx.event
    async def load(self) -> Any:
        self.loading = True
        self.error = ""
        self.invitation = {}
        yield
        try:
            if self._token and not self.user_email:
                await self.refresh_me()
            inv = await api.call("GET", f"/invitations/{quote(self._invite_token(), safe='')}")
            self.invitation = {
                "org": str(inv.get("org_name", "")),
                "role": str(inv.get("role", "member")),
                "email": str(inv.get("email", "")),
                "inviter": str(inv.get("inviter_name") or ""),
                "expires": when(inv.get("expires_at")),
            }
        except ApiError as exc:
            if exc.unauthenticated:
                self._forget()
            elif exc.status in (404, 410):
                self.error = "This invitation link is not valid any more: it expired, was used, or was cancelled."
            else:
                self.error = exc.message
        finally:
            self.loading = False

    @rx.event
    async def accept(self) -> Any:
        self.busy = True
        yield
        try:
            out = await self.api("POST", f"/invitations/{quote(self._invite_token(), safe='')}/accept")
            await self.refresh_me()
            slug = str(out["org"]["slug"])
            yield rx.toast.success(f"Welcome to {self.invitation.get('org', 'the organization')}")
            yield rx.redirect(f"/orgs/{slug}/environments")
        except ApiError as exc:
            if exc.unauthenticated:
                yield self.login_redirect()
                return
            self.error = exc.message
        finally:
            self.busy = False
