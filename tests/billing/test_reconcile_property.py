"""Money is exact: for thousands of randomized requests — any models, environments, keys, hours, plans,
credits, late records from a spool replay and a lost Stripe answer — usage records = roll-ups = ledger =
exported meter events = what Stripe holds, to the token and the micro-dollar."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from cic.billing import accrual, credits, export, reconcile, rollup
from cic.billing.pricing import PICO_PER_MICRO, month_of
from cic.models import BillingAccount, BillingAccrual, Org, UsageRecord
from cic.models.billing import BillingStatus, CreditKind
from cic.models.types import utcnow
from cic.settings import Settings
from tests.billing.helpers import insert_records, record
from tests.factories import make_env, make_org, make_user
from tests.fakes.stripe_server import StripeFake

MODELS = {"llama-3-8b": (50_000, 50_000), "qwen-2.5-72b": (600_000, 800_000), "all-minilm-l6-v2": (10_000, 0)}

request = st.tuples(
    st.integers(min_value=0, max_value=27 * 60),  # minutes before "two hours ago"
    st.sampled_from(sorted(MODELS)),
    st.integers(min_value=0, max_value=2),  # environment
    st.integers(min_value=0, max_value=3),  # key
    st.integers(min_value=0, max_value=8_000),  # prompt tokens
    st.integers(min_value=0, max_value=2_000),  # completion tokens
    st.sampled_from(["ok", "ok", "ok", "error", "cancelled"]),
)


def _row(org_id: str, envs: list[str], now: Any, r: tuple[Any, ...]) -> dict[str, Any]:
    minutes, model, env, key, prompt, completion, status = r
    price_in, price_out = MODELS[model]
    return record(
        org_id,
        envs[env],
        now - timedelta(hours=2, minutes=minutes),
        model=model,
        key_id=f"key_{key}",
        prompt=prompt,
        completion=completion,
        cost=prompt * price_in + completion * price_out,
        status=status,
    )


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    requests=st.lists(request, min_size=100, max_size=700),
    late=st.lists(request, max_size=60),
    plan=st.sampled_from(["free", "developer"]),
    credit_cents=st.sampled_from([0, 3, 500]),
    lose_an_answer=st.booleans(),
)
def test_reconciliation_is_exact(
    session: Session,
    engine: Engine,
    billing_settings: Settings,
    stripe_ready: dict[str, str],
    stripe_fake: StripeFake,
    requests: list[tuple[Any, ...]],
    late: list[tuple[Any, ...]],
    plan: str,
    credit_cents: int,
    lose_an_answer: bool,
) -> None:
    owner = make_user(session)
    org = make_org(session, owner, name=f"Prop {secrets.token_hex(4)}")
    org.plan = plan
    session.add(org)
    envs = [make_env(session, owner, org, name=f"env{i}").id for i in range(3)]
    if credit_cents:
        credits.add_grant(session, org.id, kind=CreditKind.promotional, amount_micros=credit_cents * 10_000)
    customer = stripe_fake.client().v1.customers.create({"name": org.name})
    session.add(
        BillingAccount(
            org_id=org.id,
            stripe_customer_id=customer.id,
            status=BillingStatus.active.value,
            subscribed_at=utcnow() - timedelta(days=40),
        )
    )
    session.commit()

    now = utcnow()
    insert_records(engine, [_row(org.id, envs, now, r) for r in requests])
    rollup.run(engine)
    accrual.run(engine, billing_settings, now=now)
    if lose_an_answer:
        stripe_fake.fail_next("/v1/billing/meter_events", times=3, mode="drop_after")
    export.run(engine, billing_settings, now=now)
    # Records of hours already priced and exported arrive late (a spool replay), then everything runs again.
    insert_records(engine, [_row(org.id, envs, now, r) for r in late])
    rollup.run(engine)
    accrual.run(engine, billing_settings, now=now)
    assert export.run(engine, billing_settings, now=now).failed == 0

    with Session(engine) as s:
        raw = s.exec(
            select(func.sum(UsageRecord.cost_picousd), func.sum(UsageRecord.prompt_tokens)).where(
                UsageRecord.org_id == org.id
            )
        ).one()
        ledger = s.exec(
            select(
                func.sum(BillingAccrual.gross_picousd),
                func.sum(BillingAccrual.prompt_tokens),
                func.sum(BillingAccrual.due_picousd),
            ).where(BillingAccrual.org_id == org.id)
        ).one()
        refreshed = s.get(Org, org.id)
        assert refreshed is not None
    assert int(raw[0] or 0) == int(ledger[0] or 0) and int(raw[1] or 0) == int(ledger[1] or 0)
    assert int(ledger[2] or 0) >= 0  # allowance, discounts and credits never exceed the price

    held: dict[str, int] = {}
    for e in stripe_fake.meter_events(customer=customer.id):
        held[e["event_name"]] = held.get(e["event_name"], 0) + int(e["payload"]["value"])
    assert held.get("cic_input_tokens", 0) == int(raw[1] or 0)
    months = sorted({month_of(now - timedelta(hours=2, minutes=m)) for m in (0, 27 * 60)})
    due_micros = 0
    for month in months:
        for rec in reconcile.reconcile(engine, billing_settings, month):
            assert rec.ok, (rec.org_slug, rec.mismatches)
            if rec.org_id == org.id:
                due_micros += rec.expected_export["amount_due"]
    assert held.get("cic_amount_due", 0) == due_micros
    assert due_micros * PICO_PER_MICRO <= int(ledger[2] or 0) < (due_micros + len(months)) * PICO_PER_MICRO
