"""Bad input gets the right status and a clear message, and leaves nothing half-written."""

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from cic.models import Environment, EnvironmentModel, Org
from tests.factories import api_env, api_org, signup


def _err(r) -> dict:
    body = r.json()
    assert set(body) == {"error"}
    assert {"message", "type", "param", "code"} <= set(body["error"])
    return body["error"]


def test_duplicate_org_slug_is_409(client: TestClient, session: Session) -> None:
    h = signup(client)
    api_org(client, h, "Dup")
    r = client.post("/api/v1/orgs", json={"name": "Other", "slug": "dup"}, headers=h)
    assert r.status_code == 409 and _err(r)["code"] == "slug_taken" and "'dup'" in _err(r)["message"]
    assert len(session.exec(select(Org)).all()) == 1


def test_duplicate_env_name_is_409(client: TestClient) -> None:
    h = signup(client)
    api_org(client, h, "Envs")
    api_env(client, h, "envs", "staging")
    r = client.post(
        "/api/v1/orgs/envs/environments",
        headers=h,
        json={"name": "staging", "region": "eu-west", "models": ["llama-3-8b"]},
    )
    assert r.status_code == 409 and _err(r)["code"] == "environment_exists"


def test_unknown_region_and_model_are_422_naming_them(client: TestClient, session: Session) -> None:
    h = signup(client)
    api_org(client, h, "Names")
    r = client.post(
        "/api/v1/orgs/names/environments",
        headers=h,
        json={"name": "dev", "region": "moon-base", "models": ["llama-3-8b"]},
    )
    assert r.status_code == 422 and "moon-base" in _err(r)["message"] and _err(r)["param"] == "region"
    r = client.post(
        "/api/v1/orgs/names/environments",
        headers=h,
        json={"name": "dev", "region": "us-east", "models": ["llama-3-8b", "gpt-99"]},
    )
    assert r.status_code == 422 and "gpt-99" in _err(r)["message"] and _err(r)["code"] == "unknown_model"
    assert session.exec(select(Environment)).all() == [] and session.exec(select(EnvironmentModel)).all() == []


def test_malformed_json_is_400(client: TestClient) -> None:
    h = signup(client)
    r = client.post("/api/v1/orgs", content=b'{"name": ', headers={**h, "content-type": "application/json"})
    assert r.status_code == 400 and _err(r)["code"] == "invalid_json"
    r = client.post("/api/v1/auth/signup", content=b"not json", headers={"content-type": "application/json"})
    assert r.status_code == 400


def test_schema_violations_are_422_with_field(client: TestClient) -> None:
    h = signup(client)
    r = client.post("/api/v1/orgs", json={"name": ""}, headers=h)
    assert r.status_code == 422 and _err(r)["param"] == "name"
    api_org(client, h, "Fields")
    r = client.post(
        "/api/v1/orgs/fields/environments",
        headers=h,
        json={"name": "Bad Name!", "region": "us-east", "models": ["llama-3-8b"]},
    )
    assert r.status_code == 422 and _err(r)["param"] == "name"
    r = client.post("/api/v1/orgs/fields/keys", headers=h, json={"name": "k", "environment": "prod", "rpm": -1})
    assert r.status_code == 422 and _err(r)["param"] == "rpm"


def test_unknown_route_and_method(client: TestClient) -> None:
    r = client.get("/api/v1/nothing-here")
    assert r.status_code == 404 and _err(r)["type"] == "not_found_error"
    r = client.delete("/api/v1/regions")
    assert r.status_code == 405


def test_every_response_has_request_id(client: TestClient) -> None:
    assert client.get("/health").headers["x-request-id"].startswith("req_")
    assert client.get("/nope", headers={"x-request-id": "abc"}).headers["x-request-id"] == "abc"
