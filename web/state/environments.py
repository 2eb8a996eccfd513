"""Environments of an org: create (region + models + quotas), edit, delete."""

from __future__ import annotations

from typing import Any

import reflex as rx

from web.api import ApiError
from web.state.format import limit, when
from web.state.session import SessionState

QUOTAS = ("rpm", "tpm", "tpd", "max_concurrency")


def parse_quotas(form: dict[str, Any]) -> tuple[dict[str, int | None], dict[str, str]]:
    """Blank means 'inherit'; otherwise a positive whole number."""
    values: dict[str, int | None] = {}
    errors: dict[str, str] = {}
    for q in QUOTAS:
        raw = str(form.get(q, "")).strip().replace(",", "").replace("_", "")
        if not raw:
            values[q] = None
            continue
        if not raw.isdigit() or int(raw) < 1:
            errors[q] = "A whole number of at least 1, or blank to inherit."
            continue
        values[q] = int(raw)
    return values, errors


class EnvironmentsState(SessionState):
    loading: bool = True
    error: str = ""
    rows: list[dict[str, str]] = []
    regions: list[dict[str, str]] = []
    catalog: list[dict[str, str]] = []
    org_plan: str = ""

    # the create / edit dialog (one form: editing keeps the name)
    dialog_open: bool = False
    editing: str = ""
    suggested_name: str = ""
    form_region: str = ""
    form_models: list[str] = []
    form_quotas: dict[str, str] = dict.fromkeys(QUOTAS, "")
    name_error: str = ""
    region_error: str = ""
    models_error: str = ""
    quota_errors: dict[str, str] = dict.fromkeys(QUOTAS, "")
    form_error: str = ""
    busy: bool = False

    delete_target: str = ""

    @rx.var
    def residency_note(self) -> str:
        for r in self.regions:
            if r["code"] == self.form_region:
                return r["residency_note"] or f"Requests and data stay in {r['name']}."
        return ""

    @rx.var
    def region_options(self) -> list[dict[str, str]]:
        return self.regions

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
        if not self.regions:
            self.regions = [
                {
                    "code": r["code"],
                    "name": r["name"],
                    "country": r["country"],
                    "residency_note": r.get("residency_note") or "",
                    "label": f"{r['name']} ({r['code']})",
                }
                for r in await self.api("GET", "/regions")
                if r.get("active", True)
            ]
        if not self.catalog:
            self.catalog = [
                {
                    "id": m["id"],
                    "name": m["name"],
                    "kind": m["kind"],
                    "context": f"{m['context_length'] // 1024}K"
                    if m["context_length"] >= 1024
                    else str(m["context_length"]),
                }
                for m in await self.api("GET", "/models")
            ]
        org = await self.api("GET", f"/orgs/{self.current_org}")
        self.org_plan = org.get("plan", "")
        envs = await self.api("GET", f"/orgs/{self.current_org}/environments")
        region_names = {r["code"]: r["name"] for r in self.regions}
        self.rows = [
            {
                "name": e["name"],
                "region": e["region"],
                "region_name": region_names.get(e["region"], e["region"]),
                "models": ", ".join(e["models"]),
                "models_csv": ",".join(e["models"]),
                "base_url": e["base_url"],
                "rpm": limit(e.get("rpm")),
                "tpm": limit(e.get("tpm")),
                "tpd": limit(e.get("tpd")),
                "max_concurrency": limit(e.get("max_concurrency")),
                "raw_rpm": str(e.get("rpm") or ""),
                "raw_tpm": str(e.get("tpm") or ""),
                "raw_tpd": str(e.get("tpd") or ""),
                "raw_max_concurrency": str(e.get("max_concurrency") or ""),
                "created": when(e.get("created_at")),
            }
            for e in envs
        ]
        await self.load_envs()

    def _clear_errors(self) -> None:
        self.name_error = self.region_error = self.models_error = self.form_error = ""
        self.quota_errors = dict.fromkeys(QUOTAS, "")

    @rx.event
    def open_create(self) -> None:
        self._clear_errors()
        self.editing = ""
        taken = {r["name"] for r in self.rows}
        self.form_region = self.regions[0]["code"] if self.regions else ""
        chat = [m["id"] for m in self.catalog if m["kind"] == "chat"] or [m["id"] for m in self.catalog]
        self.form_models = chat[:1]
        self.form_quotas = dict.fromkeys(QUOTAS, "")
        self.suggested_name = next((n for n in ("dev", "staging", "prod") if n not in taken), "")
        self.dialog_open = True

    @rx.event
    def open_edit(self, name: str) -> None:
        self._clear_errors()
        row = next((r for r in self.rows if r["name"] == name), None)
        if row is None:
            return
        self.editing = name
        self.form_region = row["region"]
        self.form_models = [m for m in row["models_csv"].split(",") if m]
        self.form_quotas = {q: row[f"raw_{q}"] for q in QUOTAS}
        self.dialog_open = True

    @rx.event
    def set_dialog_open(self, value: bool) -> None:
        self.dialog_open = value

    @rx.event
    def set_form_region(self, code: str) -> None:
        self.form_region = code
        self.region_error = ""

    @rx.event
    def toggle_model(self, model_id: str, on: bool) -> None:
        models = [m for m in self.form_models if m != model_id]
        self.form_models = [*models, model_id] if on else models
        self.models_error = ""

    @rx.event
    async def save(self, form: dict[str, Any]) -> Any:
        self._clear_errors()
        name = self.editing or str(form.get("name", "")).strip()
        quotas, quota_errors = parse_quotas(form)
        if not self.editing:
            if not name:
                self.name_error = "Name the environment, e.g. dev, staging or prod."
            elif not (name[0].isalpha() and all(c.isalnum() or c == "-" for c in name) and len(name) <= 31):
                self.name_error = "Lower-case letters, digits and '-', starting with a letter (at most 31)."
        if not self.form_region:
            self.region_error = "Pick a region."
        if not self.form_models:
            self.models_error = "Enable at least one model."
        self.quota_errors = {q: quota_errors.get(q, "") for q in QUOTAS}
        if self.name_error or self.region_error or self.models_error or quota_errors:
            return
        body: dict[str, Any] = {"region": self.form_region, "models": self.form_models}
        self.busy = True
        yield
        try:
            if self.editing:
                # Blank clears an override (0 is the API's "clear").
                body.update({q: (v if v is not None else 0) for q, v in quotas.items()})
                await self.api("PATCH", f"/orgs/{self.current_org}/environments/{self.editing}", json=body)
                yield rx.toast.success(f"Saved {self.editing}")
            else:
                body.update({"name": name, **{q: v for q, v in quotas.items() if v is not None}})
                await self.api("POST", f"/orgs/{self.current_org}/environments", json=body)
                self.current_env = name
                yield rx.toast.success(f"Created {name}")
            self.dialog_open = False
            await self._fetch()
        except ApiError as exc:
            if exc.unauthenticated:
                yield self.login_redirect()
                return
            if exc.param == "name" or exc.status == 409:
                self.name_error = exc.message
            elif exc.param == "region":
                self.region_error = exc.message
            elif exc.param == "models":
                self.models_error = exc.message
            elif exc.param in QUOTAS:
                self.quota_errors = {q: exc.message if q == exc.param else "" for q in QUOTAS}
            else:
                self.form_error = exc.message
        finally:
            self.busy = False

    @rx.event
    def ask_delete(self, name: str) -> None:
        self.delete_target = name

    @rx.event
    def cancel_delete(self) -> None:
        self.delete_target = ""

    @rx.event
    async def confirm_delete(self) -> Any:
        self.busy = True
        yield
        try:
            await self.api("DELETE", f"/orgs/{self.current_org}/environments/{self.delete_target}")
            yield rx.toast.success(f"Deleted {self.delete_target}")
            self.delete_target = ""
            await self._fetch()
        except ApiError as exc:
            if exc.unauthenticated:
                yield self.login_redirect()
                return
            self.error = exc.message
            self.delete_target = ""
        finally:
            self.busy = False
