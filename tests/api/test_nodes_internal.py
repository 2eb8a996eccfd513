"""The node-registration API: bootstrap tokens, signed calls, and what is refused."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from cic import nodeauth
from cic.models import AuditEvent, Node, NodeToken
from cic.models.types import utcnow
from cic.services import nodes
from cic.services.authz import Actor

INFO = {
    "model": "llama-3-8b",
    "region": "us-east",
    "provider": "aws",
    "endpoint_url": "http://10.1.2.3:8000",
    "gpu": "A10G",
    "spot": True,
    "price_per_hour": 0.35,
}


def _token(session: Session, pepper: str, **kw: object) -> str:
    plaintext, _ = nodes.create_node_token(session, Actor.system(), pepper=pepper, **kw)  # type: ignore[arg-type]
    session.commit()
    return plaintext


def _register(client: TestClient, token: str, **overrides: object) -> dict[str, Any]:
    r = client.post(
        "/internal/nodes/register", json={**INFO, **overrides}, headers={"Authorization": f"Bearer {token}"}
    )
    return {"status": r.status_code, **r.json()}


def _signed(
    client: TestClient,
    node_id: str,
    secret: str,
    action: str,
    payload: dict[str, Any] | None = None,
    **sign_kw: Any,
) -> tuple[Any, dict[str, str], bytes]:
    path = f"/internal/nodes/{node_id}/{action}"
    body = json.dumps(payload or {}).encode()
    headers = nodeauth.sign(secret, "POST", path, body, node_id=node_id, **sign_kw)
    return client.post(path, content=body, headers={**headers, "content-type": "application/json"}), headers, body


def test_register_heartbeat_drain_deregister(client: TestClient, session: Session, pepper: str) -> None:
    reg = _register(client, _token(session, pepper, region="us-east"))
    assert reg["status"] == 201 and reg["node_id"].startswith("node_") and len(reg["secret"]) == 64
    node_id, secret = reg["node_id"], reg["secret"]
    node = session.get(Node, node_id)
    assert node is not None and node.managed and node.status == "healthy" and node.price_per_hour_micros == 350_000
    load = {"num_requests_running": 3, "num_requests_waiting": 1, "kv_cache_usage_perc": 0.4}
    r, _, _ = _signed(client, node_id, secret, "heartbeat", {"load": load})
    assert r.status_code == 200 and r.json()["status"] == "healthy"
    session.expire_all()
    assert session.get(Node, node_id).load["num_requests_running"] == 3  # type: ignore[union-attr]
    r, _, _ = _signed(client, node_id, secret, "heartbeat", {"load": load, "engine_healthy": False})
    assert r.json()["status"] == "unhealthy"
    r, _, _ = _signed(client, node_id, secret, "drain")
    assert r.json()["status"] == "draining"
    r, _, _ = _signed(client, node_id, secret, "heartbeat", {"load": load})
    assert r.json()["status"] == "draining"  # draining sticks until deregistered or undrained
    r, _, _ = _signed(client, node_id, secret, "deregister")
    assert r.status_code == 200 and r.json()["status"] == "offline"
    r, _, _ = _signed(client, node_id, secret, "heartbeat", {"load": load})
    assert r.status_code == 410 and r.json()["error"]["code"] == "node_deregistered"


def test_bad_tokens(client: TestClient, session: Session, pepper: str) -> None:
    assert _register(client, "clnt_" + "x" * 40)["status"] == 401
    assert client.post("/internal/nodes/register", json=INFO).status_code == 401
    wrong_region = _register(client, _token(session, pepper, region="eu-west"))
    assert wrong_region["status"] == 401 and wrong_region["error"]["code"] == "node_token_wrong_region"
    once = _token(session, pepper, max_uses=1)
    assert _register(client, once)["status"] == 201
    assert _register(client, once)["error"]["code"] == "node_token_used"
    expired = _token(session, pepper)
    row = session.exec(select(NodeToken).where(NodeToken.prefix == expired[:12])).one()
    row.expires_at = utcnow() - timedelta(seconds=1)
    session.add(row)
    session.commit()
    assert _register(client, expired)["error"]["code"] == "node_token_expired"


def test_unknown_model_is_422(client: TestClient, session: Session, pepper: str) -> None:
    reg = _register(client, _token(session, pepper), model="gpt-17")
    assert reg["status"] == 422 and "gpt-17" in reg["error"]["message"]
    reg = _register(client, _token(session, pepper), region="mars")
    assert reg["status"] == 422


@pytest.mark.parametrize("attack", ["unsigned", "wrong_secret", "other_node", "stale", "replay", "tampered"])
def test_bad_signatures_refused_and_audited(client: TestClient, session: Session, pepper: str, attack: str) -> None:
    reg = _register(client, _token(session, pepper))
    node_id, secret = reg["node_id"], reg["secret"]
    path = f"/internal/nodes/{node_id}/heartbeat"
    body = json.dumps({"load": {}}).encode()
    if attack == "unsigned":
        r = client.post(path, content=body)
    elif attack == "wrong_secret":
        r, _, _ = _signed(client, node_id, "0" * 64, "heartbeat", {"load": {}})
    elif attack == "other_node":
        other = _register(client, _token(session, pepper))
        r, _, _ = _signed(client, node_id, other["secret"], "heartbeat", {"load": {}})
    elif attack == "stale":
        r, _, _ = _signed(client, node_id, secret, "heartbeat", {"load": {}}, ts=int(time.time()) - 600)
    elif attack == "replay":
        first, headers, sent = _signed(client, node_id, secret, "heartbeat", {"load": {}})
        assert first.status_code == 200
        r = client.post(path, content=sent, headers={**headers, "content-type": "application/json"})
    else:
        headers = nodeauth.sign(secret, "POST", path, body, node_id=node_id)
        r = client.post(path, content=json.dumps({"load": {"num_requests_running": 999}}).encode(), headers=headers)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_signature"
    events = session.exec(select(AuditEvent).where(col(AuditEvent.action) == "node.auth_failed")).all()
    assert len(events) == 1 and events[0].target_id == node_id and events[0].details["reason"]


def test_admin_endpoints_need_platform_admin(client: TestClient, session: Session, pepper: str) -> None:
    from tests.factories import PASSWORD, email, signup

    headers = signup(client)
    assert client.get("/api/v1/admin/nodes", headers=headers).status_code == 403
    admin_email = email("admin")
    from cic.services import users

    users.create_user(session, email=admin_email, password=PASSWORD, is_platform_admin=True)
    session.commit()
    token = client.post("/api/v1/auth/login", json={"email": admin_email, "password": PASSWORD}).json()["token"]
    admin = {"Authorization": f"Bearer {token}"}
    created = client.post("/api/v1/admin/node-tokens", headers=admin, json={"region": "us-east"}).json()
    reg = _register(client, created["token"])
    assert reg["status"] == 201
    listed = client.get("/api/v1/admin/nodes", headers=admin).json()
    assert [n["id"] for n in listed] == [reg["node_id"]]
    r = client.post(f"/api/v1/admin/nodes/{reg['node_id']}/drain", headers=admin)
    assert r.json()["status"] == "draining"
    r = client.post(f"/api/v1/admin/nodes/{reg['node_id']}/undrain", headers=admin)
    assert r.json()["status"] == "healthy"
    assert client.post(f"/api/v1/admin/nodes/{reg['node_id']}/undrain", headers=admin).status_code == 409
