"""API keys: create (the plaintext shown once), list, revoke, rotate.

The plaintext of a new key lives in ``revealed_key`` only while its dialog is open: closing the dialog
clears it, so it is neither kept in the page nor in any browser storage afterwards."""

from __future__ import annotations

from typing import Any

import reflex as rx

from web.api import ApiError
from web.state.format import when
from web.state.session import SessionState

EXPIRY_CHOICES = {"never": None, "30 days": 30, "90 days": 90, "1 year": 365}


def key_row(k: dict[str, Any]) -> dict[str, str]:
    return {
        "id": k["id"],
        "name": k["name"],
        "display": k["display"],
        "environment": k["environment"],
        "status": k["status"],
        "created": when(k.get("created_at")),
        "last_used": when(k.get("last_used_at"), "never"),
        "expires": when(k.get("expires_at"), "never"),
    }


class KeysState(SessionState):
    loading: bool = True
    error: str = ""
    keys: list[dict[str, str]] = []
    show_all_envs: bool = False

    create_open: bool = False
    key_env: str = ""
    key_expiry: str = "never"
    name_error: str = ""
    create_error: str = ""
    busy: bool = False

    revealed_key: str = ""
    revealed_name: str = ""

    revoke_target: str = ""
    revoke_name: str = ""
    rotate_target: str = ""
    rotate_name: str = ""

    @rx.var
    def visible_keys(self) -> list[dict[str, str]]:
        if self.show_all_envs or not self.current_env:
            return self.keys
        return [k for k in self.keys if k["environment"] == self.current_env]

    @rx.var
    def expiry_choices(self) -> list[str]:
        return list(EXPIRY_CHOICES)

    @rx.event
    async def load(self) -> Any:
        self.loading = True
        self.error = ""
        self.revealed_key = ""
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
        self.keys = [key_row(k) for k in await self.api("GET", f"/orgs/{self.current_org}/keys")]

    @rx.event
    def set_show_all_envs(self, value: bool) -> None:
        self.show_all_envs = value

    @rx.event
    def open_create(self) -> None:
        self.name_error = self.create_error = ""
        self.key_env = self.current_env
        self.key_expiry = "never"
        self.create_open = True

    @rx.event
    def set_create_open(self, value: bool) -> None:
        self.create_open = value

    @rx.event
    def set_key_env(self, value: str) -> None:
        self.key_env = value

    @rx.event
    def set_key_expiry(self, value: str) -> None:
        self.key_expiry = value if value in EXPIRY_CHOICES else "never"

    @rx.event
    async def create(self, form: dict[str, Any]) -> Any:
        self.name_error = self.create_error = ""
        name = str(form.get("name", "")).strip()
        if not name:
            self.name_error = "Name the key after what uses it, e.g. backend or ci."
            return
        if len(name) > 100:
            self.name_error = "Keep the name under 100 characters."
            return
        if not self.key_env:
            self.create_error = "Create an environment first: a key belongs to one."
            return
        self.busy = True
        yield
        try:
            created = await self.api(
                "POST",
                f"/orgs/{self.current_org}/keys",
                json={"name": name, "environment": self.key_env, "expires_in_days": EXPIRY_CHOICES[self.key_expiry]},
            )
            self.create_open = False
            self.revealed_key = created["key"]
            self.revealed_name = created["name"]
            await self._fetch()
        except ApiError as exc:
            if exc.unauthenticated:
                yield self.login_redirect()
                return
            if exc.param == "name":
                self.name_error = exc.message
            else:
                self.create_error = exc.message
        finally:
            self.busy = False

    def _forget_key(self) -> None:
        """The only copy of the plaintext leaves the page with the dialog."""
        self.revealed_key = ""
        self.revealed_name = ""

    @rx.event
    def close_reveal(self) -> None:
        self._forget_key()

    @rx.event
    def reveal_open_change(self, value: bool) -> None:
        if not value:
            self._forget_key()

    @rx.event
    def ask_revoke(self, key_id: str, name: str) -> None:
        self.revoke_target, self.revoke_name = key_id, name

    @rx.event
    def cancel_revoke(self) -> None:
        self.revoke_target = ""

    @rx.event
    async def confirm_revoke(self) -> Any:
        self.busy = True
        yield
        try:
            await self.api("POST", f"/orgs/{self.current_org}/keys/{self.revoke_target}/revoke")
            yield rx.toast.success(f"Revoked {self.revoke_name}")
            self.revoke_target = ""
            await self._fetch()
        except ApiError as exc:
            if exc.unauthenticated:
                yield self.login_redirect()
                return
            self.error = exc.message
            self.revoke_target = ""
        finally:
            self.busy = False

    @rx.event
    def ask_rotate(self, key_id: str, name: str) -> None:
        self.rotate_target, self.rotate_name = key_id, name

    @rx.event
    def cancel_rotate(self) -> None:
        self.rotate_target = ""

    @rx.event
    async def confirm_rotate(self) -> Any:
        self.busy = True
        yield
        try:
            created = await self.api("POST", f"/orgs/{self.current_org}/keys/{self.rotate_target}/rotate", json={})
            self.rotate_target = ""
            self.revealed_key = created["key"]
            self.revealed_name = created["name"]
            await self._fetch()
        except ApiError as exc:
            if exc.unauthenticated:
                yield self.login_redirect()
                return
            self.error = exc.message
            self.rotate_target = ""
        finally:
            self.busy = False
