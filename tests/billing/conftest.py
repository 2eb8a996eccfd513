"""Billing fixtures: the platform with billing on, pointed at the local Stripe (tests/fakes/stripe_server.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from sqlmodel import Session

from api.app import create_app
from cic.billing import payments
from cic.settings import Settings
from tests.factories import api_env, api_org, signup
from tests.fakes.stripe_server import StripeFake


@pytest.fixture
def billing_settings(settings: Settings, stripe_fake: StripeFake) -> Settings:
    return settings.model_copy(
        update={
            "billing_enabled": True,
            "stripe_secret_key": SecretStr(stripe_fake.api_key),
            "stripe_webhook_secret": SecretStr(stripe_fake.webhook_secret),
            "stripe_api_base": stripe_fake.base_url,
            "dashboard_url": "http://testserver",
        }
    )


@pytest.fixture
def stripe_ready(billing_settings: Settings, engine: Engine) -> dict[str, str]:
    """The platform's meters, products and prices, as `cic billing setup` makes them."""
    with Session(engine) as s:
        ids = payments.setup(s, payments.StripeGateway(billing_settings))
        s.commit()
    return ids


@pytest.fixture
def billing_client(billing_settings: Settings, stripe_ready: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(billing_settings)) as c:
        yield c


class Customer:
    """A signed-up customer with an org and an environment, through the API."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.headers = signup(client)
        self.org: dict[str, Any] = api_org(client, self.headers)
        self.slug: str = self.org["slug"]
        self.env = api_env(client, self.headers, self.slug)

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(f"/api/v1/orgs/{self.slug}{path}", headers=self.headers, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.client.post(f"/api/v1/orgs/{self.slug}{path}", headers=self.headers, **kw)


def deliver(client: TestClient, fake: StripeFake, event: dict[str, Any]) -> Any:
    signed = fake.sign(event)
    return client.post("/api/webhooks/stripe", content=signed.payload, headers=signed.headers)


def subscribe(customer: Customer, fake: StripeFake) -> str:
    """Checkout in subscription mode, completed by the customer; returns the subscription id."""
    r = customer.post("/billing/checkout", json={"mode": "subscription"})
    assert r.status_code == 200, r.text
    (cs,) = [s for s in fake.objects("checkout.session") if s["url"] == r.json()["url"]]
    event = fake.checkout_completed_event(cs["id"])
    assert deliver(customer.client, fake, event).status_code == 200
    sub_id: str = event["data"]["object"]["subscription"]
    return sub_id
