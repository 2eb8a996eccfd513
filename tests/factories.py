"""Test data made through the service layer and the API, the way users make it."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session

from cic.models import Org, User
from cic.models.environments import EnvironmentCreate
from cic.services import environments, orgs, users
from cic.services.authz import Actor

PASSWORD = "Sturdy-Passw0rd!"


def email(tag: str = "user") -> str:
    return f"{tag}-{secrets.token_hex(3)}@example.com"


def make_user(session: Session, address: str | None = None) -> User:
    user = users.create_user(session, email=address or email(), password=PASSWORD, name="Test User")
    session.commit()
    return user


def make_org(session: Session, owner: User, name: str | None = None) -> Org:
    org = orgs.create_org(session, Actor.user(owner.id), name=name or f"Org {secrets.token_hex(3)}", owner=owner)
    session.commit()
    return org


def make_env(
    session: Session,
    owner: User,
    org: Org,
    name: str = "prod",
    region: str = "us-east",
    models: list[str] | None = None,
) -> Any:
    env = environments.create_env(
        session,
        Actor.user(owner.id),
        org.id,
        EnvironmentCreate(name=name, region=region, models=models or ["llama-3-8b"]),
    )
    session.commit()
    return env


def signup(client: TestClient, address: str | None = None, password: str = PASSWORD) -> dict[str, str]:
    """Sign up through the API; returns the Authorization header of the new session."""
    r = client.post("/api/v1/auth/signup", json={"email": address or email(), "password": password})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def api_org(client: TestClient, headers: dict[str, str], name: str | None = None) -> dict[str, Any]:
    r = client.post("/api/v1/orgs", json={"name": name or f"Org {secrets.token_hex(3)}"}, headers=headers)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def api_env(
    client: TestClient,
    headers: dict[str, str],
    org: str,
    name: str = "prod",
    region: str = "us-east",
    models: list[str] | None = None,
) -> dict[str, Any]:
    r = client.post(
        f"/api/v1/orgs/{org}/environments",
        headers=headers,
        json={"name": name, "region": region, "models": models or ["llama-3-8b", "mistral-7b"]},
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def api_key(client: TestClient, headers: dict[str, str], org: str, env: str = "prod", **extra: Any) -> dict[str, Any]:
    r = client.post(f"/api/v1/orgs/{org}/keys", headers=headers, json={"name": "svc", "environment": env, **extra})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body
