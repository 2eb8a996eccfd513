"""Stripe: the client seam, the platform's own objects, customers, Checkout and the billing portal.

Everything Stripe sits behind ``StripeGateway`` (one ``stripe.StripeClient``); Stripe's exceptions
become ours here (``PaymentProviderError``, 502), so no caller handles a third-party error.

Platform objects, made once by ``cic billing setup`` and stored in ``stripe_objects`` (never a
placeholder id):
* meters ``cic_amount_due`` (µ$ owed after allowance, discounts and credits — the billed one),
  ``cic_input_tokens`` and ``cic_output_tokens`` (informational, on the invoice's usage page);
* the metered price of ``cic_amount_due``: $0.000001 per unit (``unit_amount_decimal`` 0.0001 ¢), so
  the invoice is exactly the statement's amount due;
* a one-time price of 1 ¢ for prepaid credits (Checkout quantity = cents bought).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any, Literal, TypeVar

import stripe
from sqlmodel import Session, select

from cic.errors import CICError, Conflict, DependencyUnavailable, ValidationFailed
from cic.models import BillingAccount, Membership, Org, Role, StripeObject, User
from cic.models.billing import BillingStatus
from cic.models.types import utcnow
from cic.services import audit
from cic.services.authz import Actor, authorize_org
from cic.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Meter:
    key: str
    event_name: str
    display_name: str


METERS = (
    Meter("amount_due", "cic_amount_due", "CrossLogic usage (micro-dollars due)"),
    Meter("input_tokens", "cic_input_tokens", "CrossLogic input tokens"),
    Meter("output_tokens", "cic_output_tokens", "CrossLogic output tokens"),
)
METER_BY_KEY = {m.key: m for m in METERS}
MIN_CREDITS_USD = Decimal(5)
MAX_CREDITS_USD = Decimal(10_000)


class PaymentProviderError(CICError):
    status_code = 502
    error_type = "api_error"
    default_code = "payment_provider_error"


class BillingDisabled(Conflict):
    default_code = "billing_disabled"


class BillingNotSetUp(DependencyUnavailable):
    default_code = "billing_not_set_up"


class StripeGateway:
    def __init__(self, settings: Settings) -> None:
        if settings.stripe_secret_key is None:
            raise BillingNotSetUp("CIC_STRIPE_SECRET_KEY is not set.")
        kwargs: dict[str, Any] = {"max_network_retries": 2}
        if settings.stripe_api_base:
            kwargs["base_addresses"] = {"api": settings.stripe_api_base}
        self.client = stripe.StripeClient(settings.stripe_secret_key.get_secret_value(), **kwargs)
        self.settings = settings

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one Stripe call; its errors become ours, with Stripe's message and request id."""
        try:
            return fn()
        except stripe.StripeError as exc:
            rid = getattr(exc, "request_id", None)
            log.warning("stripe %s failed: %s", what, exc, extra={"stripe_request_id": rid})
            message = getattr(exc, "user_message", None) or str(exc) or type(exc).__name__
            raise PaymentProviderError(f"Stripe refused to {what}: {message}") from exc


def gateway(settings: Settings) -> StripeGateway:
    if not settings.billing_enabled:
        raise BillingDisabled("Billing is not enabled on this platform (CIC_BILLING_ENABLED=false).")
    return StripeGateway(settings)


# --- platform objects ----------------------------------------------------------------------------


def stored(session: Session, key: str) -> str | None:
    row = session.get(StripeObject, key)
    return row.stripe_id if row else None


def require(session: Session, key: str) -> str:
    sid = stored(session, key)
    if sid is None:
        raise BillingNotSetUp(f"Stripe is not set up ({key} missing): run `cic billing setup`.")
    return sid


def _remember(session: Session, key: str, obj: Any) -> str:
    session.merge(StripeObject(key=key, stripe_id=obj.id, livemode=bool(getattr(obj, "livemode", False))))
    return str(obj.id)


def setup(session: Session, gw: StripeGateway) -> dict[str, str]:
    """Create (or find) the meters, products and prices; idempotent."""
    c = gw.client.v1
    listed = gw.call("list meters", lambda: c.billing.meters.list({"limit": 100}))
    existing: dict[str, Any] = {m.event_name: m for m in listed.data}
    out: dict[str, str] = {}
    for m in METERS:
        out[f"meter:{m.key}"] = _ensure(session, gw, f"meter:{m.key}", _meter_params(m), existing.get(m.event_name))
    for key, name in (("product:usage", "CrossLogic Inference usage"), ("product:credits", "CrossLogic credits")):
        out[key] = _ensure(session, gw, key, {"name": name, "metadata": {"cic": key}})
    out["price:amount_due"] = _ensure(
        session,
        gw,
        "price:amount_due",
        {
            "currency": gw.settings.billing_currency,
            "unit_amount_decimal": Decimal("0.0001"),  # cents: $0.000001 per micro-dollar
            "recurring": {"interval": "month", "usage_type": "metered", "meter": out["meter:amount_due"]},
            "product": out["product:usage"],
            "nickname": "Usage (per micro-dollar due)",
        },
    )
    out["price:credit_cent"] = _ensure(
        session,
        gw,
        "price:credit_cent",
        {
            "currency": gw.settings.billing_currency,
            "unit_amount": 1,
            "product": out["product:credits"],
            "nickname": "Prepaid credit (1 cent)",
        },
    )
    return out


def _meter_params(m: Meter) -> dict[str, Any]:
    return {
        "display_name": m.display_name,
        "event_name": m.event_name,
        "default_aggregation": {"formula": "sum"},
        "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
        "value_settings": {"event_payload_key": "value"},
    }


