"""Who is signed in, the organizations they belong to, and the org / environment being looked at.

The session token is held **on the server only**, as a backend variable of this state (``_token``): it
is never sent to the browser, so no script on the page, no cookie and no browser storage can leak it.
Reflex keys this state by a per-tab client token, so a reload keeps the log-in and a new tab signs in
again. Any 401 from the API (expired, revoked or logged-out session) drops the token and sends the
browser to ``/login?next=<the page>``, which comes back there after the log-in.
"""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import quote, urlencode

import reflex as rx
from reflex.event import EventSpec

from web import api
from web.api import ApiError


def safe_next(target: str | None, default: str = "/") -> str:
    """Only paths on this site (no scheme, no host, no ``//``) are followed after a log-in."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def org_row(o: dict[str, Any]) -> dict[str, str]:
    return {"slug": o["slug"], "name": o["name"], "role": o.get("role") or "member", "plan": o.get("plan", "")}


class SessionState(rx.State):
    _token: str = ""
    user_email: str = ""
    user_name: str = ""
    is_platform_admin: bool = False
    orgs: list[dict[str, str]] = []
    current_org: str = ""
    current_org_name: str = ""
    current_role: str = ""
    org_missing: bool = False
    envs: list[dict[str, str]] = []
    current_env: str = ""

    @rx.var
    def signed_in(self) -> bool:
        return self.user_email != ""

    @rx.var
    def can_manage(self) -> bool:
        return self.current_role in ("owner", "admin")

    @rx.var
    def env_names(self) -> list[str]:
        return [e["name"] for e in self.envs]

    @rx.var
    def user_initial(self) -> str:
        return (self.user_name or self.user_email or "?")[:1].upper()

    def _here(self) -> str:
        url = self.router.url
        return url.path + (f"?{url.query}" if url.query else "")

    def login_redirect(self) -> EventSpec:
        """To the log-in page, coming back here afterwards."""
        return rx.redirect("/login?" + urlencode({"next": safe_next(self._here())}))

    def _forget(self) -> None:
        self._token = ""
        self.user_email = ""
        self.user_name = ""
        self.is_platform_admin = False
        self.orgs = []
        self.envs = []
        self.current_org = ""
        self.current_env = ""
        self.current_role = ""

    async def api(self, method: str, path: str, **kw: Any) -> Any:
        """Call the management API as the signed-in user; a 401 ends the dashboard session."""
        if not self._token:
            raise ApiError(401, "Log in first.", "missing_credentials")
        try:
            return await api.call(method, path, token=self._token, **kw)
        except ApiError as exc:
            if exc.unauthenticated:
                self._forget()
            raise

    async def adopt(self, token: str) -> None:
        """Keep a new session token (password log-in, sign-up, OAuth) and load who it belongs to."""
        self._token = token
        await self.refresh_me()

    async def refresh_me(self) -> None:
        me = await self.api("GET", "/auth/me")
        self.user_email = me["user"]["email"]
        self.user_name = me["user"].get("name") or ""
        self.is_platform_admin = bool(me["user"].get("is_platform_admin"))
        self.orgs = [org_row(o) for o in me["orgs"]]

    def home_path(self) -> str:
        if not self.orgs:
            return "/onboarding"
        slug = self.current_org if any(o["slug"] == self.current_org for o in self.orgs) else self.orgs[0]["slug"]
        return f"/orgs/{slug}/environments"

    def route_org(self) -> str:
        return str(self.router.page.params.get("org", ""))

    async def require_login(self) -> EventSpec | None:
        """For pages outside an org (onboarding, admin): a redirect to the log-in page, or None."""
        if not self._token:
            return self.login_redirect()
        if not self.user_email:
            try:
                await self.refresh_me()
            except ApiError as exc:
                if exc.unauthenticated:
                    return self.login_redirect()
                raise
        return None

    async def enter_org(self) -> EventSpec | None:
        """For pages under ``/orgs/{org}``: signed in, and a member of that org (else 'not found')."""
        if (redirect := await self.require_login()) is not None:
            return redirect
        slug = self.route_org()
        try:
            org = await self.api("GET", f"/orgs/{quote(slug, safe='')}")
        except ApiError as exc:
            if exc.unauthenticated:
                return self.login_redirect()
            if exc.status == 404:
                self.org_missing = True
                self.current_org = slug
                self.current_org_name = ""
                self.current_role = ""
                self.envs = []
                return None
            raise
        self.org_missing = False
        if self.current_org != org["slug"]:
            self.current_env = ""
        self.current_org = org["slug"]
        self.current_org_name = org["name"]
        self.current_role = org.get("role") or "member"
        if not any(o["slug"] == org["slug"] for o in self.orgs):
            self.orgs = [*self.orgs, org_row(org)]
        await self.load_envs()
        return None

    async def load_envs(self) -> None:
        rows = await self.api("GET", f"/orgs/{self.current_org}/environments")
        self.envs = [
            {
                "name": e["name"],
                "region": e["region"],
                "base_url": e["base_url"],
                "models": ", ".join(e["models"]),
                "first_model": e["models"][0] if e["models"] else "",
            }
            for e in rows
        ]
        names = [e["name"] for e in self.envs]
        if self.current_env not in names:
            self.current_env = names[0] if names else ""

    @rx.event
    def switch_org(self, slug: str) -> EventSpec:
        if slug == "__new__":
            return rx.redirect("/onboarding")
        page = self.router.url.path.rstrip("/").rsplit("/", 1)[-1] if self.current_org else "environments"
        return rx.redirect(f"/orgs/{slug}/{page or 'environments'}")

    @rx.event
    def switch_env(self, name: str) -> None:
        self.current_env = name

    @rx.event
    async def logout(self) -> EventSpec:
        if self._token:
            with contextlib.suppress(ApiError):  # the session is dropped here whatever the API says
                await api.call("POST", "/auth/logout", token=self._token)
        self._forget()
        return rx.redirect("/login")

    @rx.event
    async def go_home(self) -> EventSpec:
        """``/``: the first org's dashboard, onboarding, or the log-in page."""
        if (redirect := await self.require_login()) is not None:
            return redirect
        return rx.redirect(self.home_path())
