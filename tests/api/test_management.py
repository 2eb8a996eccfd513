"""The dashboard's flows through the management API: orgs, members, environments, keys, catalog."""

from fastapi.testclient import TestClient

from tests.factories import api_env, api_key, api_org, email, signup


def test_org_environment_key_flow(client: TestClient) -> None:
    h = signup(client)
    org = api_org(client, h, "Acme Inc")
    assert (org["slug"], org["role"], org["plan"]) == ("acme-inc", "owner", "free")
    assert [o["slug"] for o in client.get("/api/v1/orgs", headers=h).json()] == ["acme-inc"]

    env = api_env(client, h, "acme-inc", "prod", "in-mumbai", ["llama-3-8b"])
    assert env["base_url"] == "http://testserver/acme-inc/prod/v1"
    assert env["models"] == ["llama-3-8b"] and env["region"] == "in-mumbai"

    key = api_key(client, h, "acme-inc", "prod", rpm=60, expires_in_days=30)
    assert key["key"].startswith("clsk_prod_") and key["status"] == "active" and key["rpm"] == 60
    listed = client.get("/api/v1/orgs/acme-inc/keys", headers=h).json()
    assert len(listed) == 1 and "key" not in listed[0]
    assert listed[0]["display"] == key["display"] and key["key"] not in str(listed)

    rotated = client.post(f"/api/v1/orgs/acme-inc/keys/{key['id']}/rotate", headers=h, json={"grace_hours": 1})
    assert rotated.status_code == 201 and rotated.json()["rotated_from_id"] == key["id"]
    old = client.get(f"/api/v1/orgs/acme-inc/keys/{key['id']}", headers=h).json()
    assert old["status"] == "rotating"

    revoked = client.post(f"/api/v1/orgs/acme-inc/keys/{rotated.json()['id']}/revoke", headers=h)
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"

    r = client.patch(
        "/api/v1/orgs/acme-inc/environments/prod",
        headers=h,
        json={"models": ["llama-3-8b", "all-minilm-l6-v2"], "tpm": 10000},
    )
    assert r.status_code == 200 and r.json()["models"] == ["all-minilm-l6-v2", "llama-3-8b"]
    assert r.json()["tpm"] == 10000

    events = client.get("/api/v1/orgs/acme-inc/audit", headers=h).json()
    assert [e["action"] for e in events][:4] == ["environment.updated", "key.revoked", "key.rotated", "key.created"]
    assert key["key"] not in str(events)

    assert client.delete("/api/v1/orgs/acme-inc/environments/prod", headers=h).status_code == 204
    assert client.get("/api/v1/orgs/acme-inc/environments", headers=h).json() == []


def test_members_and_roles(client: TestClient) -> None:
    owner = signup(client)
    member_email = email("member")
    member = signup(client, member_email)
    api_org(client, owner, "Team")
    r = client.post("/api/v1/orgs/team/members", headers=owner, json={"email": member_email, "role": "member"})
    assert r.status_code == 201 and r.json()["role"] == "member"
    r = client.post("/api/v1/orgs/team/members", headers=owner, json={"email": member_email, "role": "admin"})
    assert r.status_code == 409
    # A member reads but cannot manage.
    assert client.get("/api/v1/orgs/team", headers=member).json()["role"] == "member"
    r = client.post(
        "/api/v1/orgs/team/environments",
        headers=member,
        json={"name": "dev", "region": "us-east", "models": ["llama-3-8b"]},
    )
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    uid = r = client.get("/api/v1/orgs/team/members", headers=owner).json()
    member_id = next(m["user_id"] for m in uid if m["email"] == member_email)
    r = client.patch(f"/api/v1/orgs/team/members/{member_id}", headers=owner, json={"role": "admin"})
    assert r.status_code == 200 and r.json()["role"] == "admin"
    api_env(client, member, "team", "dev")
    r = client.patch(f"/api/v1/orgs/team/members/{member_id}", headers=owner, json={"role": "superuser"})
    assert r.status_code == 422
    assert client.delete(f"/api/v1/orgs/team/members/{member_id}", headers=member).status_code == 204
    assert client.get("/api/v1/orgs/team", headers=member).status_code == 404


def test_catalog_is_public(client: TestClient) -> None:
    regions = client.get("/api/v1/regions").json()
    assert {r["code"] for r in regions} == {"in-mumbai", "us-east", "eu-west", "ap-singapore"}
    models = client.get("/api/v1/models").json()
    llama = next(m for m in models if m["id"] == "llama-3-8b")
    assert {p["region"]: p["input_per_1m"] for p in llama["prices"]}["us-east"] == 0.05
    assert client.get("/api/v1/models/all-minilm-l6-v2").json()["kind"] == "embedding"
    r = client.get("/api/v1/models/gpt-17")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_usage_endpoint(client: TestClient) -> None:
    h = signup(client)
    api_org(client, h, "Usage Co")
    api_env(client, h, "usage-co")
    r = client.get(
        "/api/v1/orgs/usage-co/usage", headers=h, params={"since": "2026-01-01", "group_by": ["model", "environment"]}
    )
    assert r.status_code == 200
    assert r.json()["group_by"] == ["model", "environment"] and r.json()["totals"]["requests"] == 0
    r = client.get("/api/v1/orgs/usage-co/usage", headers=h, params={"group_by": "region"})
    assert r.status_code == 422
    r = client.get("/api/v1/orgs/usage-co/usage", headers=h, params={"since": "2026-02-01", "until": "2026-01-01"})
    assert r.status_code == 400
