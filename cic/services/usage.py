"""Usage queries, answered from the hourly and daily roll-ups — never from the raw usage records.

A range is read at hourly resolution (``since`` is rounded down and ``until`` up to the hour): whole
UTC days from ``usage_daily``, the partial days at either end from ``usage_hourly``. Latency and TTFT
percentiles come from the merged histograms of the rows read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from cic.billing import histogram, rollup
from cic.billing.pricing import usd
from cic.models import Environment, UsageDaily, UsageHourly
from cic.models.types import utcnow
from cic.models.usage import UsageReport, UsageRow
from cic.services.authz import Actor, authorize_org
from cic.services.environments import find_env

GroupBy = Literal["day", "model", "environment"]
DAY = timedelta(days=1)


@dataclass
class _Acc:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_picousd: int = 0
    latency: histogram.Histogram = field(default_factory=dict)
    ttft: histogram.Histogram = field(default_factory=dict)

    def add(self, r: UsageHourly | UsageDaily) -> None:
        self.requests += r.requests
        self.errors += r.errors
        self.prompt_tokens += r.prompt_tokens
        self.completion_tokens += r.completion_tokens
        self.cached_tokens += r.cached_tokens
        self.cost_picousd += r.cost_picousd
        self.latency = histogram.merge((self.latency, r.latency_hist))
        self.ttft = histogram.merge((self.ttft, r.ttft_hist))

    def merge(self, other: _Acc) -> None:
        for f in ("requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_picousd"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        self.latency = histogram.merge((self.latency, other.latency))
        self.ttft = histogram.merge((self.ttft, other.ttft))

    def row(self, **labels: Any) -> UsageRow:
        cost = usd(self.cost_picousd)
        return UsageRow(
            **labels,
            requests=self.requests,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cached_tokens=self.cached_tokens,
            errors=self.errors,
            error_rate=round(self.errors / self.requests, 6) if self.requests else 0.0,
            cost=float(cost),
            cost_usd=format(cost, "f"),
            latency_p50_ms=histogram.percentile(self.latency, 0.5),
            latency_p95_ms=histogram.percentile(self.latency, 0.95),
            ttft_p50_ms=histogram.percentile(self.ttft, 0.5),
            ttft_p95_ms=histogram.percentile(self.ttft, 0.95),
        )


def _floor_day(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def _ceil_hour(t: datetime) -> datetime:
    f = rollup.floor_hour(t)
    return f if f == t else f + rollup.HOUR


def _spans(
    since: datetime, until: datetime
) -> tuple[list[tuple[datetime, datetime]], tuple[datetime, datetime] | None]:
    """[since, until) at hourly resolution as (hourly spans, whole-day span)."""
    lo, hi = rollup.floor_hour(since.astimezone(UTC)), _ceil_hour(until.astimezone(UTC))
    d0 = _floor_day(lo) if _floor_day(lo) == lo else _floor_day(lo) + DAY
    d1 = _floor_day(hi)
    if d0 >= d1:
        return [(lo, hi)], None
    return [(a, b) for a, b in ((lo, d0), (d1, hi)) if a < b], (d0, d1)


def rollup_rows(
    session: Session, org_id: str, since: datetime, until: datetime, env_id: str | None = None
) -> Iterable[tuple[date, UsageHourly | UsageDaily]]:
    """(day, roll-up row) pairs covering [since, until) at hourly resolution, whole days from the daily
    table and the rest from the hourly one."""
    hourly_spans, days = _spans(since, until)
    for a, b in hourly_spans:
        q = select(UsageHourly).where(
            UsageHourly.org_id == org_id, col(UsageHourly.hour) >= a, col(UsageHourly.hour) < b
        )
        if env_id:
            q = q.where(UsageHourly.environment_id == env_id)
        for h in session.exec(q):
            yield h.hour.date(), h
    if days is not None:
        d0, d1 = days
        dq = select(UsageDaily).where(
            UsageDaily.org_id == org_id, col(UsageDaily.day) >= d0.date(), col(UsageDaily.day) < d1.date()
        )
        if env_id:
            dq = dq.where(UsageDaily.environment_id == env_id)
        for d in session.exec(dq):
            yield d.day, d


def report(
    session: Session,
    actor: Actor,
    org_ref: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    env_ref: str | None = None,
    group_by: list[GroupBy] | None = None,
) -> UsageReport:
    org, _ = authorize_org(session, actor, org_ref)
    until = until or utcnow()
    since = since or (until - timedelta(days=30))
    group_by = list(dict.fromkeys(group_by or ["day"]))
    env_id = None
    if env_ref:
        # A deleted environment's usage stays queryable by id.
        env_id = env_ref if env_ref.startswith("env_") else find_env(session, org, env_ref).id
    names = dict(session.exec(select(Environment.id, Environment.name).where(Environment.org_id == org.id)).all())

    groups: dict[tuple[Any, ...], _Acc] = {}
    for day, r in rollup_rows(session, org.id, since, until, env_id):
        key = tuple(
            day if g == "day" else r.model_id if g == "model" else names.get(r.environment_id, r.environment_id)
            for g in group_by
        )
        groups.setdefault(key, _Acc()).add(r)
    rows = [groups[k].row(**dict(zip(group_by, k, strict=True))) for k in sorted(groups, key=_sort_key)]
    total = _Acc()
    for acc in groups.values():
        total.merge(acc)
    return UsageReport(
        org_id=org.id,
        since=since,
        until=until,
        group_by=list(group_by),
        rows=rows,
        totals=total.row(),
        as_of=rollup.cursor_position(session),
    )


def _sort_key(key: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(str(k) for k in key)


@dataclass(frozen=True)
class OrgTotals:
    requests: int = 0
    tokens: int = 0
    cost_picousd: int = 0


def totals_by_org(session: Session, since: datetime, until: datetime) -> dict[str, OrgTotals]:
    """Requests, tokens and list cost per org over a range (hourly resolution), summed in the database."""
    out: dict[str, list[int]] = {}

    def add(table: Any, *where: Any) -> None:
        q = (
            sa_select(
                col(table.org_id),
                func.sum(table.requests),
                func.sum(table.prompt_tokens + table.completion_tokens),
                func.sum(table.cost_picousd),
            )
            .where(*where)
            .group_by(col(table.org_id))
        )
        for org_id, req, tok, cost in session.execute(q):
            acc = out.setdefault(org_id, [0, 0, 0])
            acc[0] += int(req or 0)
            acc[1] += int(tok or 0)
            acc[2] += int(cost or 0)

    hourly_spans, days = _spans(since, until)
    for a, b in hourly_spans:
        add(UsageHourly, col(UsageHourly.hour) >= a, col(UsageHourly.hour) < b)
    if days is not None:
        add(UsageDaily, col(UsageDaily.day) >= days[0].date(), col(UsageDaily.day) < days[1].date())
    return {k: OrgTotals(*v) for k, v in out.items()}
