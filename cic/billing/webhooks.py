"""Stripe webhooks: verified, each event processed once, mapped onto orgs' billing standing.

* ``checkout.session.completed`` — a subscription checkout: the org is *active* (pay-as-you-go);
  a credits checkout: a prepaid grant (idempotent on the session id).
* ``invoice.paid`` — back to *active*; a past-due org's keys work again at once.
* ``invoice.payment_failed`` — *past_due* from the first failure; after ``CIC_BILLING_GRACE_DAYS`` the
  org's keys get OpenAI's ``insufficient_quota`` until a payment goes through.
* ``customer.subscription.updated`` / ``.deleted`` — the subscription's status, mirrored.

Every change invalidates the org's cached keys on every API worker (``cic.events``).
"""

from __future__ import annotations

import logging
from typing import Any

import stripe
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from cic import events
from cic.billing import credits
from cic.errors import AuthenticationError, InvalidRequest
from cic.models import BillingAccount, StripeEvent
from cic.models.billing import BillingStatus, CreditKind
from cic.models.types import utcnow
from cic.services import audit
from cic.services.authz import Actor
from cic.settings import Settings

log = logging.getLogger(__name__)

HANDLED = {
    "checkout.session.completed",
    "invoice.paid",
    "invoice.payment_failed",
    "customer.subscription.updated",
    "customer.subscription.deleted",
}
STRIPE = Actor.system("stripe")
_SUBSCRIPTION_STATUS = {
    "active": BillingStatus.active,
    "trialing": BillingStatus.active,
    "past_due": BillingStatus.past_due,
    "unpaid": BillingStatus.past_due,
    "canceled": BillingStatus.canceled,
    "incomplete_expired": BillingStatus.canceled,
    "incomplete": BillingStatus.incomplete,
    "paused": BillingStatus.past_due,
}


def verify(payload: bytes, signature: str | None, settings: Settings) -> dict[str, Any]:
    """The event (as plain dicts), if Stripe signed it with our endpoint's secret (timestamp within tolerance)."""
    if settings.stripe_webhook_secret is None:
        raise InvalidRequest("Stripe webhooks are not configured (CIC_STRIPE_WEBHOOK_SECRET).", code="not_configured")
    if not signature:
        raise AuthenticationError("Missing Stripe-Signature header.", code="invalid_signature")
    try:
        event = stripe.Webhook.construct_event(payload, signature, settings.stripe_webhook_secret.get_secret_value())
        return event.to_dict()
    except stripe.SignatureVerificationError as exc:
        raise AuthenticationError(
            f"Invalid Stripe signature: {exc.user_message or exc}", code="invalid_signature"
        ) from exc
    except ValueError as exc:
        raise InvalidRequest(f"Malformed webhook payload: {exc}", code="invalid_payload") from exc


def process(session: Session, event: Any) -> dict[str, Any]:
    """Apply one event inside the caller's transaction. A repeated event id changes nothing."""
    event_id, kind = str(event["id"]), str(event["type"])
    if session.get(StripeEvent, event_id) is not None:
        return {"received": True, "duplicate": True}
    # Claim the id first: a second delivery racing this one waits on the row, then finds it taken.
    row = StripeEvent(id=event_id, type=kind)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        return {"received": True, "duplicate": True}
    org_id = _handle(session, kind, event["data"]["object"]) if kind in HANDLED else None
    row.org_id = org_id
    session.add(row)
    if org_id:
        events.invalidate(session, orgs=(org_id,))
    return {"received": True, "type": kind, "org_id": org_id, "handled": kind in HANDLED}


def _account(session: Session, obj: Any) -> BillingAccount | None:
    customer = obj.get("customer")
    if isinstance(customer, dict):
        customer = customer.get("id")
    acct = None
    if customer:
        acct = session.exec(select(BillingAccount).where(BillingAccount.stripe_customer_id == customer)).first()
    if acct is None:
        metadata = obj.get("metadata") or {}
        org_id = metadata.get("org_id") or obj.get("client_reference_id")
        if org_id:
            acct = session.get(BillingAccount, org_id)
    if acct is None:
        log.warning("stripe event for an unknown customer %s", customer)
    return acct


def _handle(session: Session, kind: str, obj: Any) -> str | None:
    acct = _account(session, obj)
    if acct is None:
        return None
    now = utcnow()
    before = acct.status
    if kind == "checkout.session.completed":
        metadata = obj.get("metadata") or {}
        if metadata.get("kind") == "credits" or obj.get("mode") == "payment":
            if obj.get("payment_status") not in (None, "paid", "no_payment_required"):
                return acct.org_id  # asynchronous payment still pending: nothing granted yet
            micros = int(metadata.get("amount_micros") or int(obj.get("amount_total") or 0) * 10_000)
            if micros > 0:
                credits.add_grant(
                    session,
                    acct.org_id,
                    kind=CreditKind.prepaid,
                    amount_micros=micros,
                    note="Prepaid credits (Stripe Checkout)",
                    source_ref=f"checkout:{obj['id']}",
                    actor=STRIPE,
                )
        else:
            sub = obj.get("subscription")
            acct.stripe_subscription_id = sub.get("id") if isinstance(sub, dict) else sub
            acct.status = BillingStatus.active.value
            acct.past_due_since = None
            acct.subscribed_at = acct.subscribed_at or now
    elif kind == "invoice.paid":
        acct.status = BillingStatus.active.value
        acct.past_due_since = None
    elif kind == "invoice.payment_failed":
        acct.status = BillingStatus.past_due.value
        acct.past_due_since = acct.past_due_since or now
    elif kind in ("customer.subscription.updated", "customer.subscription.deleted"):
        if acct.stripe_subscription_id and obj.get("id") != acct.stripe_subscription_id:
            return acct.org_id  # an older subscription of the same customer
        status = BillingStatus.canceled if kind.endswith("deleted") else _SUBSCRIPTION_STATUS.get(obj.get("status"))
        if status is not None:
            acct.status = status.value
            acct.past_due_since = (acct.past_due_since or now) if status is BillingStatus.past_due else None
    acct.updated_at = now
    session.add(acct)
    if acct.status != before:
        audit.record(
            session,
            STRIPE,
            "billing.status_changed",
            org_id=acct.org_id,
            target_type="billing",
            target_id=acct.org_id,
            before=before,
            after=acct.status,
            event=kind,
        )
    return acct.org_id
