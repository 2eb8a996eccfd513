"""Usage queries, answered from the hourly and daily roll-ups — never from the raw usage records.

A range is read at hourly resolution (``since`` is rounded down and ``until`` up to the hour): whole
UTC days from ``usage_daily``, the partial days at either end from ``usage_hourly``. The database sums
and groups; latency and TTFT percentiles come from histograms merged by the database as well, so a
query returns a few hundred small rows whatever the traffic was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Date, cast, func, or_
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from cic.billing import histogram, rollup
from cic.billing.pricing import usd
from cic.models import Environment, UsageDaily, UsageDailyTotals, UsageHourly, UsageHourlyTotals
from cic.models.types import utcnow
from cic.models.usage import UsageReport, UsageRow
from cic.services.authz import Actor, authorize_org
from cic.services.environments import find_env

GroupBy = Literal["day", "model", "environment"]
Dimension = Literal["day", "model", "environment_id", "api_key_id", "org_id"]
DAY = timedelta(days=1)
_SUMS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_picousd")


@dataclass
class Totals:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_picousd: int = 0
    latency: histogram.Histogram = field(default_factory=list)
    ttft: histogram.Histogram = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def merge(self, other: Totals) -> None:
        for f in _SUMS:
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
        return ([(lo, hi)] if lo < hi else []), None
    return [(a, b) for a, b in ((lo, d0), (d1, hi)) if a < b], (d0, d1)


def _as_date(v: Any) -> date:
    if isinstance(v, datetime):
        return v.date()
    if isinstance(v, str):
        return date.fromisoformat(v[:10])
    assert isinstance(v, date)
    return v


def aggregate(
    session: Session,
    since: datetime,
    until: datetime,
    *,
    org_id: str | None = None,
    env_id: str | None = None,
    by: Sequence[Dimension] = (),
    percentiles: bool = False,
) -> dict[tuple[Any, ...], Totals]:
    """Roll-up totals over [since, until) (hourly resolution) grouped by ``by``, summed by the database;
    with ``percentiles``, the merged latency and TTFT histograms too."""
    pg = session.get_bind().dialect.name == "postgresql"
    out: dict[tuple[Any, ...], Totals] = {}
    hourly_spans, days = _spans(since, until)
    sources: list[tuple[Any, list[Any]]] = []
    # Without a key dimension, the totals over keys hold the same sums in a fraction of the rows.
    per_key = "api_key_id" in by
    if hourly_spans:
        hourly: Any = UsageHourly if per_key else UsageHourlyTotals
        h = col(hourly.hour)
        sources.append((hourly, [or_(*((h >= a) & (h < b) for a, b in hourly_spans))]))
    if days is not None:
        daily: Any = UsageDaily if per_key else UsageDailyTotals
        sources.append((daily, [col(daily.day) >= days[0].date(), col(daily.day) < days[1].date()]))
    for table, where in sources:
        if org_id is not None:
            where.append(table.org_id == org_id)
        if env_id is not None:
            where.append(table.environment_id == env_id)
        groups = [_dimension(table, d, pg) for d in by]
        q = sa_select(*groups, *(func.sum(getattr(table, m)) for m in _SUMS)).where(*where)
        if groups:
            q = q.group_by(*groups)
        for row in session.execute(q):
            key = _key(row[: len(groups)], by)
            values = row[len(groups) :]
            if values[0] is None:
                continue  # no rows at all in this span
            t = out.setdefault(key, Totals())
            for m, v in zip(_SUMS, values, strict=True):
                setattr(t, m, getattr(t, m) + int(v or 0))
        if percentiles:
            merged = histogram.merged_sql(session, table, ("latency_hist", "ttft_hist"), groups, where)
            for k, hists in merged.items():
                t = out.setdefault(_key(k, by), Totals())
                t.latency = histogram.merge((t.latency, hists["latency_hist"]))
                t.ttft = histogram.merge((t.ttft, hists["ttft_hist"]))
    return out


def _dimension(table: Any, d: Dimension, pg: bool) -> Any:
    if d == "day":
        if not hasattr(table, "hour"):
            return col(table.day)
        return cast(col(table.hour), Date) if pg else func.date(col(table.hour))
    return getattr(table, "model_id" if d == "model" else d)


def _key(values: Sequence[Any], by: Sequence[Dimension]) -> tuple[Any, ...]:
    return tuple(_as_date(v) if d == "day" else v for v, d in zip(values, by, strict=True))


def total(session: Session, org_id: str, since: datetime, until: datetime, *, env_id: str | None = None) -> Totals:
    return aggregate(session, since, until, org_id=org_id, env_id=env_id).get((), Totals())


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
    dims: list[Dimension] = ["environment_id" if g == "environment" else g for g in group_by]
    groups = aggregate(session, since, until, org_id=org.id, env_id=env_id, by=dims, percentiles=True)
    labelled: dict[tuple[Any, ...], Totals] = {}
    for key, t in groups.items():
        label = tuple(names.get(v, v) if g == "environment" else v for g, v in zip(group_by, key, strict=True))
        labelled.setdefault(label, Totals()).merge(t)
    rows = [labelled[k].row(**dict(zip(group_by, k, strict=True))) for k in sorted(labelled, key=_sort_key)]
    totals = Totals()
    for t in labelled.values():
        totals.merge(t)
    return UsageReport(
        org_id=org.id,
        since=since,
        until=until,
        group_by=list(group_by),
        rows=rows,
        totals=totals.row(),
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
    return {
        k[0]: OrgTotals(t.requests, t.tokens, t.cost_picousd)
        for k, t in aggregate(session, since, until, by=["org_id"]).items()
    }
