"""The local Stripe, driven only through the real ``stripe`` SDK (16.1) over loopback HTTP, except where the
SDK cannot produce the request (no API key at all, Basic auth)."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import httpx
import pytest
import stripe

from tests.fakes.stripe_server import StripeFake
from tests.fakes.stripe_wire import Obj

HOUR = 3600
# A fixed, hour-aligned moment for tests that need a deterministic clock.
T0 = 1_790_000_000 // HOUR * HOUR


@pytest.fixture
def client(stripe_fake: StripeFake) -> stripe.StripeClient:
    return stripe_fake.client()


@pytest.fixture
def meter(client: stripe.StripeClient) -> stripe.billing.Meter:
    return client.v1.billing.meters.create(
        {
            "display_name": "Inference tokens",
            "event_name": "cic_tokens",
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )


@pytest.fixture
def customer(client: stripe.StripeClient) -> stripe.Customer:
    return client.v1.customers.create({"email": "ops@acme.test", "name": "Acme", "metadata": {"org_id": "7"}})


@pytest.fixture
def metered_price(client: stripe.StripeClient, meter: stripe.billing.Meter) -> stripe.Price:
    return client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount_decimal": Decimal("0.0025"),  # a quarter cent per token
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
            "product_data": {"name": "Tokens"},
        }
    )


def plain(obj: stripe.StripeObject | None) -> Obj:
    assert obj is not None
    return obj.to_dict()


def error_type(exc: stripe.StripeError) -> str:
    assert isinstance(exc.json_body, dict)
    return str(exc.json_body["error"]["type"])


def record(client: stripe.StripeClient, customer: str, value: int, identifier: str, timestamp: int | None = None):
    params: stripe.params.billing.MeterEventCreateParams = {
        "event_name": "cic_tokens",
        "payload": {"stripe_customer_id": customer, "value": str(value)},
        "identifier": identifier,
    }
    if timestamp is not None:
        params["timestamp"] = timestamp
    return client.v1.billing.meter_events.create(params)


# --- objects, encoding, lists ------------------------------------------------------------------------


def test_catalog_objects_round_trip_in_stripe_shapes(
    stripe_fake: StripeFake, client: stripe.StripeClient, meter: stripe.billing.Meter, customer: stripe.Customer
) -> None:
    product = client.v1.products.create({"name": "CIC usage", "metadata": {"tier": "pro"}})
    price = client.v1.prices.create(
        {
            "currency": "USD",
            "product": product.id,
            "unit_amount_decimal": Decimal("0.0025"),
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    assert customer.id.startswith("cus_") and customer.object == "customer" and customer.livemode is False
    assert plain(customer.metadata) == {"org_id": "7"} and isinstance(customer.created, int)
    assert product.id.startswith("prod_") and product.object == "product"
    assert meter.id.startswith("mtr_") and meter.object == "billing.meter" and meter.status == "active"
    assert meter.default_aggregation.formula == "sum"
    assert plain(meter.customer_mapping) == {"event_payload_key": "stripe_customer_id", "type": "by_id"}
    assert price.id.startswith("price_") and price.type == "recurring" and price.currency == "usd"
    assert price.unit_amount is None and price.unit_amount_decimal == Decimal("0.0025")
    assert plain(price.recurring) == {
        "interval": "month",
        "interval_count": 1,
        "meter": meter.id,
        "trial_period_days": None,
        "usage_type": "metered",
    }
    assert client.v1.prices.retrieve(price.id).to_dict() == price.to_dict()
    assert client.v1.billing.meters.retrieve(meter.id).event_name == "cic_tokens"
    assert [m.id for m in client.v1.billing.meters.list().data] == [meter.id]

    sent = next(r for r in stripe_fake.requests if r.path == "/v1/prices")
    assert "recurring[meter]=" + meter.id in sent.raw and "recurring[usage_type]=metered" in sent.raw
    assert sent.params["recurring"] == {"interval": "month", "usage_type": "metered", "meter": meter.id}
    assert sent.headers["authorization"] == f"Bearer {stripe_fake.api_key}"
    assert sent.headers["stripe-version"] == stripe.api_version
    assert sent.idempotency_key  # the SDK sends one on every POST
    assert stripe_fake.get(price.id)["product"] == product.id


def test_price_with_product_data_and_unit_amount(client: stripe.StripeClient, stripe_fake: StripeFake) -> None:
    price = client.v1.prices.create({"currency": "eur", "unit_amount": 2000, "product_data": {"name": "Seat"}})
    assert price.type == "one_time" and price.unit_amount == 2000 and price.unit_amount_decimal == Decimal(2000)
    assert stripe_fake.get(price.product)["name"] == "Seat"  # type: ignore[arg-type]


def test_customer_update_merges_metadata_and_list_filters_by_email(
    client: stripe.StripeClient, customer: stripe.Customer
) -> None:
    client.v1.customers.create({"email": "other@acme.test"})
    updated = client.v1.customers.update(customer.id, {"name": "Acme Inc", "metadata": {"plan": "pro", "org_id": ""}})
    assert updated.name == "Acme Inc"
    assert plain(updated.metadata) == {"plan": "pro"}  # keys merge; "" removes one
    found = client.v1.customers.list({"email": "ops@acme.test"})
    assert found["object"] == "list" and found.url == "/v1/customers"
    assert [c.id for c in found.data] == [customer.id]
    assert len(client.v1.customers.list().data) == 2

    deleted = client.v1.customers.delete(customer.id)
    assert deleted.deleted is True
    assert [c.email for c in client.v1.customers.list().data] == ["other@acme.test"]


def test_list_pagination(client: stripe.StripeClient) -> None:
    ids = [client.v1.customers.create({"email": f"c{i}@acme.test"}).id for i in range(5)]
    newest_first = ids[::-1]
    first = client.v1.customers.list({"limit": 2})
    assert [c.id for c in first.data] == newest_first[:2] and first.has_more is True
    second = client.v1.customers.list({"limit": 2, "starting_after": first.data[-1].id})
    assert [c.id for c in second.data] == newest_first[2:4] and second.has_more is True
    last = client.v1.customers.list({"limit": 2, "starting_after": second.data[-1].id})
    assert [c.id for c in last.data] == newest_first[4:] and last.has_more is False
    before = client.v1.customers.list({"limit": 2, "ending_before": last.data[0].id})
    assert [c.id for c in before.data] == newest_first[2:4]
    assert [c.id for c in client.v1.customers.list({"limit": 2}).auto_paging_iter()] == newest_first
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.customers.list({"limit": 101})
    assert exc.value.http_status == 400 and exc.value.param == "limit"


# --- idempotency ------------------------------------------------------------------------------------


def test_same_idempotency_key_and_params_replays_the_stored_response(
    client: stripe.StripeClient, stripe_fake: StripeFake
) -> None:
    first = client.v1.customers.create({"email": "a@acme.test"}, {"idempotency_key": "signup-1"})
    again = client.v1.customers.create({"email": "a@acme.test"}, {"idempotency_key": "signup-1"})
    assert again.id == first.id and again.to_dict() == first.to_dict()
    assert first.last_response is not None and again.last_response is not None
    assert "Idempotent-Replayed" not in first.last_response.headers
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert again.last_response.headers["Idempotency-Key"] == "signup-1"
    assert len(stripe_fake.objects("customer")) == 1
    assert [r.replayed for r in stripe_fake.requests] == [False, True]


def test_same_idempotency_key_with_other_params_is_an_idempotency_error(
    client: stripe.StripeClient, stripe_fake: StripeFake
) -> None:
    client.v1.customers.create({"email": "a@acme.test"}, {"idempotency_key": "signup-2"})
    with pytest.raises(stripe.IdempotencyError) as exc:
        client.v1.customers.create({"email": "b@acme.test"}, {"idempotency_key": "signup-2"})
    assert exc.value.http_status == 400
    assert error_type(exc.value) == "idempotency_error"
    assert "signup-2" in str(exc.value.user_message)
    assert len(stripe_fake.objects("customer")) == 1


def test_a_refused_request_is_not_stored_under_its_key(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.products.create({"name": ""}, {"idempotency_key": "p-1"})
    assert client.v1.products.create({"name": "Fixed"}, {"idempotency_key": "p-1"}).name == "Fixed"


# --- meter events and summaries ---------------------------------------------------------------------


def test_meter_events_deduplicate_by_identifier_and_summaries_sum_exactly(
    stripe_fake: StripeFake, client: stripe.StripeClient, meter: stripe.billing.Meter, customer: stripe.Customer
) -> None:
    stripe_fake.set_time(T0 + 2 * HOUR + 30)
    other = client.v1.customers.create({"email": "other@acme.test"})
    event = record(client, customer.id, 1200, "req-1", T0 + 10)
    assert event.object == "billing.meter_event" and event.identifier == "req-1" and event.timestamp == T0 + 10
    assert event.payload.to_dict() == {"stripe_customer_id": customer.id, "value": "1200"}
    record(client, customer.id, 34, "req-2", T0 + HOUR - 1)
    record(client, customer.id, 5, "req-3", T0 + HOUR)
    record(client, other.id, 999, "req-4", T0 + 20)

    with pytest.raises(stripe.InvalidRequestError) as exc:
        record(client, customer.id, 1200, "req-1", T0 + 10)  # a retry under a fresh idempotency key
    assert exc.value.http_status == 400
    assert exc.value.user_message == "An event already exists with identifier req-1."
    assert exc.value.headers is not None and exc.value.headers["Stripe-Should-Retry"] == "false"
    assert [e["identifier"] for e in stripe_fake.meter_events(customer=customer.id)] == ["req-1", "req-2", "req-3"]

    whole = client.v1.billing.meters.event_summaries.list(
        meter.id, {"customer": customer.id, "start_time": T0, "end_time": T0 + 2 * HOUR}
    )
    assert [(s.start_time, s.end_time, s.aggregated_value) for s in whole.data] == [(T0, T0 + 2 * HOUR, 1239.0)]
    summary = whole.data[0]
    assert summary.object == "billing.meter_event_summary" and summary.meter == meter.id
    assert summary.id.startswith("mtrusg_") and summary.livemode is False
    assert whole.url == f"/v1/billing/meters/{meter.id}/event_summaries"

    hourly = client.v1.billing.meters.event_summaries.list(
        meter.id,
        {"customer": customer.id, "start_time": T0, "end_time": T0 + 3 * HOUR, "value_grouping_window": "hour"},
    )
    # Latest window first; the third hour had no events and is left out.
    assert [(s.start_time, s.aggregated_value) for s in hourly.data] == [(T0 + HOUR, 5.0), (T0, 1234.0)]
    page = client.v1.billing.meters.event_summaries.list(
        meter.id,
        {
            "customer": customer.id,
            "start_time": T0,
            "end_time": T0 + 3 * HOUR,
            "value_grouping_window": "hour",
            "limit": 1,
            "starting_after": hourly.data[0].id,
        },
    )
    assert [s.id for s in page.data] == [hourly.data[1].id] and page.has_more is False
    assert stripe_fake.usage(meter.id, customer.id) == 1239.0
    assert stripe_fake.usage(meter.id, other.id, T0, T0 + HOUR) == 999.0


def test_summaries_can_lag_behind_accepted_events(
    stripe_fake: StripeFake, client: stripe.StripeClient, meter: stripe.billing.Meter, customer: stripe.Customer
) -> None:
    stripe_fake.set_time(T0 + 120)
    stripe_fake.set_aggregation_lag(30)
    record(client, customer.id, 8, "late-1", T0)
    window: stripe.params.billing.MeterEventSummaryListParams = {
        "customer": customer.id,
        "start_time": T0,
        "end_time": T0 + HOUR,
    }
    assert client.v1.billing.meters.event_summaries.list(meter.id, window).data == []
    stripe_fake.advance_time(30)
    [summary] = client.v1.billing.meters.event_summaries.list(meter.id, window).data
    assert summary.aggregated_value == 8.0


def test_count_and_last_formulas(stripe_fake: StripeFake, client: stripe.StripeClient) -> None:
    stripe_fake.set_time(T0 + HOUR)
    cus = client.v1.customers.create({})
    for formula in ("count", "last"):
        m = client.v1.billing.meters.create(
            {"display_name": formula, "event_name": f"e_{formula}", "default_aggregation": {"formula": formula}}
        )
        for i, (value, ts) in enumerate([(7, T0 + 50), (3, T0 + 10), (9, T0 + 50)]):
            client.v1.billing.meter_events.create(
                {
                    "event_name": f"e_{formula}",
                    "payload": {"stripe_customer_id": cus.id, "value": str(value)},
                    "timestamp": ts,
                    "identifier": f"{formula}-{i}",
                }
            )
        [summary] = client.v1.billing.meters.event_summaries.list(
            m.id, {"customer": cus.id, "start_time": T0, "end_time": T0 + HOUR}
        ).data
        assert summary.aggregated_value == (3.0 if formula == "count" else 9.0)


def test_meter_event_validation(
    stripe_fake: StripeFake, client: stripe.StripeClient, meter: stripe.billing.Meter, customer: stripe.Customer
) -> None:
    stripe_fake.set_time(T0)

    def refused(params: stripe.params.billing.MeterEventCreateParams) -> stripe.InvalidRequestError:
        with pytest.raises(stripe.InvalidRequestError) as exc:
            client.v1.billing.meter_events.create(params)
        assert exc.value.http_status == 400
        return exc.value

    ok = {"stripe_customer_id": customer.id, "value": "1"}
    err = refused({"event_name": "nope", "payload": ok})
    assert err.param == "event_name" and "No active meter found for event_name nope" in str(err.user_message)
    assert refused({"event_name": "cic_tokens", "payload": {"value": "1"}}).code == "meter_event_no_customer_defined"
    unknown = refused({"event_name": "cic_tokens", "payload": {"stripe_customer_id": "cus_nobody", "value": "1"}})
    assert unknown.code == "meter_event_customer_not_found" and unknown.param == "payload[stripe_customer_id]"
    no_value = refused({"event_name": "cic_tokens", "payload": {"stripe_customer_id": customer.id}})
    assert no_value.code == "meter_event_value_not_found"
    assert refused({"event_name": "cic_tokens", "payload": {**ok, "value": "1.5"}}).code == "meter_event_invalid_value"
    too_old = refused({"event_name": "cic_tokens", "payload": ok, "timestamp": T0 - 35 * 86400 - 1})
    assert too_old.code == "timestamp_too_far_in_past" and too_old.param == "timestamp"
    ahead = refused({"event_name": "cic_tokens", "payload": ok, "timestamp": T0 + 301})
    assert ahead.code == "timestamp_in_future"
    assert stripe_fake.meter_events() == []

    # The edges themselves are accepted; no timestamp means now; no identifier gets one generated.
    record(client, customer.id, 1, "oldest", T0 - 35 * 86400)
    record(client, customer.id, 1, "newest", T0 + 300)
    generated = client.v1.billing.meter_events.create({"event_name": "cic_tokens", "payload": ok})
    assert generated.timestamp == T0 and len(generated.identifier) >= 32
    assert client.v1.billing.meters.deactivate(meter.id).status == "inactive"
    assert "No active meter" in str(refused({"event_name": "cic_tokens", "payload": ok}).user_message)


def test_event_summary_validation(
    stripe_fake: StripeFake, client: stripe.StripeClient, meter: stripe.billing.Meter, customer: stripe.Customer
) -> None:
    def refused(meter_id: str, **params: object) -> stripe.InvalidRequestError:
        base = {"customer": customer.id, "start_time": T0, "end_time": T0 + HOUR}
        with pytest.raises(stripe.InvalidRequestError) as exc:
            client.v1.billing.meters.event_summaries.list(meter_id, {**base, **params})  # type: ignore[typeddict-item]
        return exc.value

    assert refused(meter.id, start_time=T0 + 30).param == "start_time"  # not on a minute boundary
    assert refused(meter.id, end_time=T0 + 60, value_grouping_window="hour").param == "end_time"
    assert refused(meter.id, end_time=T0).param == "start_time"
    missing = refused("mtr_test_missing")
    assert missing.http_status == 404 and missing.code == "resource_missing"
    assert (
        client.v1.billing.meters.event_summaries.list(
            meter.id, {"customer": customer.id, "start_time": T0, "end_time": T0 + HOUR}
        ).data
        == []
    )


# --- checkout, subscriptions, portal, invoice items -------------------------------------------------


def test_checkout_sessions_in_each_mode(
    client: stripe.StripeClient, customer: stripe.Customer, metered_price: stripe.Price
) -> None:
    setup = client.v1.checkout.sessions.create(
        {
            "mode": "setup",
            "customer": customer.id,
            "currency": "usd",
            "success_url": "https://app.test/billing?ok=1",
            "cancel_url": "https://app.test/billing",
            "metadata": {"org_id": "7"},
            "client_reference_id": "org_7",
        }
    )
    assert setup.id.startswith("cs_test_") and setup.object == "checkout.session"
    assert setup.url == f"https://checkout.stripe.com/c/pay/{setup.id}"
    assert (setup.mode, setup.status, setup.payment_status) == ("setup", "open", "no_payment_required")
    assert setup.setup_intent is not None and str(setup.setup_intent).startswith("seti_")
    assert plain(setup.metadata) == {"org_id": "7"} and setup.client_reference_id == "org_7"
    assert client.v1.checkout.sessions.retrieve(setup.id).to_dict() == setup.to_dict()

    sub = client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "customer": customer.id,
            "line_items": [{"price": metered_price.id}],
            "success_url": "https://app.test/ok",
        }
    )
    assert sub.mode == "subscription" and sub.amount_total == 0 and sub.currency == "usd"

    seat = client.v1.prices.create({"currency": "usd", "unit_amount": 1500, "product_data": {"name": "Credits"}})
    pay = client.v1.checkout.sessions.create(
        {"mode": "payment", "line_items": [{"price": seat.id, "quantity": 3}], "customer_email": "x@acme.test"}
    )
    assert pay.amount_total == 4500 and pay.customer is None and pay.customer_email == "x@acme.test"

    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.checkout.sessions.create(
            {
                "mode": "subscription",
                "customer": customer.id,
                "line_items": [{"price": metered_price.id, "quantity": 1}],
            }
        )
    assert exc.value.param == "line_items[0][quantity]"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.checkout.sessions.create({"mode": "payment", "line_items": [{"price": metered_price.id}]})
    assert "recurring price" in str(exc.value.user_message)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.checkout.sessions.create({"mode": "setup", "customer": "cus_missing"})
    assert exc.value.code == "resource_missing" and exc.value.param == "customer"


def test_subscription_lifecycle(
    stripe_fake: StripeFake, client: stripe.StripeClient, customer: stripe.Customer, metered_price: stripe.Price
) -> None:
    start = 1_793_613_600  # 2026-11-02 10:00:00 UTC
    stripe_fake.set_time(start)
    sub = client.v1.subscriptions.create(
        {
            "customer": customer.id,
            "items": [{"price": metered_price.id}],
            "billing_cycle_anchor_config": {"day_of_month": 1},
            "metadata": {"org_id": "7"},
        }
    )
    assert sub.id.startswith("sub_") and sub.object == "subscription" and sub.status == "active"
    [item] = sub["items"].data
    assert item.id.startswith("si_") and item.price.id == metered_price.id and "quantity" not in item
    assert item.current_period_start == start
    assert item.current_period_end == 1_796_119_200  # 2026-12-01 10:00:00 UTC: the anchor day
    assert sub.billing_cycle_anchor == 1_796_119_200 and plain(sub.billing_cycle_anchor_config)["day_of_month"] == 1
    assert plain(sub.metadata) == {"org_id": "7"}
    first_invoice = client.v1.invoices.retrieve(str(sub.latest_invoice))
    assert (first_invoice.status, first_invoice.amount_due, first_invoice.billing_reason) == (
        "paid",
        0,
        "subscription_create",
    )

    updated = client.v1.subscriptions.update(sub.id, {"metadata": {"plan": "pro"}, "cancel_at_period_end": True})
    assert plain(updated.metadata) == {"org_id": "7", "plan": "pro"}
    assert updated.cancel_at_period_end is True and updated.cancel_at == item.current_period_end
    assert client.v1.subscriptions.retrieve(sub.id).cancel_at_period_end is True

    canceled = client.v1.subscriptions.cancel(sub.id, {"cancellation_details": {"comment": "moving on"}})
    assert canceled.status == "canceled" and canceled.canceled_at == start and canceled.ended_at == start
    assert plain(canceled.cancellation_details)["comment"] == "moving on"
    assert client.v1.subscriptions.list({"customer": customer.id}).data == []  # canceled ones only on request
    assert [s.id for s in client.v1.subscriptions.list({"status": "canceled"}).data] == [sub.id]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.update(sub.id, {"items": [{"id": item.id, "deleted": True}]})


def test_licensed_subscription_needs_a_payment_method(
    stripe_fake: StripeFake, client: stripe.StripeClient, customer: stripe.Customer
) -> None:
    seat = client.v1.prices.create(
        {"currency": "usd", "unit_amount": 4900, "recurring": {"interval": "month"}, "product_data": {"name": "Pro"}}
    )
    incomplete = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": seat.id}]})
    assert incomplete.status == "incomplete"
    assert client.v1.invoices.retrieve(str(incomplete.latest_invoice)).status == "open"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.create(
            {"customer": customer.id, "items": [{"price": seat.id}], "payment_behavior": "error_if_incomplete"}
        )

    pm = stripe_fake.attach_payment_method(customer.id)
    client.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": pm}})
    active = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": seat.id, "quantity": 2}]})
    assert active.status == "active" and active["items"].data[0].quantity == 2
    invoice = client.v1.invoices.retrieve(str(active.latest_invoice))
    assert (invoice.status, invoice.amount_paid) == ("paid", 9800)


def test_portal_session_and_invoice_items(
    client: stripe.StripeClient, customer: stripe.Customer, metered_price: stripe.Price
) -> None:
    portal = client.v1.billing_portal.sessions.create({"customer": customer.id, "return_url": "https://app.test/b"})
    assert portal.id.startswith("bps_") and portal.object == "billing_portal.session"
    assert portal.url.startswith("https://billing.stripe.com/p/session/") and portal.return_url == "https://app.test/b"

    sub = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": metered_price.id}]})
    credit = client.v1.invoice_items.create(
        {
            "customer": customer.id,
            "amount": -250,
            "currency": "usd",
            "description": "SLA credit",
            "subscription": sub.id,
        }
    )
    assert credit.id.startswith("ii_") and credit.object == "invoiceitem"
    assert (credit.amount, credit.currency, credit.discountable, credit.invoice) == (-250, "usd", False, None)
    assert plain(credit.parent)["subscription_details"]["subscription"] == sub.id
    charge = client.v1.invoice_items.create({"customer": customer.id, "amount": 1000, "currency": "usd"})
    assert charge.parent is None and charge.discountable is True
    pending = client.v1.invoice_items.list({"customer": customer.id, "pending": True})
    assert [i.id for i in pending.data] == [charge.id, credit.id]
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.invoice_items.create({"customer": customer.id, "amount": 5})
    assert exc.value.param == "currency" and exc.value.code == "parameter_missing"


# --- errors ------------------------------------------------------------------------------------------


def test_errors_come_back_as_the_sdks_exceptions(stripe_fake: StripeFake, client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.customers.retrieve("cus_missing")
    assert exc.value.http_status == 404 and exc.value.code == "resource_missing" and exc.value.param == "id"
    assert exc.value.user_message == "No such customer: 'cus_missing'"

    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.prices.create({"currency": "usd", "unit_amount": 1, "product_data": {"name": "x", "colour": "red"}})  # type: ignore[typeddict-unknown-key]
    assert exc.value.code == "parameter_unknown" and exc.value.param == "product_data[colour]"

    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.billing.meters.create({"display_name": "x", "event_name": "y"})  # type: ignore[typeddict-item]
    assert exc.value.code == "parameter_missing" and exc.value.param == "default_aggregation"

    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.raw_request("get", "/v1/not_a_thing")
    assert exc.value.http_status == 404 and "Unrecognized request URL (GET: /v1/not_a_thing)" in str(
        exc.value.user_message
    )

    with pytest.raises(stripe.AuthenticationError) as auth:
        stripe_fake.client("sk_test_wrongwrongwrong1234").v1.customers.list()
    assert auth.value.http_status == 401 and "sk_test_****" in str(auth.value.user_message)
    assert str(auth.value.user_message).endswith("1234")


def test_authentication_on_the_wire(stripe_fake: StripeFake) -> None:
    """What the SDK cannot send: no key at all, and curl-style Basic auth (``-u sk_test_...:``)."""
    with httpx.Client(base_url=stripe_fake.base_url) as http:
        anonymous = http.get("/v1/customers")
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["type"] == "invalid_request_error"
        assert "You did not provide an API key" in anonymous.json()["error"]["message"]
        basic = http.post("/v1/customers", data={"email": "curl@acme.test"}, auth=(stripe_fake.api_key, ""))
        assert basic.status_code == 200 and basic.json()["email"] == "curl@acme.test"


# --- injected failures ------------------------------------------------------------------------------


def test_injected_error_is_not_stored_and_a_retry_executes(
    stripe_fake: StripeFake, client: stripe.StripeClient, meter: stripe.billing.Meter, customer: stripe.Customer
) -> None:
    stripe_fake.fail_next("/v1/billing/meter_events")
    params: stripe.params.billing.MeterEventCreateParams = {
        "event_name": "cic_tokens",
        "payload": {"stripe_customer_id": customer.id, "value": "10"},
        "identifier": "u-1",
    }
    with pytest.raises(stripe.APIError) as exc:
        client.v1.billing.meter_events.create(params, {"idempotency_key": "k-1"})
    assert exc.value.http_status == 500 and error_type(exc.value) == "api_error"
    assert stripe_fake.meter_events() == []
    assert client.v1.billing.meter_events.create(params, {"idempotency_key": "k-1"}).identifier == "u-1"
    assert stripe_fake.request_count("/v1/billing/meter_events") == 2
    assert [r.injected for r in stripe_fake.requests[-2:]] == ["error", None]


def test_dropped_connection_before_processing(
    stripe_fake: StripeFake, client: stripe.StripeClient, customer: stripe.Customer
) -> None:
    stripe_fake.fail_next("/v1/customers/*", method="POST", mode="drop")
    with pytest.raises(stripe.APIConnectionError):
        client.v1.customers.update(customer.id, {"name": "Never"})
    assert stripe_fake.get(customer.id)["name"] == "Acme"
    assert client.v1.customers.update(customer.id, {"name": "Now"}).name == "Now"


def test_dropped_connection_after_processing_then_retries(
    stripe_fake: StripeFake, client: stripe.StripeClient, meter: stripe.billing.Meter, customer: stripe.Customer
) -> None:
    """Stripe recorded the event but the caller never heard: same key replays, a new key is refused."""
    stripe_fake.fail_next("/v1/billing/meter_events", mode="drop_after")
    params: stripe.params.billing.MeterEventCreateParams = {
        "event_name": "cic_tokens",
        "payload": {"stripe_customer_id": customer.id, "value": "40"},
        "identifier": "batch-9",
    }
    with pytest.raises(stripe.APIConnectionError):
        client.v1.billing.meter_events.create(params, {"idempotency_key": "send-9"})
    assert [e["identifier"] for e in stripe_fake.meter_events()] == ["batch-9"]

    replay = client.v1.billing.meter_events.create(params, {"idempotency_key": "send-9"})
    assert replay.identifier == "batch-9" and replay.last_response is not None
    assert replay.last_response.headers["Idempotent-Replayed"] == "true"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.billing.meter_events.create(params, {"idempotency_key": "send-9-again"})
    assert "already exists with identifier batch-9" in str(exc.value.user_message)
    assert stripe_fake.usage(meter.id, customer.id) == 40.0
    assert [r.status for r in stripe_fake.requests if r.path == "/v1/billing/meter_events"] == [0, 200, 400]


def test_sdk_retries_consume_injected_failures(
    stripe_fake: StripeFake, customer: stripe.Customer, meter: stripe.billing.Meter
) -> None:
    """With ``max_network_retries`` the SDK retries 5xx and dropped connections under the same key."""
    retrying = stripe_fake.client(max_network_retries=2)
    stripe_fake.fail_next("/v1/billing/meter_events", mode="drop_after")
    stripe_fake.fail_next("/v1/billing/meter_events", status=503)
    event = record(retrying, customer.id, 3, "r-1")
    assert event.identifier == "r-1" and stripe_fake.usage(meter.id, customer.id) == 3.0
    sent = [r for r in stripe_fake.requests if r.path == "/v1/billing/meter_events"]
    assert [(r.status, r.replayed) for r in sent] == [(0, False), (503, False), (200, True)]
    assert len({r.idempotency_key for r in sent}) == 1


# --- webhooks ----------------------------------------------------------------------------------------


def test_checkout_completed_webhook_verifies_with_the_sdk(
    stripe_fake: StripeFake, client: stripe.StripeClient, customer: stripe.Customer, metered_price: stripe.Price
) -> None:
    session = client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "customer": customer.id,
            "line_items": [{"price": metered_price.id}],
            "metadata": {"org_id": "7"},
            "subscription_data": {"metadata": {"org_id": "7"}},
        }
    )
    event = stripe_fake.checkout_completed_event(session.id)
    signed = stripe_fake.sign(event)
    verified = stripe.Webhook.construct_event(signed.payload, signed.signature, stripe_fake.webhook_secret)
    assert verified.id == event["id"] and verified.id.startswith("evt_")
    assert verified.type == "checkout.session.completed" and verified.api_version == stripe.api_version
    obj = verified.data.object
    assert (obj["id"], obj["object"], obj["mode"], obj["status"]) == (
        session.id,
        "checkout.session",
        "subscription",
        "complete",
    )
    assert obj["customer"] == customer.id and obj["metadata"].to_dict() == {"org_id": "7"} and obj["amount_total"] == 0
    sub = client.v1.subscriptions.retrieve(obj["subscription"])
    assert sub.status == "active" and plain(sub.metadata) == {"org_id": "7"}
    assert client.v1.events.retrieve(event["id"]).type == "checkout.session.completed"
    expanded = client.v1.checkout.sessions.retrieve(session.id, {"expand": ["subscription"]})
    assert isinstance(expanded.subscription, stripe.Subscription) and expanded.subscription.id == sub.id

    tampered = signed.payload.replace('"amount_total": 0', '"amount_total": 1')
    assert tampered != signed.payload
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(tampered, signed.signature, stripe_fake.webhook_secret)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(signed.payload, signed.signature, "whsec_someone_else")
    stale = stripe_fake.sign(event, timestamp=int(time.time()) - 3600)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(stale.payload, stale.signature, stripe_fake.webhook_secret)
    assert signed.headers["Stripe-Signature"] == signed.signature and signed.event == event


def test_setup_checkout_leaves_a_card_on_the_setup_intent(
    stripe_fake: StripeFake, client: stripe.StripeClient, customer: stripe.Customer
) -> None:
    session = client.v1.checkout.sessions.create({"mode": "setup", "customer": customer.id, "currency": "usd"})
    obj = stripe_fake.checkout_completed_event(session.id)["data"]["object"]
    intent = client.v1.setup_intents.retrieve(obj["setup_intent"])
    assert intent.status == "succeeded" and intent.customer == customer.id
    pm = client.v1.payment_methods.retrieve(str(intent.payment_method))
    assert pm.card is not None and pm.card.last4 == "4242"
    updated = client.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": pm.id}})
    assert plain(updated.invoice_settings)["default_payment_method"] == pm.id


def test_invoice_and_subscription_events(
    stripe_fake: StripeFake, client: stripe.StripeClient, customer: stripe.Customer, metered_price: stripe.Price
) -> None:
    start = 1_793_613_600  # 2026-11-02 10:00:00 UTC
    stripe_fake.set_time(start)
    sub = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": metered_price.id}]})
    period_end = sub["items"].data[0].current_period_end
    assert period_end == 1_796_205_600  # 2026-12-02 10:00:00 UTC
    record(client, customer.id, 120_000, "m-1")  # 120k tokens at 0.0025 cents each: 300 cents
    record(client, customer.id, 200, "m-2")  # +0.5 cent: the line rounds half up to 301
    client.v1.invoice_items.create(
        {"customer": customer.id, "amount": -1, "currency": "usd", "description": "credit", "subscription": sub.id}
    )
    stripe_fake.set_time(period_end + 60)

    failed = stripe_fake.invoice_payment_failed_event(sub.id)
    invoice = failed["data"]["object"]
    assert failed["type"] == "invoice.payment_failed" and invoice["object"] == "invoice"
    assert invoice["id"].startswith("in_") and invoice["customer"] == customer.id
    assert invoice["parent"]["subscription_details"]["subscription"] == sub.id
    assert (invoice["status"], invoice["amount_due"], invoice["amount_paid"], invoice["attempt_count"]) == (
        "open",
        300,  # 301 for usage, -1 for the credit
        0,
        1,
    )
    assert (invoice["period_start"], invoice["period_end"]) == (start, period_end)
    assert invoice["next_payment_attempt"] is not None
    assert client.v1.subscriptions.retrieve(sub.id)["items"].data[0].current_period_start == period_end

    past_due = stripe_fake.subscription_updated_event(sub.id, status="past_due")
    assert past_due["type"] == "customer.subscription.updated"
    assert past_due["data"]["object"]["status"] == "past_due"
    assert past_due["data"]["previous_attributes"] == {"status": "active"}

    paid = stripe_fake.invoice_paid_event(sub.id)["data"]["object"]
    assert paid["id"] == invoice["id"]  # the same invoice, collected on retry
    assert (paid["status"], paid["amount_paid"], paid["attempt_count"]) == ("paid", 300, 2)
    assert sorted(line["amount"] for line in paid["lines"]["data"]) == [-1, 301]
    assert client.v1.invoices.retrieve(invoice["id"]).status == "paid"

    deleted = stripe_fake.subscription_deleted_event(sub.id)
    assert deleted["type"] == "customer.subscription.deleted" and deleted["data"]["object"]["status"] == "canceled"
    verified = stripe.Webhook.construct_event(
        stripe_fake.sign(deleted).payload, stripe_fake.sign(deleted).signature, stripe_fake.webhook_secret
    )
    assert verified.data.object["id"] == sub.id
    assert [e.type for e in client.v1.events.list().data] == [
        "customer.subscription.deleted",
        "invoice.paid",
        "customer.subscription.updated",
        "invoice.payment_failed",
    ]


# --- other ways to reach it ------------------------------------------------------------------------------


@pytest.fixture
def global_stripe(stripe_fake: StripeFake, monkeypatch: pytest.MonkeyPatch) -> StripeFake:
    stripe_fake.patch_globals(monkeypatch)
    return stripe_fake


def test_legacy_global_configuration(global_stripe: StripeFake) -> None:
    created = stripe.Customer.create(email="legacy@acme.test")
    assert created.id.startswith("cus_")
    assert stripe.Customer.retrieve(created.id).email == "legacy@acme.test"
    assert global_stripe.request_count("/v1/customers*") == 2


@pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")  # stripe's HTTPXClient passes data=str
async def test_async_client_over_httpx(stripe_fake: StripeFake) -> None:
    client = stripe_fake.client(http_client=stripe.HTTPXClient())
    created = await client.v1.customers.create_async({"email": "async@acme.test"})
    fetched = await client.v1.customers.retrieve_async(created.id)
    assert fetched.email == "async@acme.test"


def test_stripe_version_header_is_accepted_and_echoed(stripe_fake: StripeFake) -> None:
    client = stripe_fake.client(stripe_version="2025-03-31.basil")
    created = client.v1.customers.create({})
    assert created.last_response is not None
    assert created.last_response.headers["Stripe-Version"] == "2025-03-31.basil"
    assert json.loads(created.last_response.body)["id"] == created.id
