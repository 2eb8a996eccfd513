"""Usage records → hourly and daily roll-ups. Incremental, idempotent, and late records folded in.

Each run reads which (hour, org) pairs received records since the cursor — by ``ingested_at``, the
database's clock at insert, so a record replayed from a spool hours later marks its old hour again —
and recomputes those hourly rows from the raw records, then the daily rows of the days they touch
from the hourly rows. Recomputing a bucket from scratch makes a re-run give the same rows; reading a
margin behind the cursor catches rows whose transaction committed after a later one's.

Runs are serialised by an advisory lock on PostgreSQL (``cic.billing.locks``). Each day is its own
transaction, so a backfill of millions of records never holds one giant transaction; the cursor moves
only once all are done.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, func, insert, select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from cic.billing import histogram, locks
from cic.models import RollupCursor, UsageDaily, UsageDailyTotals, UsageHourly, UsageHourlyTotals, UsageRecord
from cic.models.rollups import DIMENSIONS, TOTALS_DIMENSIONS
from cic.models.types import utcnow

CURSOR = "usage_records"
MARGIN = timedelta(minutes=5)
HOUR = timedelta(hours=1)
WHOLE_HOUR_ABOVE = 16  # touched orgs in a bucket above which the whole bucket is recomputed
DAY = timedelta(days=1)
_MEASURES = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost_picousd",
    "latency_ms_sum",
    "ttft_count",
    "ttft_ms_sum",
)

Dims = tuple[str, str, str, str, str]


@dataclass(frozen=True)
class RollupResult:
    hours: int
    days: int
    records: int
    hourly_rows: int
    daily_rows: int
    cursor: datetime | None
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {
            "hours": self.hours,
            "days": self.days,
            "records": self.records,
            "hourly_rows": self.hourly_rows,
            "daily_rows": self.daily_rows,
            "cursor": self.cursor.isoformat() if self.cursor else None,
            "seconds": round(self.seconds, 3),
        }


def floor_hour(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def run(engine: Engine, *, margin: timedelta = MARGIN) -> RollupResult:
    started = time.monotonic()
    with locks.advisory_lock(engine, locks.ROLLUP):
        with Session(engine) as s:
            cursor = s.get(RollupCursor, CURSOR)
            since = cursor.position - margin if cursor else None
            touched, high = _touched(s, since)
        records = hourly_rows = daily_rows = 0
        days: dict[date, list[datetime]] = defaultdict(list)
        for hour in sorted(touched):
            days[hour.date()].append(hour)
        for day, hours in sorted(days.items()):
            # One transaction per day: its hours, then the day from them.
            with Session(engine) as s, s.begin():
                for hour in hours:
                    n_rows, n_records = _fold_hour(s, hour, _which(touched[hour]))
                    hourly_rows += n_rows
                    records += n_records
                daily_rows += _fold_day(s, day, _which(set().union(*(touched[h] for h in hours))))
        if high is not None:
            with Session(engine) as s, s.begin():
                row = s.get(RollupCursor, CURSOR) or RollupCursor(name=CURSOR, position=high)
                row.position = max(row.position, high)
                row.updated_at = utcnow()
                s.add(row)
    return RollupResult(
        hours=len(touched),
        days=len(days),
        records=records,
        hourly_rows=hourly_rows,
        daily_rows=daily_rows,
        cursor=high if high is not None else (cursor.position if cursor else None),
        seconds=time.monotonic() - started,
    )


def _which(orgs: set[str]) -> list[str] | None:
    """A few orgs: just their rows (index on org and time). Many: every org's (index on time)."""
    return sorted(orgs) if len(orgs) <= WHOLE_HOUR_ABOVE else None


def cursor_position(session: Session) -> datetime | None:
    """Usage ingested up to this instant (minus records committed late) is in the roll-ups."""
    row = session.get(RollupCursor, CURSOR)
    return row.position if row else None


def _hour_expr(session: Session) -> Any:
    created = col(UsageRecord.created_at)
    if session.get_bind().dialect.name == "postgresql":
        return func.date_trunc("hour", created)
    return func.strftime("%Y-%m-%d %H:00:00", created)


