"""Usage: requests, tokens, cost, latency and errors per day, by model or environment, from the API's
usage report (served from the roll-ups, never raw records); a table with CSV export."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Any

import reflex as rx

from web.api import ApiError
from web.state.format import count, usd, when
from web.state.session import SessionState

PALETTE = ["indigo", "cyan", "orange", "grass", "crimson", "violet", "amber", "teal", "pink", "brown"]
RANGES = {"7d": 7, "30d": 30, "90d": 90}
ALL_ENVS = "All environments"
TABLE_COLUMNS = ("day", "model", "environment", "requests", "prompt_tokens", "completion_tokens", "errors", "cost_usd")


def _num(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def _one(value: str | list[str]) -> str:
    """Segmented controls send a string (or a list of one)."""
    return value if isinstance(value, str) else (value[0] if value else "")


def pivot(rows: list[dict[str, Any]], days: list[str], by: str, measure: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of (day, series, value) as one dict per day with a key per series (s0, s1, …): the shape
    recharts draws as stacked bars. Series keys are positional so names with dots or dashes are safe."""
    names = sorted({str(r.get(by) or "—") for r in rows})
    key_of = {n: f"s{i}" for i, n in enumerate(names)}
    table: dict[str, dict[str, Any]] = {d: {"day": d, **dict.fromkeys(key_of.values(), 0)} for d in days}
    for r in rows:
        d = str(r.get("day"))
        if d in table:
            table[d][key_of[str(r.get(by) or "—")]] += _num(r.get(measure))
    return [table[d] for d in days], names


