"""Sign-in with an OpenID provider, end to end: the real API under uvicorn on loopback, a local OpenID
provider built with authlib's server side, and an HTTP client that follows each redirect by hand the
way a browser would."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx
import pytest
import uvicorn
from authlib.oauth2.rfc7636 import create_s256_code_challenge  # type: ignore[import-untyped]
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from api.app import create_app
from api.server import HTTP_PROTOCOL
from cic.models import AuditEvent, OAuthIdentity, OAuthState, User, UserSession
from cic.models.types import utcnow
from cic.settings import Settings
from tests.factories import PASSWORD, email
from tests.fakes.oidc_provider import MICROSOFT_CONSUMERS_TID, OidcProvider, OidcUser
from tests.servers import LoopThread, free_port, wait_until

DASHBOARD = "http://dashboard.test"


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@contextmanager
def serve(loop: LoopThread, settings: Settings, port: int) -> Iterator[str]:
    """The platform under uvicorn on ``port`` (known in advance: the redirect URI names it)."""
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, http=HTTP_PROTOCOL, log_config=None, access_log=False
        )
    )
    task = asyncio.run_coroutine_threadsafe(server.serve(), loop.loop)
    wait_until(lambda: server.started, timeout=20, what="uvicorn start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        task.result(20)


def oauth_settings(settings: Settings, base: str, **providers: OidcProvider) -> Settings:
    update: dict[str, Any] = {"public_base_url": base, "dashboard_url": DASHBOARD}
    for pid, p in providers.items():
        update |= {
            f"oauth_{pid}_client_id": p.client_id,
            f"oauth_{pid}_client_secret": SecretStr(p.client_secret),
            f"oauth_{pid}_discovery_url": p.discovery_url,
        }
    return settings.model_copy(update=update)


@dataclass
class Outcome:
    """Where a sign-in ended: the dashboard's callback (token, next) or its login page (error)."""

    start: httpx.Response
    authorize: httpx.Response | None
    callback: httpx.Response | None
    location: str

    @property
    def ended(self) -> str:
        return urlsplit(self.location).path

    @property
    def error(self) -> str | None:
        return parse_qs(urlsplit(self.location).query).get("error", [None])[0]

    @property
    def fragment(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.location).fragment).items()}

    @property
    def token(self) -> str:
        assert self.ended == "/auth/callback", self.location
        return self.fragment["token"]


def sign_in(base: str, provider: str = "google", next_: str | None = None) -> Outcome:
    """Start → the provider → the callback, following each 302 by hand, as a browser does."""
    with httpx.Client(timeout=30) as h:
        start = h.get(f"{base}/api/v1/auth/oauth/{provider}/start", params={"next": next_} if next_ else None)
        assert start.status_code == 302, start.text
        location = start.headers["location"]
        if location.startswith(DASHBOARD):
            return Outcome(start, None, None, location)
        authorize = h.get(location)
        assert authorize.status_code == 302, authorize.text
        callback = h.get(authorize.headers["location"])
        assert callback.status_code == 302, callback.text
        return Outcome(start, authorize, callback, callback.headers["location"])


