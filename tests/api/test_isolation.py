"""A member of org A can never read or change anything of org B, by slug or by id."""

import pytest
from fastapi.testclient import TestClient

from tests.factories import api_env, api_key, api_org, email, signup


@pytest.fixture
def two_tenants(client: TestClient) -> dict:
    a, b = signup(client), signup(client)
    org_a, org_b = api_org(client, a, "Alpha"), api_org(client, b, "Bravo")
    env_a = api_env(client, a, "alpha")
    key_a = api_key(client, a, "alpha")
    api_env(client, b, "bravo")
    key_b = api_key(client, b, "bravo")
    return {"a": a, "b": b, "org_a": org_a, "org_b": org_b, "env_a": env_a, "key_a": key_a, "key_b": key_b}


def test_b_cannot_read_a(client: TestClient, two_tenants: dict) -> None:
    t = two_tenants
    b = t["b"]
    for ref in ("alpha", t["org_a"]["id"]):
        for path in (
            "",
            "/environments",
            "/environments/prod",
            f"/environments/{t['env_a']['id']}",
            "/keys",
            f"/keys/{t['key_a']['id']}",
            "/members",
            "/usage",
            "/audit",
        ):
            r = client.get(f"/api/v1/orgs/{ref}{path}", headers=b)
            assert r.status_code == 404, (ref, path, r.status_code)
            assert r.json()["error"]["code"] == "org_not_found"
    assert [o["slug"] for o in client.get("/api/v1/orgs", headers=b).json()] == ["bravo"]


def test_b_cannot_change_a(client: TestClient, two_tenants: dict) -> None:
    t = two_tenants
    b, a = t["b"], t["a"]
    key_a = t["key_a"]["id"]
    attempts = [
        ("post", "/api/v1/orgs/alpha/environments", {"name": "x", "region": "us-east", "models": ["llama-3-8b"]}),
        ("patch", "/api/v1/orgs/alpha/environments/prod", {"rpm": 1}),
        ("delete", "/api/v1/orgs/alpha/environments/prod", None),
        ("post", "/api/v1/orgs/alpha/keys", {"name": "steal", "environment": "prod"}),
        ("post", f"/api/v1/orgs/alpha/keys/{key_a}/revoke", None),
        ("post", f"/api/v1/orgs/alpha/keys/{key_a}/rotate", None),
        ("patch", f"/api/v1/orgs/alpha/keys/{key_a}", {"rpm": 1}),
        ("post", "/api/v1/orgs/alpha/members", {"email": email(), "role": "owner"}),
        ("patch", "/api/v1/orgs/alpha", {"name": "pwned"}),
        # Org A's key through org B's own URL.
        ("post", f"/api/v1/orgs/bravo/keys/{key_a}/revoke", None),
        ("patch", f"/api/v1/orgs/bravo/keys/{key_a}", {"name": "x"}),
    ]
    for method, path, body in attempts:
        r = client.request(method, path, headers=b, json=body)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
    # Nothing changed for A.
    key = client.get(f"/api/v1/orgs/alpha/keys/{key_a}", headers=a).json()
    assert key["status"] == "active" and key["rpm"] is None and key["name"] == "svc"
    assert client.get("/api/v1/orgs/alpha", headers=a).json()["name"] == "Alpha"
    assert len(client.get("/api/v1/orgs/alpha/keys", headers=a).json()) == 1
    assert len(client.get("/api/v1/orgs/alpha/members", headers=a).json()) == 1
    assert client.get("/api/v1/orgs/alpha/environments/prod", headers=a).json()["rpm"] is None