class UsageState(SessionState):
    loading: bool = True
    error: str = ""
    range_preset: str = "30d"
    since: str = ""
    until: str = ""
    range_error: str = ""
    env_filter: str = ALL_ENVS
    breakdown: str = "model"
    as_of: str = ""

    requests_data: list[dict[str, Any]] = []
    tokens_data: list[dict[str, Any]] = []
    cost_data: list[dict[str, Any]] = []
    series: list[dict[str, str]] = []
    daily: list[dict[str, Any]] = []
    has_latency: bool = False
    table: list[dict[str, str]] = []
    _raw: list[dict[str, Any]] = []
    totals: dict[str, str] = {}

    @rx.var
    def env_choices(self) -> list[str]:
        return [ALL_ENVS, *[e["name"] for e in self.envs]]

    @rx.var
    def has_data(self) -> bool:
        return len(self.table) > 0

    def _window(self) -> tuple[date, date]:
        """[since, until] as whole UTC days, both inclusive."""
        today = datetime.now(UTC).date()
        if self.range_preset in RANGES:
            return today - timedelta(days=RANGES[self.range_preset] - 1), today
        return date.fromisoformat(self.since), date.fromisoformat(self.until)

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
            if self.env_filter not in self.env_choices:
                self.env_filter = ALL_ENVS
            await self._fetch()
        except ApiError as exc:
            if exc.unauthenticated:
                yield self.login_redirect()
                return
            self.error = exc.message
        finally:
            self.loading = False

    async def _report(self, group_by: list[str], since: date, until: date) -> dict[str, Any]:
        params: list[tuple[str, Any]] = [
            ("since", since.isoformat()),
            ("until", (until + timedelta(days=1)).isoformat()),
        ]
        params += [("group_by", g) for g in group_by]
        if self.env_filter != ALL_ENVS:
            params.append(("environment", self.env_filter))
        report: dict[str, Any] = await self.api("GET", f"/orgs/{self.current_org}/usage", params=params)
        return report

    async def _fetch(self) -> None:
        since, until = self._window()
        self.since, self.until = since.isoformat(), until.isoformat()
        days = [(since + timedelta(days=i)).isoformat() for i in range((until - since).days + 1)]
        by_series = await self._report(["day", self.breakdown], since, until)
        per_day = await self._report(["day"], since, until)
        detail = await self._report(["day", "model", "environment"], since, until)
        rows = by_series["rows"]
        self.requests_data, names = pivot(rows, days, self.breakdown, "requests")
        tokens = [{**r, "tokens": _num(r.get("prompt_tokens")) + _num(r.get("completion_tokens"))} for r in rows]
        self.tokens_data, _ = pivot(tokens, days, self.breakdown, "tokens")
        self.cost_data, _ = pivot(rows, days, self.breakdown, "cost")
        self.series = [
            {"key": f"s{i}", "name": n, "color": f"var(--{PALETTE[i % len(PALETTE)]}-9)"} for i, n in enumerate(names)
        ]
        day_rows = {str(r.get("day")): r for r in per_day["rows"]}
        self.daily = []
        for d in days:
            r = day_rows.get(d, {})
            requests = _num(r.get("requests"))
            rate = r.get("error_rate")
            if rate is None:
                rate = (_num(r.get("errors")) / requests) if requests else 0
            self.daily.append(
                {
                    "day": d,
                    "p50": r.get("latency_p50_ms"),
                    "p95": r.get("latency_p95_ms"),
                    "ttft50": r.get("ttft_p50_ms"),
                    "ttft95": r.get("ttft_p95_ms"),
                    "error_rate": round(100 * _num(rate), 2),
                }
            )
        self.has_latency = any(x["p50"] is not None for x in self.daily)
        t = per_day["totals"]
        total_requests = _num(t.get("requests"))
        self.totals = {
            "requests": count(t.get("requests")),
            "tokens": count(_num(t.get("prompt_tokens")) + _num(t.get("completion_tokens"))),
            "cost": usd(t.get("cost_usd", t.get("cost"))),
            "error_rate": f"{100 * _num(t.get('errors')) / total_requests:.2f}%" if total_requests else "0%",
        }
        self.as_of = when(per_day.get("as_of"), "")
        self._raw = [
            {c: r.get(c) for c in TABLE_COLUMNS}
            for r in sorted(detail["rows"], key=lambda r: str(r.get("day")), reverse=True)
        ]
        self.table = [
            {
                "day": str(r["day"]),
                "model": str(r["model"] or ""),
                "environment": str(r["environment"] or ""),
                "requests": count(r["requests"]),
                "tokens": count(_num(r["prompt_tokens"]) + _num(r["completion_tokens"])),
                "errors": count(r["errors"]),
                "cost": usd(r["cost_usd"]),
            }
            for r in self._raw
        ]

    async def _refetch(self) -> Any:
        self.loading = True
        yield
        try:
            await self._fetch()
        except ApiError as exc:
            if exc.unauthenticated:
                yield self.login_redirect()
                return
            self.error = exc.message
        finally:
            self.loading = False

    @rx.event
    async def set_range(self, preset: str | list[str]) -> Any:
        self.range_error = ""
        self.range_preset = _one(preset)
        if self.range_preset == "custom":
            return
        async for out in self._refetch():
            yield out

    @rx.event
    async def apply_custom(self, form: dict[str, Any]) -> Any:
        self.range_error = ""
        try:
            since = date.fromisoformat(str(form.get("since", "")))
            until = date.fromisoformat(str(form.get("until", "")))
        except ValueError:
            self.range_error = "Pick both a start and an end date."
            return
        if since > until:
            self.range_error = "The start date must be on or before the end date."
            return
        if (until - since).days > 366:
            self.range_error = "Pick at most a year."
            return
        self.range_preset = "custom"
        self.since, self.until = since.isoformat(), until.isoformat()
        async for out in self._refetch():
            yield out

    @rx.event
    async def set_env_filter(self, value: str) -> Any:
        self.env_filter = value
        async for out in self._refetch():
            yield out

    @rx.event
    async def set_breakdown(self, value: str | list[str]) -> Any:
        choice = _one(value)
        self.breakdown = choice if choice in ("model", "environment") else "model"
        async for out in self._refetch():
            yield out

    @rx.event
    def export_csv(self) -> Any:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(TABLE_COLUMNS))
        writer.writeheader()
        for r in self._raw:
            writer.writerow({c: "" if r.get(c) is None else r.get(c) for c in TABLE_COLUMNS})
        return rx.download(
            data=buf.getvalue(),
            filename=f"usage-{self.current_org}-{self.since}-{self.until}.csv",
            mime_type="text/csv",
        )
