"""Billing: the month's spend and forecast, credits, budget, statements, Stripe checkout / portal and the
savings against OpenAI's list prices. Built on ``/orgs/{org}/billing`` and its statements and credits."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

import reflex as rx

from web.api import ApiError
from web.state.format import count, day, usd
from web.state.session import SessionState


def _dec(value: Any) -> Decimal:
    try:
        return Decimal(str(value or 0))
    except InvalidOperation:
        return Decimal(0)


class BillingState(SessionState):
    loading: bool = True
    error: str = ""
    unavailable: bool = False
    summary: dict[str, str] = {}
    billing_enabled: bool = False
    keys_blocked: bool = False
    budget_fraction: float = 0.0
    has_budget: bool = False
    statements: list[dict[str, str]] = []
    credits: list[dict[str, str]] = []
    budget_error: str = ""
    budget_busy: bool = False
    stripe_busy: bool = False
    stripe_error: str = ""
    statement: dict[str, str] = {}
    statement_lines: list[dict[str, str]] = []
    statement_open: bool = False

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
        try:
            b = await self.api("GET", f"/orgs/{org}/billing")
        except ApiError as exc:
            if exc.status in (404, 405) and exc.code in ("not_found", ""):
                self.unavailable = True
                return
            raise
        self.unavailable = False
        self.billing_enabled = bool(b.get("billing_enabled"))
        self.keys_blocked = bool(b.get("keys_blocked"))
        budget = b.get("budget_usd")
        self.has_budget = budget not in (None, "")
        self.budget_fraction = min(1.0, float(b.get("budget_used_fraction") or 0))
        tokens_allowance = int(b.get("free_allowance_tokens") or 0)
        self.summary = {
            "plan": str(b.get("plan", "")),
            "status": str(b.get("status", "none")),
            "month": str(b.get("month", "")),
            "mtd": usd(b.get("month_to_date_usd")),
            "forecast": usd(b.get("forecast_usd")),
            "due": usd(b.get("amount_due_usd")),
            "credits_left": usd(b.get("credits_remaining_usd")),
            "credits_applied": usd(b.get("credits_applied_usd")),
            "discount": usd(b.get("discount_usd")),
            "allowance": usd(b.get("allowance_usd")),
            "budget": usd(budget) if self.has_budget else "",
            "budget_input": str(_dec(budget).quantize(Decimal(1))) if self.has_budget else "",
            "budget_used": f"{100 * self.budget_fraction:.0f}%",
            "tokens": count(b.get("tokens")),
            "free_tokens": f"{count(b.get('free_allowance_used_tokens'))} of {count(tokens_allowance)}"
            if tokens_allowance
            else "",
            "reference": usd(b.get("reference_cost_usd")),
            "savings": usd(b.get("savings_usd")),
            "savings_pct": (
                f"{100 * _dec(b.get('savings_usd')) / _dec(b.get('reference_cost_usd')):.0f}%"
                if _dec(b.get("reference_cost_usd")) > 0
                else ""
            ),
            "payment_method": "on file" if b.get("payment_method") else "none",
        }
        self.statements = [
            {
                "month": s["month"],
                "status": s["status"],
                "gross": usd(s.get("gross_usd")),
                "due": usd(s.get("amount_due_usd")),
            }
            for s in await self.api("GET", f"/orgs/{org}/billing/statements")
        ]
        self.credits = [
            {
                "kind": str(c.get("kind", "")),
                "amount": usd(c.get("amount_usd")),
                "remaining": usd(c.get("remaining_usd")),
                "expires": day(str(c.get("expires_at") or "")[:10], "never"),
                "note": str(c.get("note") or ""),
            }
            for c in await self.api("GET", f"/orgs/{org}/credits")
        ]

    @rx.event
    async def save_budget(self, form: dict[str, Any]) -> Any:
        self.budget_error = ""
        raw = str(form.get("budget", "")).strip().replace("$", "").replace(",", "")
        cents: int | None
        if raw == "":
            cents = None
        else:
            try:
                amount = Decimal(raw)
            except InvalidOperation:
                self.budget_error = "Enter an amount in US dollars, like 500."
                return
            if amount < 1:
                self.budget_error = "A budget is at least $1 (leave blank for none)."
                return
            cents = int(amount * 100)
        self.budget_busy = True
        yield
        try:
            # Blank clears the budget (0 is the API's "clear").
            await self.api("PATCH", f"/orgs/{self.current_org}", json={"monthly_budget_cents": cents or 0})
            yield rx.toast.success("Budget saved" if cents else "Budget removed")
            await self._fetch()
        except ApiError as exc:
            if exc.unauthenticated:
                yield self.login_redirect()
                return
            self.budget_error = exc.message
        finally:
            self.budget_busy = False

    async def _stripe(self, path: str, body: dict[str, Any] | None) -> Any:
        self.stripe_error = ""
        self.stripe_busy = True
        yield
        try:
            out = await self.api("POST", f"/orgs/{self.current_org}/billing/{path}", json=body)
            # Stripe's hosted page is another site: a full navigation, not a client-side route.
            yield rx.call_script(f"window.location.assign({json.dumps(str(out['url']))})")
        except ApiError as exc:
            if exc.unauthenticated:
                yield self.login_redirect()
                return
            self.stripe_error = exc.message
        finally:
            self.stripe_busy = False

    @rx.event
    async def checkout(self) -> Any:
        async for out in self._stripe("checkout", {"mode": "subscription"}):
            yield out

    @rx.event
    async def buy_credits(self, form: dict[str, Any]) -> Any:
        raw = str(form.get("amount", "")).strip().replace("$", "")
        try:
            amount = Decimal(raw)
        except InvalidOperation:
            self.stripe_error = "Enter an amount in US dollars, like 50."
            return
        if amount < 5:
            self.stripe_error = "Credits start at $5."
            return
        async for out in self._stripe("checkout", {"mode": "credits", "amount_usd": str(amount)}):
            yield out

    @rx.event
    async def portal(self) -> Any:
        async for out in self._stripe("portal", None):
            yield out

    @rx.event
    async def open_statement(self, month: str) -> Any:
        try:
            s = await self.api("GET", f"/orgs/{self.current_org}/billing/statements/{month}")
        except ApiError as exc:
            if exc.unauthenticated:
                return self.login_redirect()
            self.error = exc.message
            return None
        self.statement = {
            "month": s["month"],
            "status": s["status"],
            "gross": usd(s.get("gross_usd")),
            "allowance": usd(s.get("allowance_usd")),
            "discount": usd(s.get("discount_usd")),
            "credits": usd(s.get("credits_usd")),
            "due": usd(s.get("amount_due_usd")),
        }
        self.statement_lines = [
            {
                "environment": str(line.get("environment", "")),
                "model": str(line.get("model", "")),
                "region": str(line.get("region", "")),
                "requests": count(line.get("requests")),
                "tokens": count(int(line.get("prompt_tokens") or 0) + int(line.get("completion_tokens") or 0)),
                "gross": usd(line.get("gross_usd")),
            }
            for line in s.get("lines", [])
        ]
        self.statement_open = True
        return None

    @rx.event
    def set_statement_open(self, value: bool) -> None:
        self.statement_open = value
