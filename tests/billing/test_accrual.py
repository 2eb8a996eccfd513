"""The billing ledger: closed hours priced once, re-runs add nothing, late usage becomes a new line,
statements add up, months close, reserved capacity accrues by the hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from cic.billing import accrual, credits, pricing, rollup, statements
from cic.models import BillingAccrual, Org, Plan, Reservation, UsageRecord
from cic.services.authz import Actor
from cic.settings import Settings
from tests.billing.helpers import insert_records, record
from tests.factories import make_env, make_org, make_user

OCT = datetime(2026, 10, 10, 9, 0, tzinfo=UTC)
SYSTEM = Actor.system("test")


def _setup(session: Session, plan: Plan = Plan.developer) -> tuple[Org, str]:
    owner = make_user(session)
    org = make_org(session, owner)
    org.plan = plan.value
    session.add(org)
    session.commit()
    env = make_env(session, owner, org)
    return org, env.id


def _ledger(engine: Engine, org_id: str) -> tuple[int, int, int, int]:
    with engine.connect() as c:
        row = c.execute(
            select(
                func.count(),
                func.sum(BillingAccrual.prompt_tokens + BillingAccrual.completion_tokens),
                func.sum(BillingAccrual.gross_picousd),
                func.sum(BillingAccrual.due_picousd),
            ).where(col(BillingAccrual.org_id) == org_id)
        ).one()
    return tuple(int(v or 0) for v in row)  # type: ignore[return-value]


def _raw_cost(engine: Engine, org_id: str) -> int:
    with engine.connect() as c:
        return int(
            c.execute(select(func.sum(UsageRecord.cost_picousd)).where(col(UsageRecord.org_id) == org_id)).scalar_one()
            or 0
        )


def test_closed_hours_are_priced_once(session: Session, engine: Engine, settings: Settings) -> None:
    org, env = _setup(session)
    insert_records(engine, [record(org.id, env, OCT + timedelta(minutes=10 * i), prompt=100) for i in range(12)])
    rollup.run(engine)

    # Before the hours have ended and settled, nothing is priced.
    res = accrual.run(engine, settings, now=OCT + timedelta(minutes=30))
    assert res.lines == 0

    now = OCT + timedelta(hours=3)
    res = accrual.run(engine, settings, now=now)
    count, tokens, gross, due = _ledger(engine, org.id)
    assert count == 2 and tokens == 12 * 105 and gross == _raw_cost(engine, org.id) == due
    assert accrual.run(engine, settings, now=now).lines == 0
    assert _ledger(engine, org.id)[0] == 2

    # A late record for a priced hour (a spool replay) is billed as a new line, not lost, not doubled.
    insert_records(engine, [record(org.id, env, OCT + timedelta(minutes=5), prompt=1_000)])
    rollup.run(engine)
    accrual.run(engine, settings, now=now + timedelta(minutes=10))
    count, tokens, gross, _ = _ledger(engine, org.id)
    assert count == 3 and tokens == 12 * 105 + 1_005 and gross == _raw_cost(engine, org.id)


def test_free_plan_allowance_and_signup_credit(session: Session, engine: Engine, settings: Settings) -> None:
    org, env = _setup(session, Plan.free)
    owner_id = org.id  # any id: the bonus is once per owner
    credits.grant_signup_bonus(session, org, owner_id, settings)
    session.commit()
    # 300K tokens at $0.05/1M = $0.015; the first 100K are free.
    insert_records(
        engine, [record(org.id, env, OCT + timedelta(minutes=i), prompt=30_000, completion=0) for i in range(10)]
    )
    rollup.run(engine)
    accrual.run(engine, settings, now=OCT + timedelta(hours=2))

    st = statements.statement(session, SYSTEM, org.id, "2026-10")
    assert st.tokens == 300_000
    assert Decimal(st.gross_usd) == Decimal("0.015")
    assert Decimal(st.allowance_usd) == Decimal("0.005")
    assert Decimal(st.credits_usd) == Decimal("0.01")  # paid by the sign-up credit
    assert Decimal(st.amount_due_usd) == 0
    assert [c.kind for c in st.credits_applied] == ["signup"]
    (grant,) = credits.list_credits(session, SYSTEM, org.id)
    assert Decimal(grant.remaining_usd) == Decimal("9.99")


def test_months_close_and_later_usage_bills_in_the_open_month(
    session: Session, engine: Engine, settings: Settings
) -> None:
    org, env = _setup(session)
    insert_records(engine, [record(org.id, env, OCT)])
    rollup.run(engine)
    nov = datetime(2026, 11, 3, tzinfo=UTC)
    res = accrual.run(engine, settings, now=nov)
    assert f"{org.id}:2026-10" in res.months_closed
    october = statements.statement(session, SYSTEM, org.id, "2026-10")
    assert october.status == "closed" and october.lines[0].requests == 1

    insert_records(engine, [record(org.id, env, OCT + timedelta(minutes=1))])  # late, after the close
    rollup.run(engine)
    accrual.run(engine, settings, now=nov + timedelta(hours=1))
    assert statements.statement(session, SYSTEM, org.id, "2026-10").lines[0].requests == 1
    november = statements.statement(session, SYSTEM, org.id, "2026-11")
    assert november.lines[0].requests == 1
    assert [s.month for s in statements.list_statements(session, SYSTEM, org.id)][:2] == ["2026-11", "2026-10"]


def test_reserved_capacity_accrues_hourly(session: Session, engine: Engine, settings: Settings) -> None:
    org, _ = _setup(session)
    session.add(
        Reservation(org_id=org.id, model_id="llama-3-8b", region_code="us-east", tokens_per_s=10, created_at=OCT)
    )
    session.commit()
    accrual.run(engine, settings, now=OCT + timedelta(hours=5, minutes=10))
    st = statements.statement(session, SYSTEM, org.id, "2026-10")
    (line,) = st.reserved
    assert line.hours == 5 and line.tokens_per_s == 10
    price = 10 * 25_920 * pricing.PICO_PER_MICRO  # llama-3-8b us-east: $0.02592 per token/s-month
    expected = sum(
        pricing.reserved_hour_charge(tokens_per_s=10, micros_per_tps_month=25_920, hour=OCT + timedelta(hours=i))
        for i in range(5)
    )
    assert Decimal(line.amount_usd) == pricing.usd(expected) and expected < price
    accrual.run(engine, settings, now=OCT + timedelta(hours=5, minutes=20))
    assert statements.statement(session, SYSTEM, org.id, "2026-10").reserved[0].hours == 5