def _ensure(session: Session, gw: StripeGateway, key: str, params: dict[str, Any], found: Any = None) -> str:
    """The stored object for ``key``, else ``found``, else a new one (idempotent on the key)."""
    sid = stored(session, key)
    if sid is not None:
        return sid
    if found is None:
        kind = key.split(":", 1)[0]
        service: Any = {
            "meter": gw.client.v1.billing.meters,
            "product": gw.client.v1.products,
            "price": gw.client.v1.prices,
        }[kind]
        found = gw.call(f"create the {key}", lambda: service.create(params, {"idempotency_key": f"cic-setup-{key}"}))
    return _remember(session, key, found)


# --- customers, checkout, portal -----------------------------------------------------------------


def account_for(session: Session, org_id: str) -> BillingAccount:
    acct = session.get(BillingAccount, org_id)
    if acct is None:
        acct = BillingAccount(org_id=org_id)
        session.add(acct)
    return acct


def _owner_email(session: Session, org: Org) -> str | None:
    return session.exec(
        select(User.email)
        .join(Membership, Membership.user_id == User.id)  # type: ignore[arg-type]
        .where(Membership.org_id == org.id, Membership.role == Role.owner.value)
    ).first()


def ensure_customer(session: Session, gw: StripeGateway, org: Org) -> BillingAccount:
    acct = account_for(session, org.id)
    if acct.stripe_customer_id:
        return acct
    params: dict[str, Any] = {"name": org.name, "metadata": {"org_id": org.id, "org_slug": org.slug}}
    email = _owner_email(session, org)
    if email:
        params["email"] = email
    customers: Any = gw.client.v1.customers
    customer = gw.call(
        "create a customer", lambda: customers.create(params, {"idempotency_key": f"cic-customer-{org.id}"})
    )
    acct.stripe_customer_id = customer.id
    acct.status = BillingStatus.incomplete.value
    acct.updated_at = utcnow()
    session.add(acct)
    session.flush()
    return acct


def _first_of_next_month(now: datetime) -> int:
    y, m = now.year + (now.month == 12), now.month % 12 + 1
    return int(datetime(y, m, 1, tzinfo=UTC).timestamp())


def checkout(
    session: Session,
    actor: Actor,
    org_ref: str,
    settings: Settings,
    *,
    mode: Literal["subscription", "credits"],
    amount_usd: Decimal | float | str | None = None,
    success_url: str | None = None,
    cancel_url: str | None = None,
) -> str:
    """A Stripe Checkout session: ``subscription`` saves a payment method for pay-as-you-go (the
    metered price, periods aligned to calendar months); ``credits`` buys prepaid credits."""
    org, _ = authorize_org(session, actor, org_ref, Role.admin)
    gw = gateway(settings)
    acct = ensure_customer(session, gw, org)
    base = f"{settings.dashboard_url}/billing"
    params: dict[str, Any] = {
        "customer": acct.stripe_customer_id,
        "success_url": success_url or f"{base}?checkout=success",
        "cancel_url": cancel_url or f"{base}?checkout=cancelled",
        "client_reference_id": org.id,
    }
    if mode == "subscription":
        if acct.status in (BillingStatus.active.value, BillingStatus.past_due.value):
            raise Conflict(
                "This organization already has a payment method on file; manage it in the billing portal.",
                code="already_subscribed",
            )
        params.update(
            mode="subscription",
            line_items=[{"price": require(session, "price:amount_due")}],
            metadata={"org_id": org.id, "kind": "subscription"},
            subscription_data={
                "metadata": {"org_id": org.id},
                "billing_cycle_anchor": _first_of_next_month(utcnow()),
                "proration_behavior": "none",
            },
        )
    else:
        cents = _credit_cents(amount_usd)
        params.update(
            mode="payment",
            line_items=[{"price": require(session, "price:credit_cent"), "quantity": cents}],
            metadata={"org_id": org.id, "kind": "credits", "amount_micros": str(cents * 10_000)},
        )
    cs = gw.call("start a checkout session", lambda: gw.client.v1.checkout.sessions.create(params))  # type: ignore[arg-type]
    audit.record(
        session,
        actor,
        "billing.checkout_started",
        org_id=org.id,
        target_type="org",
        target_id=org.id,
        mode=mode,
        checkout_session=cs.id,
    )
    if not cs.url:
        raise PaymentProviderError("Stripe returned a checkout session without a URL.")
    return cs.url


def _credit_cents(amount_usd: Decimal | float | str | None) -> int:
    try:
        amount = Decimal(str(amount_usd))
    except (InvalidOperation, TypeError) as exc:
        raise ValidationFailed("Say how many dollars of credit to buy.", param="amount_usd") from exc
    if not amount.is_finite() or not MIN_CREDITS_USD <= amount <= MAX_CREDITS_USD:
        raise ValidationFailed(
            f"Credits are bought in amounts from ${MIN_CREDITS_USD} to ${MAX_CREDITS_USD:,}.",
            param="amount_usd",
            code="invalid_amount",
        )
    return int((amount * 100).to_integral_value(ROUND_DOWN))


def portal(session: Session, actor: Actor, org_ref: str, settings: Settings, return_url: str | None = None) -> str:
    org, _ = authorize_org(session, actor, org_ref, Role.admin)
    gw = gateway(settings)
    acct = session.get(BillingAccount, org.id)
    if acct is None or not acct.stripe_customer_id:
        raise Conflict("Set up billing first (add a payment method or buy credits).", code="no_billing_account")
    portal_sessions: Any = gw.client.v1.billing_portal.sessions
    params = {"customer": acct.stripe_customer_id, "return_url": return_url or f"{settings.dashboard_url}/billing"}
    ps = gw.call("open the billing portal", lambda: portal_sessions.create(params))
    return str(ps.url)
