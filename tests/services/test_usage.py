from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from cic import migrations
from cic.billing import histogram, rollup
from cic.db import make_engine, session_scope
from cic.errors import NotFound
from cic.models import UsageRecord
from cic.services import catalog, usage
from cic.services.authz import Actor
from cic.settings import Settings
from tests.billing.helpers import insert_records, record
from tests.factories import make_env, make_org, make_user


def _rec(
    org_id: str, env_id: str, model: str, at: datetime, p: int, c: int, cost: int, status: str = "ok"
) -> UsageRecord:
    return UsageRecord(
        request_id=f"req_{model}_{at.timestamp()}_{p}_{c}",
        org_id=org_id,
        environment_id=env_id,
        api_key_id="key_x",
        model_id=model,
        region_code="us-east",
        endpoint="chat.completions",
        status=status,
        prompt_tokens=p,
        completion_tokens=c,
        cost_picousd=cost,
        created_at=at,
    )


def test_report_groups_and_totals(session: Session, engine: Engine) -> None:
    owner = make_user(session)
    org = make_org(session, owner)
    prod = make_env(session, owner, org, "prod", models=["llama-3-8b", "mistral-7b"])
    dev = make_env(session, owner, org, "dev", models=["llama-3-8b"])
    d1 = datetime(2026, 11, 1, 23, 59, 59, tzinfo=UTC)
    d2 = datetime(2026, 11, 2, 0, 0, 1, tzinfo=UTC)
    session.add_all(
        [
            _rec(org.id, prod.id, "llama-3-8b", d1, 100, 50, 7_500_000),
            _rec(org.id, prod.id, "llama-3-8b", d2, 10, 5, 750_000),
            _rec(org.id, dev.id, "llama-3-8b", d2, 1, 1, 100_000, status="error"),
            _rec(org.id, prod.id, "mistral-7b", d2, 1_000_000, 0, 50_000_000_000),
        ]
    )
    session.commit()
    a = Actor.user(owner.id)
    since, until = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC)
    # Reports read the roll-ups only: nothing shows until the roll-up has run.
    assert usage.report(session, a, org.slug, since=since, until=until).totals.requests == 0
    rollup.run(engine)

    by_model = usage.report(session, a, org.slug, since=since, until=until, group_by=["model"])
    rows = {r.model: r for r in by_model.rows}
    assert rows["llama-3-8b"].requests == 3 and rows["llama-3-8b"].prompt_tokens == 111
    assert rows["llama-3-8b"].errors == 1
    assert rows["mistral-7b"].cost_usd == "0.050000000000"
    assert by_model.totals.requests == 4
    assert by_model.totals.cost_usd == "0.050008350000"

    by_day = usage.report(session, a, org.slug, since=since, until=until, group_by=["day"])
    assert [(r.day, r.requests) for r in by_day.rows] == [(date(2026, 11, 1), 1), (date(2026, 11, 2), 3)]

    by_env = usage.report(session, a, org.slug, since=since, until=until, group_by=["environment", "model"])
    assert {(r.environment, r.model, r.requests) for r in by_env.rows} == {
        ("prod", "llama-3-8b", 2),
        ("dev", "llama-3-8b", 1),
        ("prod", "mistral-7b", 1),
    }

    only_dev = usage.report(session, a, org.slug, since=since, until=until, env_ref="dev", group_by=["model"])
    assert only_dev.totals.requests == 1

    # Hourly resolution: a bound inside an hour takes in the whole hour.
    later = usage.report(session, a, org.slug, since=d2 - timedelta(minutes=30), until=until, group_by=["model"])
    assert later.totals.requests == 4
    later = usage.report(session, a, org.slug, since=d2, until=until, group_by=["model"])
    assert later.totals.requests == 3
    # A range of whole days (daily roll-ups) and one cut inside days (hourly at the ends) agree.
    whole = usage.report(session, a, org.slug, since=since, until=until, group_by=["model"])
    cut = usage.report(
        session, a, org.slug, since=since + timedelta(hours=5), until=until - timedelta(hours=5), group_by=["model"]
    )
    assert whole.totals == cut.totals


def test_report_refuses_other_orgs(session: Session) -> None:
    a, b = make_user(session), make_user(session)
    org = make_org(session, a)
    with pytest.raises(NotFound):
        usage.report(session, Actor.user(b.id), org.slug)