def _as_hour(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return floor_hour(value)


def _touched(session: Session, since: datetime | None) -> tuple[dict[datetime, set[str]], datetime | None]:
    """The (hour → orgs) that got records ingested at or after ``since``, and the newest ``ingested_at``."""
    hour = _hour_expr(session).label("hour")
    q = select(hour, col(UsageRecord.org_id)).distinct()
    hq = select(func.max(UsageRecord.ingested_at))
    if since is not None:
        q = q.where(col(UsageRecord.ingested_at) >= since)
        hq = hq.where(col(UsageRecord.ingested_at) >= since)
    high = session.execute(hq).scalar_one()
    touched: dict[datetime, set[str]] = defaultdict(set)
    for h, org in session.execute(q):
        touched[_as_hour(h)].add(org)
    if isinstance(high, str):  # pragma: no cover - SQLite returns text for max() of a timestamp
        high = datetime.fromisoformat(high)
    if high is not None and high.tzinfo is None:
        high = high.replace(tzinfo=UTC)
    return touched, high


def _dims_of(row: Any) -> Dims:
    return (row.org_id, row.environment_id, row.api_key_id, row.model_id, row.region_code)


def _fold_hour(session: Session, hour: datetime, orgs: Sequence[str] | None) -> tuple[int, int]:
    """Recompute the hourly rows of ``orgs`` (``None``: every org) for ``hour`` from the raw records.
    Returns (rows, records)."""
    dialect = session.get_bind().dialect.name
    r = UsageRecord
    dims = [col(getattr(r, d)) for d in DIMENSIONS]
    where = [col(r.created_at) >= hour, col(r.created_at) < hour + HOUR]
    if orgs is not None:
        where.append(col(r.org_id).in_(orgs))
    # One pass for the sums and the latency histogram (grouped by latency bucket too), one for TTFT.
    lat = histogram.bucket_sql(col(r.latency_ms), dialect).label("b")
    q = (
        select(
            *dims,
            lat,
            func.count().label("requests"),
            func.sum(case((col(r.status) == "error", 1), else_=0)).label("errors"),
            func.sum(r.prompt_tokens).label("prompt_tokens"),
            func.sum(r.completion_tokens).label("completion_tokens"),
            func.sum(r.cached_tokens).label("cached_tokens"),
            func.sum(r.cost_picousd).label("cost_picousd"),
            func.sum(r.latency_ms).label("latency_ms_sum"),
            func.count(col(r.ttft_ms)).label("ttft_count"),
            func.coalesce(func.sum(r.ttft_ms), 0).label("ttft_ms_sum"),
        )
        .where(*where)
        .group_by(*dims, lat)
    )
    rows: dict[Dims, dict[str, Any]] = {}
    for row in session.execute(q):
        k = _dims_of(row)
        acc = rows.get(k)
        if acc is None:
            acc = rows[k] = {
                **dict(zip(DIMENSIONS, k, strict=True)),
                **dict.fromkeys(_MEASURES, 0),
                "latency_hist": {},
                "ttft_hist": {},
            }
        for m in _MEASURES:
            acc[m] += int(getattr(row, m) or 0)
        acc["latency_hist"][int(row.b)] = int(row.requests)
    tb = histogram.bucket_sql(col(r.ttft_ms), dialect).label("b")
    tq = select(*dims, tb, func.count().label("n")).where(*where, col(r.ttft_ms).is_not(None)).group_by(*dims, tb)
    for row in session.execute(tq):
        rows[_dims_of(row)]["ttft_hist"][int(row.b)] = int(row.n)
    now = utcnow()
    values = [
        {
            **v,
            "latency_hist": histogram.from_counts(v["latency_hist"]),
            "ttft_hist": histogram.from_counts(v["ttft_hist"]),
            "hour": hour,
            "updated_at": now,
        }
        for v in rows.values()
    ]
    _replace(session, UsageHourly, "hour", hour, orgs, values)
    _replace(session, UsageHourlyTotals, "hour", hour, orgs, _over_keys(values, "hour"))
    return len(values), sum(v["requests"] for v in values)


def _fold_day(session: Session, day: date, orgs: Sequence[str] | None) -> int:
    """Recompute the daily rows of ``orgs`` (``None``: every org) for ``day`` from the hourly rows, and
    the day's totals over keys from those."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    h = UsageHourly
    dims = [col(getattr(h, d)) for d in DIMENSIONS]
    where = [col(h.hour) >= start, col(h.hour) < start + DAY]
    if orgs is not None:
        where.append(col(h.org_id).in_(orgs))
    sums = select(*dims, *(func.sum(getattr(h, m)).label(m) for m in _MEASURES)).where(*where).group_by(*dims)
    acc: dict[Dims, dict[str, Any]] = {}
    for row in session.execute(sums):
        k = _dims_of(row)
        acc[k] = {
            **dict(zip(DIMENSIONS, k, strict=True)),
            **{m: int(getattr(row, m) or 0) for m in _MEASURES},
            "latency_hist": [],
            "ttft_hist": [],
        }
    for k, hists in histogram.merged_sql(session, h, ("latency_hist", "ttft_hist"), dims, where).items():
        acc[k].update(hists)
    now = utcnow()
    values = [{**v, "day": day, "updated_at": now} for v in acc.values()]
    _replace(session, UsageDaily, "day", day, orgs, values)
    _replace(session, UsageDailyTotals, "day", day, orgs, _over_keys(values, "day"))
    return len(values)


def _over_keys(values: list[dict[str, Any]], period: str) -> list[dict[str, Any]]:
    """The same rows summed over API keys (histograms merged)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for v in values:
        groups[tuple(v[f] for f in TOTALS_DIMENSIONS)].append(v)
    totals = []
    for rows in groups.values():
        first = rows[0]
        t = {f: first[f] for f in (*TOTALS_DIMENSIONS, period, "updated_at")}
        t.update({m: sum(r[m] for r in rows) for m in _MEASURES})
        t["latency_hist"] = histogram.merge(r["latency_hist"] for r in rows)
        t["ttft_hist"] = histogram.merge(r["ttft_hist"] for r in rows)
        totals.append(t)
    return totals


def _replace(session: Session, table: Any, period: str, at: Any, orgs: Sequence[str] | None, rows: list[Any]) -> None:
    """Delete the bucket's rows (of ``orgs``, or all) and write ``rows`` in their place."""
    old = delete(table).where(getattr(table, period) == at)
    if orgs is not None:
        old = old.where(col(table.org_id).in_(orgs))
    session.execute(old)
    if rows:
        session.execute(insert(table), rows)