def me(base: str, token: str) -> httpx.Response:
    return httpx.get(f"{base}/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})


@dataclass
class Platform:
    base: str
    settings: Settings
    provider: OidcProvider


@pytest.fixture
def platform(loop: LoopThread, settings: Settings, engine: Engine, oidc_provider: OidcProvider) -> Iterator[Platform]:
    """The API with Google sign-in pointed at the local provider."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    s = oauth_settings(settings, base, google=oidc_provider)
    oidc_provider.redirect_uris = [f"{base}/api/v1/auth/oauth/google/callback"]
    oidc_provider.user = OidcUser(sub=f"g-{secrets.token_hex(4)}", email=email("ann"), name="Ann Example")
    with serve(loop, s, port) as url:
        yield Platform(url, s, oidc_provider)


def test_first_sign_in_creates_the_account(platform: Platform, session: Session) -> None:
    p = platform.provider
    out = sign_in(platform.base, next_="/orgs/acme?tab=keys")

    # What went to the provider: code flow, our scopes, PKCE S256, state, nonce, our redirect URI.
    auth = p.authorize_requests[-1]
    assert auth["response_type"] == "code" and auth["scope"] == "openid email profile"
    assert auth["client_id"] == p.client_id
    assert auth["redirect_uri"] == f"{platform.base}/api/v1/auth/oauth/google/callback"
    assert auth["code_challenge_method"] == "S256" and len(auth["state"]) >= 32 and len(auth["nonce"]) >= 32
    # The token request proved possession of the verifier behind that challenge.
    assert create_s256_code_challenge(p.token_requests[-1]["code_verifier"]) == auth["code_challenge"]

    assert out.location.startswith(f"{DASHBOARD}/auth/callback#")
    assert out.fragment["next"] == "/orgs/acme?tab=keys" and out.token.startswith("clss_")
    r = me(platform.base, out.token)
    assert r.status_code == 200, r.text
    assert r.json()["user"]["email"] == p.user.email and r.json()["user"]["name"] == "Ann Example"

    user = session.exec(select(User).where(User.email == p.user.email)).one()
    assert user.password_hash is None
    ident = session.exec(select(OAuthIdentity).where(OAuthIdentity.user_id == user.id)).one()
    assert (ident.provider, ident.subject, ident.email) == ("google", p.user.sub, p.user.email)
    assert ident.last_login_at is not None
    actions = {a for a in session.exec(select(AuditEvent.action).where(AuditEvent.target_id == user.id))}
    assert {"user.created", "user.signed_in"} <= actions
    # The state was spent; nothing of the sign-in's secrets is left usable.
    assert all(s.used_at is not None for s in session.exec(select(OAuthState)))


def test_same_identity_signs_in_again_even_after_an_email_change(platform: Platform, session: Session) -> None:
    p = platform.provider
    first = sign_in(platform.base)
    user_id = me(platform.base, first.token).json()["user"]["id"]
    p.user.email = email("renamed")
    second = sign_in(platform.base)
    assert second.token != first.token
    assert me(platform.base, second.token).json()["user"]["id"] == user_id
    ident = session.exec(select(OAuthIdentity)).one()
    assert ident.email == p.user.email  # the copy follows the provider; the key is the subject
    assert len(session.exec(select(User)).all()) == 1


def test_existing_email_is_linked_and_password_still_works(platform: Platform, session: Session) -> None:
    p = platform.provider
    r = httpx.post(f"{platform.base}/api/v1/auth/signup", json={"email": p.user.email, "password": PASSWORD})
    assert r.status_code == 201
    user_id = r.json()["user"]["id"]
    out = sign_in(platform.base)
    assert me(platform.base, out.token).json()["user"]["id"] == user_id
    assert session.exec(select(OAuthIdentity)).one().user_id == user_id
    assert session.exec(select(AuditEvent).where(AuditEvent.action == "user.identity_linked")).one()
    r = httpx.post(f"{platform.base}/api/v1/auth/login", json={"email": p.user.email, "password": PASSWORD})
    assert r.status_code == 200


def test_password_login_of_an_oauth_account_names_the_provider(platform: Platform) -> None:
    sign_in(platform.base)
    r = httpx.post(
        f"{platform.base}/api/v1/auth/login", json={"email": platform.provider.user.email, "password": PASSWORD}
    )
    assert r.status_code == 401
    err = r.json()["error"]
    assert err["code"] == "use_oauth_provider" and "Google" in err["message"]
    # Unknown accounts still get the plain answer.
    r = httpx.post(f"{platform.base}/api/v1/auth/login", json={"email": email(), "password": PASSWORD})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_credentials"


def test_unverified_email_is_refused(platform: Platform, session: Session) -> None:
    platform.provider.user.email_verified = False
    out = sign_in(platform.base)
    assert out.location == f"{DASHBOARD}/login?error=oauth_email"
    assert session.exec(select(User)).all() == [] and session.exec(select(UserSession)).all() == []


def test_missing_email_is_refused(platform: Platform) -> None:
    platform.provider.user.email = None
    assert sign_in(platform.base).error == "oauth_email"


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("deny", "oauth_denied"),
        ("token_error", "oauth_token"),
        ("wrong_nonce", "oauth_id_token"),
        ("wrong_audience", "oauth_id_token"),
        ("wrong_issuer", "oauth_id_token"),
        ("expired", "oauth_id_token"),
        ("unknown_kid", "oauth_id_token"),
        ("bad_signature", "oauth_id_token"),
    ],
)
def test_bad_answers_end_at_login_with_a_code(platform: Platform, session: Session, fault: str, code: str) -> None:
    setattr(platform.provider.faults, fault, True)
    out = sign_in(platform.base)
    assert out.location == f"{DASHBOARD}/login?error={code}"
    assert session.exec(select(User)).all() == [] and session.exec(select(UserSession)).all() == []
    # Whatever failed, the state is spent.
    assert all(s.used_at is not None for s in session.exec(select(OAuthState)))


def test_unknown_kid_refetches_the_keys_once(platform: Platform) -> None:
    p = platform.provider
    sign_in(platform.base)  # caches discovery and keys
    assert (p.discovery_requests, p.jwks_requests) == (1, 1)
    p.faults.unknown_kid = True
    assert sign_in(platform.base).error == "oauth_id_token"
    assert p.jwks_requests == 2  # tried again with fresh keys before refusing


def test_key_rotation_is_picked_up(platform: Platform) -> None:
    p = platform.provider
    first = sign_in(platform.base)
    p.rotate_keys()
    second = sign_in(platform.base)
    assert me(platform.base, second.token).json()["user"]["id"] == me(platform.base, first.token).json()["user"]["id"]
    assert p.discovery_requests == 1 and p.jwks_requests == 2


def test_state_is_single_use_and_checked(platform: Platform, session: Session) -> None:
    out = sign_in(platform.base)
    assert out.ended == "/auth/callback" and out.authorize is not None
    # A replay of the very same callback URL (code and state) is refused.
    with httpx.Client() as h:
        replay = h.get(out.authorize.headers["location"])
    assert replay.status_code == 302 and replay.headers["location"] == f"{DASHBOARD}/login?error=oauth_state"
    # Unknown and missing states.
    cb = f"{platform.base}/api/v1/auth/oauth/google/callback"
    for params in ({"code": "x", "state": "forged"}, {"code": "x"}):
        r = httpx.get(cb, params=params)
        assert r.headers["location"] == f"{DASHBOARD}/login?error=oauth_state"
    # An expired one.
    with httpx.Client() as h:
        start = h.get(f"{platform.base}/api/v1/auth/oauth/google/start")
        authorize = h.get(start.headers["location"])
        state = session.exec(select(OAuthState).where(col(OAuthState.used_at).is_(None))).one()
        state.expires_at = utcnow() - timedelta(seconds=1)
        session.add(state)
        session.commit()
        late = h.get(authorize.headers["location"])
    assert late.headers["location"] == f"{DASHBOARD}/login?error=oauth_state"
    assert len(session.exec(select(UserSession)).all()) == 1


def test_start_refuses_open_redirects(platform: Platform, session: Session) -> None:
    start = f"{platform.base}/api/v1/auth/oauth/google/start"
    for bad in ("https://evil.example/", "//evil.example", "/\\evil.example", "javascript:alert(1)", "evil", "/a\nb"):
        r = httpx.get(start, params={"next": bad})
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["error"]["code"] == "invalid_next" and r.json()["error"]["param"] == "next"
    assert session.exec(select(OAuthState)).all() == []


def test_disabled_and_unknown_providers_are_404(platform: Platform) -> None:
    assert httpx.get(f"{platform.base}/api/v1/auth/providers").json() == [{"id": "google", "name": "Google"}]
    for pid in ("microsoft", "github"):
        for step in ("start", "callback"):
            r = httpx.get(f"{platform.base}/api/v1/auth/oauth/{pid}/{step}")
            assert r.status_code == 404 and r.json()["error"]["code"] == "oauth_provider_not_found"


def test_no_provider_configured(client: Any) -> None:
    assert client.get("/api/v1/auth/providers").json() == []


def test_a_sign_in_started_on_one_instance_finishes_on_another(
    loop: LoopThread, settings: Settings, engine: Engine, oidc_provider: OidcProvider
) -> None:
    """Nothing of an in-flight sign-in lives in a process: instance B finishes what A started."""
    port_a, port_b = free_port(), free_port()
    s = oauth_settings(settings, f"http://127.0.0.1:{port_a}", google=oidc_provider)
    with serve(loop, s, port_a) as a, serve(loop, s, port_b) as b, httpx.Client() as h:
        start = h.get(f"{a}/api/v1/auth/oauth/google/start")
        back = urlsplit(h.get(start.headers["location"]).headers["location"])
        assert f"{back.scheme}://{back.netloc}" == a
        done = h.get(urlunsplit(("http", f"127.0.0.1:{port_b}", back.path, back.query, "")))
        assert urlsplit(done.headers["location"]).path == "/auth/callback"
        token = parse_qs(urlsplit(done.headers["location"]).fragment)["token"][0]
        assert me(b, token).status_code == 200 and me(a, token).status_code == 200


# --- Microsoft ------------------------------------------------------------------------------------

WORK_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


@pytest.fixture
def microsoft(loop: LoopThread, settings: Settings, engine: Engine) -> Any:
    """``with microsoft(tenant) as (base, provider):`` the API with Microsoft sign-in against a local
    provider that behaves like Microsoft's multi-tenant endpoint (issuer ``{base}/{tenantid}/v2.0``)."""

    @contextmanager
    def run(tenant: str = "common") -> Iterator[tuple[str, OidcProvider]]:
        with OidcProvider(multi_tenant=True).running() as p:
            port = free_port()
            s = oauth_settings(settings, f"http://127.0.0.1:{port}", microsoft=p)
            s = s.model_copy(update={"oauth_microsoft_tenant": tenant})
            with serve(loop, s, port) as base:
                yield base, p

    return run


def test_microsoft_personal_account(microsoft: Any) -> None:
    with microsoft() as (base, p):
        assert p.issuer.endswith("/{tenantid}/v2.0")
        # Personal accounts: Microsoft sends no email_verified; their email is the account's own.
        p.user = OidcUser(sub="ms-1", email=email("msa"), email_verified=None, tid=MICROSOFT_CONSUMERS_TID)
        out = sign_in(base, "microsoft")
        assert me(base, out.token).json()["user"]["email"] == p.user.email
        assert httpx.get(f"{base}/api/v1/auth/providers").json() == [{"id": "microsoft", "name": "Microsoft"}]


def test_microsoft_work_account_email_needs_domain_owner_verification(microsoft: Any) -> None:
    with microsoft() as (base, p):
        p.user = OidcUser(sub="ms-2", email=email("work"), email_verified=None, tid=WORK_TENANT)
        assert sign_in(base, "microsoft").error == "oauth_email"
        p.user.extra = {"xms_edov": True}
        assert sign_in(base, "microsoft").ended == "/auth/callback"


def test_microsoft_issuer_must_name_the_tokens_own_tenant(microsoft: Any) -> None:
    with microsoft() as (base, p):
        # iss names WORK_TENANT, the tid claim another tenant.
        p.user = OidcUser(sub="ms-3", email=email(), tid=WORK_TENANT, extra={"tid": MICROSOFT_CONSUMERS_TID})
        assert sign_in(base, "microsoft").error == "oauth_id_token"
        # No tid at all.
        p.user = OidcUser(sub="ms-3", email=email(), tid=None)
        assert sign_in(base, "microsoft").error == "oauth_id_token"
        p.user = OidcUser(sub="ms-3", email=email(), tid=WORK_TENANT)
        p.faults.wrong_issuer = True
        assert sign_in(base, "microsoft").error == "oauth_id_token"


def test_microsoft_organizations_refuses_personal_accounts(microsoft: Any) -> None:
    with microsoft("organizations") as (base, p):
        p.user = OidcUser(sub="ms-4", email=email(), tid=MICROSOFT_CONSUMERS_TID)
        assert sign_in(base, "microsoft").error == "oauth_id_token"
        p.user = OidcUser(sub="ms-5", email=email(), email_verified=True, tid=WORK_TENANT)
        assert sign_in(base, "microsoft").ended == "/auth/callback"


def test_state_of_one_provider_is_refused_by_another(
    loop: LoopThread, settings: Settings, engine: Engine, oidc_provider: OidcProvider
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    s = oauth_settings(settings, base, google=oidc_provider, microsoft=oidc_provider)
    with serve(loop, s, port), httpx.Client() as h:
        start = h.get(f"{base}/api/v1/auth/oauth/google/start")
        back = urlsplit(h.get(start.headers["location"]).headers["location"])
        r = h.get(f"{base}/api/v1/auth/oauth/microsoft/callback?{back.query}")
        assert r.headers["location"] == f"{DASHBOARD}/login?error=oauth_state"


def test_unreachable_provider_ends_at_login(loop: LoopThread, settings: Settings, engine: Engine) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    s = settings.model_copy(
        update={
            "public_base_url": base,
            "dashboard_url": DASHBOARD,
            "oauth_google_client_id": "id",
            "oauth_google_client_secret": SecretStr("secret"),
            "oauth_google_discovery_url": f"http://127.0.0.1:{free_port()}/.well-known/openid-configuration",
            "oauth_http_timeout_s": 2.0,
        }
    )
    with serve(loop, s, port):
        out = sign_in(base)
    assert out.location == f"{DASHBOARD}/login?error=oauth_unavailable"