def _hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def _brute_force(
    recs: list[dict[str, Any]], since: datetime, until: datetime, by: tuple[str, ...], env_id: str | None
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """What the roll-ups must answer, from the records themselves: sums and histograms per group."""
    lo, hi = _hour(since), _hour(until) + (timedelta(hours=1) if _hour(until) != until else timedelta(0))
    field = {"day": "day", "model": "model_id", "environment_id": "environment_id", "api_key_id": "api_key_id"}
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in recs:
        if lo <= r["created_at"] < hi and env_id in (None, r["environment_id"]):
            key = tuple(r["created_at"].date() if d == "day" else r[field[d]] for d in by)
            groups.setdefault(key, []).append(r)
    return {
        k: (
            len(rs),
            sum(r["status"] == "error" for r in rs),
            sum(r["prompt_tokens"] for r in rs),
            sum(r["cost_picousd"] for r in rs),
            histogram.of(r["latency_ms"] for r in rs),
            histogram.of(r["ttft_ms"] for r in rs if r["ttft_ms"] is not None),
        )
        for k, rs in groups.items()
    }


@pytest.fixture(params=["postgresql", "sqlite"])
def any_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The test database (PostgreSQL), or a fresh SQLite file: the zero-config default."""
    if request.param == "postgresql":
        yield request.getfixturevalue("engine")
        return
    url = f"sqlite:///{tmp_path / 'cic.db'}"
    migrations.upgrade(url)
    eng = make_engine(Settings(database_url=url))
    with session_scope(eng) as s:
        catalog.seed(s)
    yield eng
    eng.dispose()


def test_any_range_reads_exactly_its_hours(any_engine: Engine) -> None:
    """Ranges cut inside days — read as the day's hours, or as the whole day minus the hours outside —
    give the same sums and the same histograms as the records of those hours, for any grouping."""
    with Session(any_engine, expire_on_commit=False) as session:
        _check_ranges(any_engine, session)


def _check_ranges(engine: Engine, session: Session) -> None:
    owner = make_user(session)
    org = make_org(session, owner)
    prod = make_env(session, owner, org, "prod", models=["llama-3-8b", "mistral-7b"])
    dev = make_env(session, owner, org, "dev", models=["llama-3-8b"])
    t0 = datetime(2026, 10, 4, 0, 10, tzinfo=UTC)
    recs = [
        record(
            org.id,
            (prod.id, dev.id)[i % 2],
            t0 + timedelta(minutes=41 * i),
            model=("llama-3-8b", "mistral-7b")[(i // 2) % 2],
            key_id=("key_a", "key_b", "key_c")[i % 3],
            prompt=1 + i % 50,
            status="error" if i % 17 == 0 else "ok",
            latency_ms=3 + (i * 7919) % 4000,
            ttft_ms=None if i % 3 else 1 + (i * 104729) % 700,
        )
        for i in range(3 * 24 * 60 // 41)  # three days
    ]
    insert_records(engine, recs)
    rollup.run(engine)

    day = timedelta(days=1)
    d0 = datetime(2026, 10, 4, tzinfo=UTC)
    ranges = [(d0, d0 + 3 * day), (d0 - day, d0 + 5 * day)]  # whole days
    for start_h, end_h in ((1, 23), (20, 3), (2, 2), (13, 11), (0, 22), (23, 1)):
        ranges.append((d0 + timedelta(hours=start_h), d0 + 2 * day + timedelta(hours=end_h)))  # both ends cut
        ranges.append((d0 + day + timedelta(hours=start_h), d0 + 2 * day))  # start cut
        ranges.append((d0 + day, d0 + day + timedelta(hours=end_h)))  # end cut, inside one day
    ranges.append((d0 + day + timedelta(hours=3), d0 + day + timedelta(hours=21, minutes=30)))  # one day, both cut
    ranges.append((d0 + timedelta(hours=22), d0 + day + timedelta(hours=2)))  # across one midnight
    ranges.append((d0 + day + timedelta(hours=5), d0 + day + timedelta(hours=5)))  # empty
    for since, until in ranges:
        for by in ((), ("model",), ("day", "environment_id"), ("day", "api_key_id"), ("environment_id", "model")):
            for env_id in (None, dev.id):
                got = usage.aggregate(session, since, until, org_id=org.id, env_id=env_id, by=by, percentiles=True)
                want = _brute_force(recs, since, until, by, env_id)
                assert {
                    k: (t.requests, t.errors, t.prompt_tokens, t.cost_picousd, t.latency, t.ttft)
                    for k, t in got.items()
                } == want, (since, until, by, env_id)
                sums = usage.aggregate(session, since, until, org_id=org.id, env_id=env_id, by=by)
                assert {k: (t.requests, t.errors, t.prompt_tokens, t.cost_picousd) for k, t in sums.items()} == {
                    k: w[:4] for k, w in want.items()
                }


def test_plan_reads_the_fewest_hourly_rows() -> None:
    now = datetime(2026, 11, 28, 10, 30, tzinfo=UTC)
    day = timedelta(days=1)
    # The dashboard's 30 days up to now: the first day's two hours as they are, today as a whole day
    # minus its hours still to come (which have no rows).
    plan = usage._plan(now - 30 * day + timedelta(hours=12), now, now)
    assert plan.days == (date(2026, 10, 30), date(2026, 11, 29))
    assert plan.plus == ((datetime(2026, 10, 29, 22, tzinfo=UTC), datetime(2026, 10, 30, tzinfo=UTC)),)
    assert plan.minus == ((datetime(2026, 11, 28, 11, tzinfo=UTC), datetime(2026, 11, 29, tzinfo=UTC)),)
    # In the past, a day mostly inside the range is read whole minus its other hours; one mostly
    # outside, as its hours in the range.
    past = usage._plan(datetime(2026, 10, 1, 3, tzinfo=UTC), datetime(2026, 10, 3, 3, tzinfo=UTC), now)
    assert past.days == (date(2026, 10, 1), date(2026, 10, 3))
    assert past.minus == ((datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 1, 3, tzinfo=UTC)),)
    assert past.plus == ((datetime(2026, 10, 3, tzinfo=UTC), datetime(2026, 10, 3, 3, tzinfo=UTC)),)
    hour = datetime(2026, 11, 28, 10, tzinfo=UTC)
    assert usage._plan(hour, hour, now) == usage._Plan()  # an empty range reads nothing
