"""Usage queries, answered from the hourly and daily roll-ups — never from the raw usage records.

A range is read at hourly resolution (``since`` is rounded down and ``until`` up to the hour): whole
UTC days from the daily roll-ups, and a day the range cuts either from its hourly rows inside the range
or as its daily row minus its hourly rows outside (whichever is fewer rows; see ``_plan``). Without a
key dimension the totals over keys are read, one row per environment × model × region per day or hour.
Sums alone are grouped by the database; with percentiles the rows come back as they are (a few
hundred to a couple of thousand for a month of a busy org) and their latency and TTFT histograms —
short integer arrays — are added up here, whatever the traffic was.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import BigInteger, Date, cast, func, literal_column, or_, union_all
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from cic import db
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

    @classmethod
    def combine(cls, parts: Sequence[Totals]) -> Totals:
        """The sum of ``parts`` (each histogram merged once, whatever their number)."""
        if len(parts) == 1:
            return parts[0]
        t = cls(*(sum(getattr(p, f) for p in parts) for f in _SUMS))
        t.latency = histogram.merge(p.latency for p in parts)
        t.ttft = histogram.merge(p.ttft for p in parts)
        return t

    def row(self, **labels: Any) -> UsageRow:
        cost = usd(self.cost_picousd)
        latency_p50, latency_p95 = histogram.percentiles(self.latency, (0.5, 0.95))
        ttft_p50, ttft_p95 = histogram.percentiles(self.ttft, (0.5, 0.95))
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
            latency_p50_ms=latency_p50,
            latency_p95_ms=latency_p95,
            ttft_p50_ms=ttft_p50,
            ttft_p95_ms=ttft_p95,
        )


def _floor_day(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def _ceil_hour(t: datetime) -> datetime:
    f = rollup.floor_hour(t)
    return f if f == t else f + rollup.HOUR


Span = tuple[datetime, datetime]


@dataclass(frozen=True)
class _Plan:
    """How a range is read: whole days from the daily roll-ups, plus hours from the hourly ones, minus
    the hours of some of those days that lie outside the range."""

    days: tuple[date, date] | None = None
    plus: tuple[Span, ...] = ()
    minus: tuple[Span, ...] = ()


def _plan(since: datetime, until: datetime, now: datetime) -> _Plan:
    """[since, until) at hourly resolution. Whole days come from the daily roll-ups. A day the range
    cuts is read either as its hours inside the range, or as the whole day minus its hours outside —
    whichever reads fewer hourly rows (a daily row is the exact sum of its day's hourly rows, and
    hours after ``now`` have none yet). So a range ending now reads today as one row per group, and no
    cut day costs more than half a day of hourly rows."""
    lo, hi = rollup.floor_hour(since.astimezone(UTC)), _ceil_hour(until.astimezone(UTC))
    if lo >= hi:
        return _Plan()
    filled = _ceil_hour(now.astimezone(UTC))

    def cost(a: datetime, b: datetime) -> int:
        return max(0, (min(b, filled) - a) // rollup.HOUR)

    days: list[datetime] = []
    plus: list[Span] = []
    minus: list[Span] = []
    day = _floor_day(lo)
    while day < hi:
        a, b = max(lo, day), min(hi, day + DAY)
        outside = [(x, y) for x, y in ((day, a), (b, day + DAY)) if x < y]
        if not outside:
            days.append(day)
        elif 1 + sum(cost(x, y) for x, y in outside) < cost(a, b):
            days.append(day)
            minus.extend(outside)
        else:
            plus.append((a, b))
        day += DAY
    whole = (days[0].date(), (days[-1] + DAY).date()) if days else None
    return _Plan(whole, tuple(plus), tuple(minus))


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
    with ``percentiles``, the latency and TTFT histograms too.

    One statement reads every part of the range (so all parts come from one snapshot, which the
    subtraction of hours needs). With ``percentiles`` the matching rows come back as they are and are
    added up here: they are few (without a key dimension, the totals over keys: one row per
    environment × model × region per day or hour) and their histograms are short integer arrays,
    which Python adds position by position several times faster than SQL can expand and re-group them.
    """
    pg = session.get_bind().dialect.name == "postgresql"
    plan = _plan(since, until, utcnow())
    # Without a key dimension, the totals over keys hold the same sums in a fraction of the rows.
    per_key = "api_key_id" in by
    hourly: Any = UsageHourly if per_key else UsageHourlyTotals
    daily: Any = UsageDaily if per_key else UsageDailyTotals
    parts: list[tuple[Any, list[Any], int]] = []
    if plan.days is not None:
        parts.append((daily, [col(daily.day) >= plan.days[0], col(daily.day) < plan.days[1]], 1))
    h = col(hourly.hour)
    for spans, sign in ((plan.plus, 1), (plan.minus, -1)):
        if spans:
            parts.append((hourly, [or_(*((h >= a) & (h < b) for a, b in spans))], sign))
    if not parts:
        return {}
    selects = []
    for table, where, sign in parts:
        if org_id is not None:
            where.append(table.org_id == org_id)
        if env_id is not None:
            where.append(table.environment_id == env_id)
        groups = [_dimension(table, d, pg).label(f"g{i}") for i, d in enumerate(by)]
        if percentiles:
            hists = (table.latency_hist, table.ttft_hist)
            q = sa_select(literal_column(str(sign)), *groups, *(getattr(table, m) for m in _SUMS), *hists)
            selects.append(q.where(*where))
        else:
            sums = (cast(func.sum(getattr(table, m)), BigInteger) for m in _SUMS)
            q = sa_select(literal_column(str(sign)), *groups, *sums)
            selects.append(q.where(*where).group_by(*groups) if groups else q.where(*where))
    out: dict[tuple[Any, ...], Totals] = {}
    n = len(by)
    stmt = (union_all(*selects) if len(selects) > 1 else selects[0]).execution_options(**{db.BINARY_RESULTS: True})
    # Core, not ORM, execution; rows fetched 50 at a time (one C call per batch, not per row) and each
    # batch dropped once added. Holding all of them at once made ~8 young-generation collections per
    # report, and a full collection (~100 ms here) every dozen reports: the p95 on the bench.
    for row in itertools.chain.from_iterable(session.connection().execute(stmt).partitions(50)):
        if row[n + 1] is None:
            continue  # a sum over no rows
        sign = row[0]
        key = _key(row[1 : n + 1], by)
        t = out.get(key)
        if t is None:
            t = out[key] = Totals()
        t.requests += sign * row[n + 1]
        t.errors += sign * row[n + 2]
        t.prompt_tokens += sign * row[n + 3]
        t.completion_tokens += sign * row[n + 4]
        t.cached_tokens += sign * row[n + 5]
        t.cost_picousd += sign * row[n + 6]
        if percentiles:
            histogram.add(t.latency, row[n + 7], sign)
            histogram.add(t.ttft, row[n + 8], sign)
    if plan.minus:  # groups with no usage left in the range, and buckets emptied at either end
        out = {k: t for k, t in out.items() if t.requests}
        for t in out.values():
            histogram.trim(t.latency)
            histogram.trim(t.ttft)
    return out


def _dimension(table: Any, d: Dimension, pg: bool) -> Any:
    if d == "day":
        if not hasattr(table, "hour"):
            return col(table.day)
        return cast(col(table.hour), Date) if pg else func.date(col(table.hour))
    return getattr(table, "model_id" if d == "model" else d)


def _key(values: Sequence[Any], by: Sequence[Dimension]) -> tuple[Any, ...]:
    if "day" not in by:
        return tuple(values)
    return tuple(v if d != "day" or type(v) is date else _as_date(v) for v, d in zip(values, by, strict=True))


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
    # Environments are shown by name; two with one name (one deleted, one new) make one row.
    parts: dict[tuple[Any, ...], list[Totals]] = {}
    for key, t in groups.items():
        label = tuple(names.get(v, v) if g == "environment" else v for g, v in zip(group_by, key, strict=True))
        parts.setdefault(label, []).append(t)
    labelled = {label: Totals.combine(ts) for label, ts in parts.items()}
    rows = [labelled[k].row(**dict(zip(group_by, k, strict=True))) for k in sorted(labelled, key=_sort_key)]
    totals = Totals.combine(list(labelled.values())) if labelled else Totals()
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
