from datetime import timedelta

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from cic.models import UserSession
from cic.models.types import utcnow
from tests.factories import PASSWORD, email, signup


def test_signup_login_me_logout(client: TestClient) -> None:
    address = email()
    r = client.post("/api/v1/auth/signup", json={"email": address.upper(), "password": PASSWORD, "name": "Ann"})
    assert r.status_code == 201
    body = r.json()
    assert body["user"]["email"] == address and body["token"].startswith("clss_")
    assert "password" not in r.text and "hash" not in r.text

    r = client.post("/api/v1/auth/login", json={"email": address, "password": PASSWORD})
    assert r.status_code == 200
    headers = {"Authorization": f"Bearer {r.json()['token']}"}
    me = client.get("/api/v1/auth/me", headers=headers)
    assert me.status_code == 200 and me.json()["user"]["email"] == address and me.json()["orgs"] == []

    assert client.post("/api/v1/auth/logout", headers=headers).status_code == 204
    r = client.get("/api/v1/auth/me", headers=headers)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_session"


def test_bad_credentials(client: TestClient) -> None:
    address = email()
    signup(client, address)
    for creds in ({"email": address, "password": "Wrong-Passw0rd!"}, {"email": email(), "password": PASSWORD}):
        r = client.post("/api/v1/auth/login", json=creds)
        assert r.status_code == 401
        assert r.json()["error"] == {
            "message": "Incorrect email or password.",
            "type": "authentication_error",
            "param": None,
            "code": "invalid_credentials",
        }


def test_duplicate_email_and_weak_password(client: TestClient) -> None:
    address = email()
    signup(client, address)
    r = client.post("/api/v1/auth/signup", json={"email": address, "password": PASSWORD})
    assert r.status_code == 409 and r.json()["error"]["code"] == "email_taken"
    r = client.post("/api/v1/auth/signup", json={"email": email(), "password": "abc"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "weak_password"
    assert "at least 10 characters" in r.json()["error"]["message"]
    r = client.post("/api/v1/auth/signup", json={"email": "not-an-email", "password": PASSWORD})
    assert r.status_code == 422 and r.json()["error"]["param"] == "email"


def test_missing_and_garbage_tokens(client: TestClient) -> None:
    r = client.get("/api/v1/orgs")
    assert r.status_code == 401 and "Log in first" in r.json()["error"]["message"]
    r = client.get("/api/v1/orgs", headers={"Authorization": "Bearer clss_nope"})
    assert r.status_code == 401


def test_expired_session(client: TestClient, session: Session) -> None:
    headers = signup(client)
    row = session.exec(select(UserSession)).one()
    row.expires_at = utcnow() - timedelta(seconds=1)
    session.add(row)
    session.commit()
    r = client.get("/api/v1/auth/me", headers=headers)
    assert r.status_code == 401 and r.json()["error"]["code"] == "session_expired"
