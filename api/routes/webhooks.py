"""Inbound webhooks: Stripe's, at ``/api/webhooks/stripe`` (signature verified, each event once)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from api.deps import SessionDep, SettingsDep
from cic.billing import webhooks

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])


@router.post("/stripe")
async def stripe_webhook(request: Request, session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    """Point Stripe's webhook endpoint here, with the events checkout.session.completed, invoice.paid,
    invoice.payment_failed, customer.subscription.updated and customer.subscription.deleted."""
    payload = await request.body()
    signature = request.headers.get("stripe-signature")

    def apply() -> dict[str, Any]:
        event = webhooks.verify(payload, signature, settings)
        result = webhooks.process(session, event)
        session.commit()
        return result

    return await run_in_threadpool(apply)
