"""Stripe, through the real SDK against the local Stripe: set-up, Checkout, webhooks, the meter-event
export (crash between send and record, two exporters at once), reconciliation, billing off."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from cic.billing import accrual, export, payments, reconcile, rollup
from cic.billing.pricing import PICO_PER_MICRO, month_of
from cic.models import BillingAccount, BillingAccrual, CreditGrant, Environment, Org, StripeExport
from cic.models.types import utcnow
from cic.settings import Settings
from tests.billing.conftest import Customer, deliver, subscribe
from tests.billing.helpers import insert_records, record
from tests.fakes.stripe_server import StripeFake


def test_setup_is_idempotent(billing_settings: Settings, engine: Engine, stripe_fake: StripeFake) -> None:
    with Session(engine) as s:
        first = payments.setup(s, payments.StripeGateway(billing_settings))
        s.commit()
        again = payments.setup(s, payments.StripeGateway(billing_settings))
    assert first == again
    assert {m["event_name"] for m in stripe_fake.objects("billing.meter")} == {
        "cic_amount_due",
        "cic_input_tokens",
        "cic_output_tokens",
    }
    price = stripe_fake.get(first["price:amount_due"])
    assert price["recurring"]["usage_type"] == "metered" and price["recurring"]["meter"] == first["meter:amount_due"]
    assert Decimal(price["unit_amount_decimal"]) == Decimal("0.0001")
    assert len(stripe_fake.objects("price")) == 2


def test_subscription_checkout_and_payment_standing(
    billing_client: TestClient, stripe_fake: StripeFake, engine: Engine
) -> None:
    c = Customer(billing_client)
    assert c.get("/billing").json()["status"] == "none"
    sub_id = subscribe(c, stripe_fake)
    summary = c.get("/billing").json()
    assert summary["status"] == "active" and summary["payment_method"] is True
    (cs,) = stripe_fake.objects("checkout.session")
    assert cs["mode"] == "subscription" and cs["customer"] == stripe_fake.objects("customer")[0]["id"]
    assert c.post("/billing/checkout", json={"mode": "subscription"}).json()["error"]["code"] == "already_subscribed"
    assert c.post("/billing/portal").json()["url"].startswith("https://")

    failed = deliver(billing_client, stripe_fake, stripe_fake.invoice_payment_failed_event(sub_id))
    assert failed.status_code == 200
    summary = c.get("/billing").json()
    assert summary["status"] == "past_due" and summary["past_due_since"] and not summary["keys_blocked"]
    deliver(billing_client, stripe_fake, stripe_fake.invoice_paid_event(sub_id))
    assert c.get("/billing").json()["status"] == "active"
    deliver(billing_client, stripe_fake, stripe_fake.subscription_deleted_event(sub_id))
    assert c.get("/billing").json()["status"] == "canceled"


def test_credits_checkout_grants_once(billing_client: TestClient, stripe_fake: StripeFake, engine: Engine) -> None:
    c = Customer(billing_client)
    assert c.post("/billing/checkout", json={"mode": "credits", "amount_usd": 2}).status_code == 422
    r = c.post("/billing/checkout", json={"mode": "credits", "amount_usd": "25.50"})
    assert r.status_code == 200, r.text
    (cs,) = stripe_fake.objects("checkout.session")
    assert cs["mode"] == "payment"
    event = stripe_fake.checkout_completed_event(cs["id"])
    assert deliver(billing_client, stripe_fake, event).json()["handled"] is True
    assert deliver(billing_client, stripe_fake, event).json()["duplicate"] is True  # redelivered
    kinds = {x["kind"]: x for x in c.get("/credits").json()}
    assert Decimal(kinds["prepaid"]["amount_usd"]) == Decimal("25.5")
    assert kinds["signup"]["amount_usd"] == "10"
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(CreditGrant)).one() == 2


def test_webhook_signature_is_checked(billing_client: TestClient, stripe_fake: StripeFake) -> None:
    event = stripe_fake.build_event("invoice.paid", {"id": "in_1", "object": "invoice", "customer": "cus_x"})
    signed = stripe_fake.sign(event)
    r = billing_client.post(
        "/api/webhooks/stripe", content=signed.payload.replace("in_1", "in_2"), headers=signed.headers
    )
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_signature"
    assert billing_client.post("/api/webhooks/stripe", content=signed.payload).status_code == 401
    bad = stripe_fake.sign(event, secret="whsec_someone_else")
    assert billing_client.post("/api/webhooks/stripe", content=bad.payload, headers=bad.headers).status_code == 401
    assert (
        billing_client.post("/api/webhooks/stripe", content=signed.payload, headers=signed.headers).status_code == 200
    )


def _usage_and_ledger(engine: Engine, settings: Settings, org_id: str, env_id: str, n: int = 30) -> None:
    now = utcnow()
    start = max(now - timedelta(hours=6), now.replace(day=1, hour=0, minute=0, second=0, microsecond=0))
    rows = [
        record(org_id, env_id, start + timedelta(minutes=7 * i), prompt=1_000 + i, completion=333) for i in range(n)
    ]
    insert_records(engine, [r for r in rows if r["created_at"] < now - timedelta(hours=1)])
    rollup.run(engine)
    accrual.run(engine, settings)


def _org(engine: Engine, slug: str) -> tuple[str, str]:
    with Session(engine) as s:
        org = s.exec(select(Org).where(Org.slug == slug)).one()
        env = s.exec(select(Environment).where(Environment.org_id == org.id)).one()
        return org.id, env.id


def test_export_reports_the_ledger_and_reconciles(
    billing_client: TestClient, billing_settings: Settings, stripe_fake: StripeFake, engine: Engine
) -> None:
    c = Customer(billing_client)
    subscribe(c, stripe_fake)
    org_id, env_id = _org(engine, c.slug)
    with Session(engine) as s:  # no credits, no free allowance: everything is pay-as-you-go
        s.exec(CreditGrant.__table__.delete())  # type: ignore[attr-defined]
        org = s.get(Org, org_id)
        assert org is not None
        org.plan = "developer"
        s.add(org)
        s.commit()
    _usage_and_ledger(engine, billing_settings, org_id, env_id)

    res = export.run(engine, billing_settings)
    assert res.failed == 0 and res.sent > 0
    with Session(engine) as s:
        due = s.execute(
            select(func.sum(BillingAccrual.due_picousd)).where(col(BillingAccrual.org_id) == org_id)
        ).scalar_one()
        tokens_in = s.execute(
            select(func.sum(BillingAccrual.prompt_tokens)).where(col(BillingAccrual.org_id) == org_id)
        ).scalar_one()
    customer = stripe_fake.objects("customer")[0]["id"]
    events = stripe_fake.meter_events(customer=customer)
    by_name: dict[str, int] = {}
    for e in events:
        by_name[e["event_name"]] = by_name.get(e["event_name"], 0) + int(e["payload"]["value"])
    assert by_name["cic_input_tokens"] == tokens_in
    assert by_name["cic_amount_due"] == int(due) // PICO_PER_MICRO
    assert export.run(engine, billing_settings).sent == 0  # nothing new

    checked = 0
    for month in sorted({month_of(utcnow() - timedelta(hours=7)), month_of(utcnow())}):
        for rec in reconcile.reconcile(engine, billing_settings, month):
            assert rec.ok, rec.mismatches
            assert rec.stripe is not None and rec.stripe["input_tokens"] == rec.exported.get("input_tokens", 0)
            checked += rec.org_id == org_id
    assert checked >= 1


def test_a_crash_between_send_and_record_bills_once(
    billing_client: TestClient, billing_settings: Settings, stripe_fake: StripeFake, engine: Engine
) -> None:
    c = Customer(billing_client)
    subscribe(c, stripe_fake)
    org_id, env_id = _org(engine, c.slug)
    _usage_and_ledger(engine, billing_settings, org_id, env_id)

    # Stripe records the first event, but the answer never arrives (and the SDK's retries too).
    stripe_fake.fail_next("/v1/billing/meter_events", times=3, mode="drop_after")
    first = export.run(engine, billing_settings)
    assert first.failed == 1
    with Session(engine) as s:
        pending = s.exec(select(StripeExport).where(StripeExport.status == "pending")).all()
        assert pending
    second = export.run(engine, billing_settings)
    assert second.failed == 0
    with Session(engine) as s:
        sent = s.execute(
            select(func.count()).select_from(StripeExport).where(col(StripeExport.status) == "sent")
        ).scalar_one()
        values = dict(s.exec(select(StripeExport.identifier, StripeExport.value)).all())
    accepted = stripe_fake.meter_events()
    assert len(accepted) == sent == len(values)  # each identifier once at Stripe
    assert {e["identifier"]: int(e["payload"]["value"]) for e in accepted} == values
    for month in {month_of(utcnow() - timedelta(hours=7)), month_of(utcnow())}:
        assert all(r.ok for r in reconcile.reconcile(engine, billing_settings, month)), month


def test_two_exporters_at_once_export_once(
    billing_client: TestClient, billing_settings: Settings, stripe_fake: StripeFake, engine: Engine
) -> None:
    c = Customer(billing_client)
    subscribe(c, stripe_fake)
    org_id, env_id = _org(engine, c.slug)
    _usage_and_ledger(engine, billing_settings, org_id, env_id)

    barrier = threading.Barrier(2)
    results: list[export.ExportResult] = []

    def go() -> None:
        barrier.wait()
        results.append(export.run(engine, billing_settings))

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 2 and all(r.failed == 0 for r in results)
    with Session(engine) as s:
        rows = s.exec(select(StripeExport.identifier, StripeExport.value)).all()
    accepted = stripe_fake.meter_events()
    assert len(accepted) == len(rows) and {e["identifier"] for e in accepted} == {r[0] for r in rows}
    assert stripe_fake.request_count("/v1/billing/meter_events") == len(rows)


def test_billing_off_sends_nothing(client: TestClient, settings: Settings, engine: Engine) -> None:
    c = Customer(client)
    r = c.post("/billing/checkout", json={"mode": "subscription"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "billing_disabled"
    assert c.get("/billing").json()["billing_enabled"] is False
    assert export.run(engine, settings).sent == 0
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(BillingAccount)).one() == 0
