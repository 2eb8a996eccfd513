"""Sign-up, log-in (email + password, or an OAuth provider) and the OAuth return page."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import reflex as rx
from reflex.event import EventSpec

from cic.settings import get_settings
from web import api
from web.api import ApiError
from web.state.session import SessionState, safe_next

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD = 10

OAUTH_ERRORS = {
    "oauth_denied": "The sign-in was cancelled at the provider. Try again, or use your email and password.",
    "oauth_state": "The sign-in link expired or was used twice. Start the sign-in again.",
    "oauth_token": "The provider did not confirm the sign-in. Try again in a moment.",
    "oauth_id_token": "The provider's identity token could not be verified. Try again.",
    "oauth_email": "The provider did not share a verified email address for this account.",
}


def email_problem(email: str) -> str:
    if not email:
        return "Enter your email address."
    if not EMAIL_RE.match(email):
        return "Enter a valid email address, like you@company.com."
    return ""


class AuthFormState(SessionState):
    """Shared by the log-in and sign-up forms."""

    email_error: str = ""
    password_error: str = ""
    name_error: str = ""
    form_error: str = ""
    busy: bool = False
    providers: list[dict[str, str]] = []
    next_path: str = "/"

    @rx.var
    def oauth_links(self) -> list[dict[str, str]]:
        base = get_settings().public_base_url
        nxt = quote(self.next_path, safe="")
        return [
            {"id": p["id"], "name": p["name"], "href": f"{base}/api/v1/auth/oauth/{p['id']}/start?next={nxt}"}
            for p in self.providers
        ]

    @rx.var
    def login_href(self) -> str:
        return "/login" + (f"?{urlencode({'next': self.next_path})}" if self.next_path != "/" else "")

    @rx.var
    def signup_href(self) -> str:
        return "/signup" + (f"?{urlencode({'next': self.next_path})}" if self.next_path != "/" else "")

    def _reset_errors(self) -> None:
        self.email_error = self.password_error = self.name_error = self.form_error = ""

    async def _load_form(self) -> EventSpec | None:
        self._reset_errors()
        self.busy = False
        params = self.router.page.params
        self.next_path = safe_next(str(params.get("next", "")))
        code = str(params.get("error", ""))
        self.form_error = OAUTH_ERRORS.get(code, "The sign-in did not complete. Try again.") if code else ""
        try:
            self.providers = [
                {"id": str(p["id"]), "name": str(p["name"])} for p in await api.call("GET", "/auth/providers")
            ]
        except ApiError:
            self.providers = []  # no OAuth configured (or not yet available): email and password only
        if self._token and self.user_email:
            return rx.redirect(self.next_path if self.next_path != "/" else self.home_path())
        return None

    async def _finish(self, token: str) -> EventSpec:
        await self.adopt(token)
        if self.next_path != "/":
            return rx.redirect(self.next_path)
        return rx.redirect(self.home_path())


class LoginState(AuthFormState):
    @rx.event
    async def load(self) -> EventSpec | None:
        return await self._load_form()

    @rx.event
    async def submit(self, form: dict[str, Any]) -> Any:
        self._reset_errors()
        email = str(form.get("email", "")).strip()
        password = str(form.get("password", ""))
        self.email_error = email_problem(email)
        if not password:
            self.password_error = "Enter your password."  # noqa: S105 - a message, not a password
        if self.email_error or self.password_error:
            return
        self.busy = True
        yield
        try:
            session = await api.call("POST", "/auth/login", json={"email": email, "password": password})
            yield await self._finish(session["token"])
        except ApiError as exc:
            self.form_error = exc.message
        finally:
            self.busy = False


class SignupState(AuthFormState):
    @rx.event
    async def load(self) -> EventSpec | None:
        return await self._load_form()

    @rx.event
    async def submit(self, form: dict[str, Any]) -> Any:
        self._reset_errors()
        name = str(form.get("name", "")).strip()
        email = str(form.get("email", "")).strip()
        password = str(form.get("password", ""))
        self.email_error = email_problem(email)
        if len(password) < MIN_PASSWORD:
            self.password_error = f"Use at least {MIN_PASSWORD} characters."
        if len(name) > 200:
            self.name_error = "Keep the name under 200 characters."
        if self.email_error or self.password_error or self.name_error:
            return
        self.busy = True
        yield
        try:
            session = await api.call("POST", "/auth/signup", json={"email": email, "password": password, "name": name})
            if self.next_path == "/":
                self.next_path = "/onboarding"
            yield await self._finish(session["token"])
        except ApiError as exc:
            # The API names the field it refused (weak password, taken email): show it there.
            if exc.param == "password":
                self.password_error = exc.message
            elif exc.param == "email" or exc.status == 409:
                self.email_error = exc.message
            else:
                self.form_error = exc.message
        finally:
            self.busy = False


# Read the fragment and remove it from the address bar in one step, before anything else runs.
TAKE_FRAGMENT = (
    "(() => { const h = window.location.hash || '';"
    " window.history.replaceState(null, '', window.location.pathname);"
    " return h.replace(/^#/, ''); })()"
)


class CallbackState(SessionState):
    """``/auth/callback#token=…&next=…``: the API's redirect after an OAuth sign-in."""

    callback_error: str = ""

    @rx.event
    def load(self) -> EventSpec:
        self.callback_error = ""
        return rx.call_script(TAKE_FRAGMENT, callback=CallbackState.receive)

    @rx.event
    async def receive(self, fragment: str) -> EventSpec | None:
        values = parse_qs(fragment or "")
        token = (values.get("token") or [""])[0]
        target = safe_next((values.get("next") or [""])[0])
        if not token:
            self.callback_error = "This sign-in link is incomplete or was already used. Sign in again."
            return None
        try:
            await self.adopt(token)
        except ApiError as exc:
            self.callback_error = exc.message
            return None
        return rx.redirect(target if target != "/" else self.home_path())
