"""An org whose payment failed keeps working through the grace period, then gets OpenAI's
``insufficient_quota``; a payment (Stripe's invoice.paid webhook) restores it on every worker at once."""

from __future__ import annotations

from datetime import timedelta

import openai
import pytest
import redis
from sqlmodel import Session

from cic import events
from cic.billing import webhooks
from cic.models import BillingAccount
from cic.models.billing import BillingStatus
from cic.models.types import utcnow
from tests.conftest import REDIS_URL
from tests.gateway.conftest import Tenant, add_node, client
from tests.servers import Sims, wait_until

MESSAGES = [{"role": "user", "content": "hi"}]


def _past_due(session: Session, org_id: str, days: float) -> None:
    session.add(
        BillingAccount(
            org_id=org_id,
            stripe_customer_id=f"cus_{org_id[-8:]}",
            stripe_subscription_id="sub_test",
            status=BillingStatus.past_due.value,
            past_due_since=utcnow() - timedelta(days=days),
        )
    )
    session.commit()


def test_grace_period_then_insufficient_quota_then_paid(sims: Sims, serve, session: Session, tenant: Tenant) -> None:
    add_node(session, sims.start(model="llama-3-8b"))
    _past_due(session, tenant.org_id, days=8)  # the default grace is 7 days
    with serve() as base:
        api = client(base, tenant.key)
        with pytest.raises(openai.RateLimitError) as err:
            api.chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_tokens=4)  # type: ignore[arg-type]
        assert err.value.code == "insufficient_quota" and "payment" in err.value.message
        assert api.models.list().data  # listing models still works

        # Stripe reports the payment: the webhook's change reaches the API workers' key caches.
        bus = redis.Redis.from_url(REDIS_URL)
        try:
            with Session(session.get_bind()) as s:
                events.attach_publisher(s, events.redis_publisher(bus))
                webhooks.process(
                    s,
                    {
                        "id": "evt_paid_1",
                        "type": "invoice.paid",
                        "data": {
                            "object": {"id": "in_1", "object": "invoice", "customer": f"cus_{tenant.org_id[-8:]}"}
                        },
                    },
                )
                s.commit()
        finally:
            bus.close()

        def works() -> bool | None:
            try:
                api.chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_tokens=4)  # type: ignore[arg-type]
            except openai.RateLimitError:
                return None
            return True

        wait_until(works, timeout=5, what="the paid org to be served again")


def test_within_grace_the_org_is_served(sims: Sims, serve, session: Session, tenant: Tenant) -> None:
    add_node(session, sims.start(model="llama-3-8b"))
    _past_due(session, tenant.org_id, days=1)
    with serve() as base:
        reply = client(base, tenant.key).chat.completions.create(
            model="llama-3-8b",
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=4,
        )
    assert reply.usage is not None and reply.usage.completion_tokens == 4
