"""Roll-ups: sums and percentiles right, incremental, idempotent, late records folded in, SQLite too."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from cic import migrations
from cic.billing import histogram, rollup
from cic.db import make_engine
from cic.models import UsageDaily, UsageDailyTotals, UsageHourly, UsageHourlyTotals, UsageRecord
from cic.settings import Settings
from tests.billing.helpers import insert_records, record
from tests.factories import make_env, make_org, make_user

T0 = datetime(2026, 10, 5, 10, 0, tzinfo=UTC)


def _hourly(engine: Engine) -> list[tuple[object, ...]]:
    with Session(engine) as s:
        rows = s.scalars(select(UsageHourly).order_by(col(UsageHourly.hour), col(UsageHourly.api_key_id))).all()
        return [
            (
                r.hour,
                r.org_id,
                r.environment_id,
                r.api_key_id,
                r.model_id,
                r.requests,
                r.errors,
                r.prompt_tokens,
                r.completion_tokens,
                r.cost_picousd,
                r.latency_hist,
                r.ttft_hist,
            )
            for r in rows
        ]


def _totals(
    engine: Engine, table: type[UsageHourly | UsageDaily | UsageDailyTotals | UsageHourlyTotals]
) -> tuple[int, int, int, int]:
    with engine.connect() as c:
        row = c.execute(
            select(
                func.sum(table.requests),
                func.sum(table.prompt_tokens),
                func.sum(table.completion_tokens),
                func.sum(table.cost_picousd),
            )
        ).one()
    return tuple(int(v or 0) for v in row)  # type: ignore[return-value]


def _raw_totals(engine: Engine) -> tuple[int, int, int, int]:
    with engine.connect() as c:
        row = c.execute(
            select(
                func.count(),
                func.sum(UsageRecord.prompt_tokens),
                func.sum(UsageRecord.completion_tokens),
                func.sum(UsageRecord.cost_picousd),
            )
        ).one()
    return tuple(int(v or 0) for v in row)  # type: ignore[return-value]


def test_rollup_sums_percentiles_and_days(session: Session, engine: Engine) -> None:
    owner = make_user(session)
    org = make_org(session, owner)
    env = make_env(session, owner, org)
    rows = [record(org.id, env.id, T0 + timedelta(minutes=i), latency_ms=10 * (i + 1)) for i in range(100)]
    rows += [record(org.id, env.id, T0 + timedelta(hours=20), key_id="key_b", status="error", ttft_ms=40)]
    insert_records(engine, rows)

    res = rollup.run(engine)
    assert res.records == 101 and res.hours == 3 and res.days == 2
    assert _totals(engine, UsageHourly) == _raw_totals(engine) == _totals(engine, UsageDaily)
    assert _totals(engine, UsageDailyTotals) == _raw_totals(engine) == _totals(engine, UsageHourlyTotals)

    with Session(engine) as s:
        first = s.scalars(select(UsageHourly).where(col(UsageHourly.hour) == T0)).one()
        assert (
            first.requests == 60 and first.errors == 0 and first.latency_ms_sum == sum(10 * (i + 1) for i in range(60))
        )
        # p50 of 10, 20, ..., 600 ms is 300 ms; histogram buckets keep it within 10 %.
        p50 = histogram.percentile(first.latency_hist, 0.5)
        assert p50 is not None and 270 <= p50 <= 330
        days = {d.day: d for d in s.scalars(select(UsageDaily))}
        assert set(days) == {date(2026, 10, 5), date(2026, 10, 6)}
        assert days[date(2026, 10, 5)].requests == 100
        assert days[date(2026, 10, 6)].errors == 1 and days[date(2026, 10, 6)].ttft_count == 1
        # The day's histograms, merged from its hours by the database, are those of its records.
        assert days[date(2026, 10, 5)].latency_hist == histogram.of(10 * (i + 1) for i in range(100))
        assert days[date(2026, 10, 6)].ttft_hist == histogram.of([40])
        # Over keys: the day of key_b alone, and the latency histograms merged.
        totals = {(t.day, t.model_id): t for t in s.scalars(select(UsageDailyTotals))}
        assert totals[(date(2026, 10, 5), "llama-3-8b")].latency_hist == days[date(2026, 10, 5)].latency_hist


def test_rerun_is_idempotent_and_late_records_are_folded_in(session: Session, engine: Engine) -> None:
    owner = make_user(session)
    org = make_org(session, owner)
    env = make_env(session, owner, org)
    insert_records(engine, [record(org.id, env.id, T0 + timedelta(minutes=i)) for i in range(10)])
    rollup.run(engine)
    before = _hourly(engine)
    again = rollup.run(engine)  # nothing new: only the margin behind the cursor is looked at again
    assert _hourly(engine) == before
    assert again.records <= 10

    # A record of that old hour arrives late (a spool replay): its hour and day are folded again.
    insert_records(engine, [record(org.id, env.id, T0 + timedelta(minutes=59), prompt=1000)])
    # ... even once the cursor has moved on past the margin.
    with engine.begin() as c:
        c.execute(
            update(UsageRecord)
            .values(ingested_at=func.now() + timedelta(hours=1))
            .where(col(UsageRecord.prompt_tokens) == 1000)
        )
    rollup.run(engine)
    assert _totals(engine, UsageHourly) == _raw_totals(engine) == _totals(engine, UsageDaily)
    with Session(engine) as s:
        h = s.scalars(select(UsageHourly).where(col(UsageHourly.hour) == T0)).one()
        assert h.requests == 11 and h.prompt_tokens == 1100


def test_rollup_on_sqlite(tmp_path: Path) -> None:
    """The zero-config default: the same roll-up on a SQLite file (ln/floor provided by cic.db)."""
    url = f"sqlite:///{tmp_path / 'cic.db'}"
    migrations.upgrade(url)
    eng = make_engine(Settings(database_url=url))
    try:
        rows = [record("org_x", "env_x", T0 + timedelta(minutes=5 * i), latency_ms=i + 1) for i in range(30)]
        insert_records(eng, rows)
        res = rollup.run(eng)
        assert res.records == 30 and res.hours == 3
        assert _totals(eng, UsageHourly) == _raw_totals(eng) == _totals(eng, UsageDaily)
        with Session(eng) as s:
            (day,) = s.scalars(select(UsageDaily)).all()
            assert day.latency_hist == histogram.of(range(1, 31))
            (totals,) = s.scalars(select(UsageDailyTotals)).all()
            assert totals.latency_hist == day.latency_hist
        rollup.run(eng)
        assert _totals(eng, UsageHourly) == _raw_totals(eng)
    finally:
        eng.dispose()


def test_percentile_accuracy() -> None:
    values = [1 + (i * 37) % 5000 for i in range(10_000)]
    counts: dict[int, int] = {}
    for v in values:
        b = histogram.bucket(v)
        counts[b] = counts.get(b, 0) + 1
    hist = histogram.from_counts(counts)
    assert hist == histogram.of(values) and histogram.counts(hist) == counts
    exact = sorted(values)
    for q in (0.5, 0.95, 0.99):
        true = exact[int(q * len(exact)) - 1]
        got = histogram.percentile(hist, q)
        assert got is not None and abs(got - true) / true < 0.06


def test_histograms_merge_position_by_position() -> None:
    """Arrays that start at different buckets and have gaps add up to the histogram of all their values."""
    parts: list[list[float]] = [[3000, 3100], [0.5, 1, 40, 41, 2000], [], [250] * 7, [9_000_000]]
    hists = [histogram.of(p) for p in parts]
    assert hists[2] == [] and hists[3] == [histogram.bucket(250), 7]
    assert hists[1][0] == 0 and hists[1][1] == 2  # below 1 ms: bucket 0
    everything = [v for p in parts for v in p]
    merged = histogram.merge([*hists, None])
    assert merged == histogram.of(everything)
    assert merged[1] != 0 and merged[-1] != 0  # both ends non-empty: equal histograms are equal lists
    assert histogram.merge(reversed(hists)) == merged
    # In place, one at a time, in any order; taking away and trimming gives the rest's histogram.
    acc: list[int] = []
    for h in (hists[3], hists[1], hists[4], hists[0]):
        histogram.add(acc, h)
    assert acc == merged
    histogram.add(acc, hists[1], -1)  # the lowest buckets
    histogram.add(acc, hists[4], -1)  # the highest
    histogram.trim(acc)
    assert acc == histogram.merge([hists[0], hists[3]]) == histogram.of([3000, 3100, *[250] * 7])
    histogram.add(acc, hists[0], -1)
    histogram.add(acc, hists[3], -1)
    histogram.trim(acc)
    assert acc == []
    assert histogram.merge([]) == [] and histogram.merge([hists[3]]) == hists[3]
    assert sum(histogram.counts(merged).values()) == len(everything)
    for q in (0.01, 0.5, 0.95, 1.0):
        b = histogram.bucket(sorted(everything)[max(1, math.ceil(q * len(everything))) - 1])
        assert histogram.percentile(merged, q) == (round(1.1 ** (b + 0.5)) if b > 0 else 1)
    assert histogram.percentile([], 0.5) is None
