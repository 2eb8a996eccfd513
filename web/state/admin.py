"""Operator pages (platform admins): nodes (drain / undrain), orgs with their usage, the model catalog."""

from __future__ import annotations

from typing import Any

import reflex as rx

from web.api import ApiError
from web.state.format import count, usd, when
from web.state.session import SessionState


def node_row(n: dict[str, Any]) -> dict[str, str]:
    load = n.get("load") or {}
    running = int(float(load.get("num_requests_running") or 0))
    waiting = int(float(load.get("num_requests_waiting") or 0))
    kv = load.get("kv_cache_usage_perc")
    price = n.get("price_per_hour")
    return {
        "id": n["id"],
        "name": n.get("name") or n["id"],
        "region": n["region"],
        "model": n["model"],
        "provider": n.get("provider") or "",
        "status": n["status"],
        "load": f"{running} running · {waiting} waiting" + (f" · KV {100 * float(kv):.0f}%" if kv is not None else ""),
        "spot": "spot" if n.get("spot") else "on-demand",
        "price": f"${float(price):.2f}/h" if price else "—",
        "heartbeat": when(n.get("last_heartbeat_at"), "never"),
    }


class AdminState(SessionState):
    loading: bool = True
    error: str = ""
    forbidden: bool = False
    tab: str = "nodes"
    nodes: list[dict[str, str]] = []
    orgs_usage: list[dict[str, str]] = []
    orgs_error: str = ""
    models: list[dict[str, str]] = []

    @rx.event
    async def load(self) -> Any:
        self.loading = True
        self.error = ""
        yield
        try:
            if (redirect := await self.require_login()) is not None:
                yield redirect
                return
            self.forbidden = not self.is_platform_admin
            if not self.forbidden:
                await self._fetch()
        except ApiError as exc:
            if exc.unauthenticated:
                yield self.login_redirect()
                return
            if exc.status == 403:
                self.forbidden = True
            else:
                self.error = exc.message
        finally:
            self.loading = False

    async def _fetch(self) -> None:
        self.nodes = [node_row(n) for n in await self.api("GET", "/admin/nodes")]
        self.orgs_error = ""
        try:
            self.orgs_usage = [
                {
                    "slug": o["slug"],
                    "name": o["name"],
                    "plan": o.get("plan", ""),
                    "members": str(o.get("members", "")),
                    "requests": count(o.get("month_requests")),
                    "tokens": count(o.get("month_tokens")),
                    "cost": usd(o.get("month_cost_usd")),
                    "created": when(o.get("created_at")),
                }
                for o in await self.api("GET", "/admin/orgs")
            ]
        except ApiError as exc:
            if exc.unauthenticated:
                raise
            self.orgs_usage = []
            self.orgs_error = (
                "The organizations report is not available on this server yet."
                if exc.status in (404, 405)
                else exc.message
            )
        models = await self.api("GET", "/models")
        self.models = []
        for m in models:
            prices = m.get("prices") or []
            cheapest = min(prices, key=lambda p: p.get("input_per_1m", 0), default=None)
            ref = m.get("reference") or {}
            self.models.append(
                {
                    "id": m["id"],
                    "name": m["name"],
                    "kind": m["kind"],
                    "context": f"{int(m['context_length']):,}",
                    "regions": ", ".join(p["region"] for p in prices),
                    "price": (
                        f"${cheapest['input_per_1m']:.2f} / ${cheapest['output_per_1m']:.2f}" if cheapest else "—"
                    ),
                    "reference": (
                        f"{ref.get('model', '')}: ${float(ref.get('input_per_1m', 0)):.2f} / "
                        f"${float(ref.get('output_per_1m', 0)):.2f}"
                        if ref
                        else "—"
                    ),
                }
            )

    @rx.event
    def set_tab(self, tab: str) -> None:
        self.tab = tab

    @rx.event
    async def drain(self, node_id: str, undo: bool) -> Any:
        try:
            await self.api("POST", f"/admin/nodes/{node_id}/{'undrain' if undo else 'drain'}")
            yield rx.toast.success("Node back in rotation" if undo else "Node draining: no new requests")
            await self._fetch()
        except ApiError as exc:
            if exc.unauthenticated:
                yield self.login_redirect()
                return
            self.error = exc.message
