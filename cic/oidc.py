"""OpenID Connect sign-in, the relying party's side (Google, Microsoft, or any OpenID provider).

Per provider: its settings, its discovery document and signing keys (fetched at run time from the
configured URL and cached; the keys are fetched again when a token names a key id we do not know),
the authorization URL (code flow, PKCE S256, ``state`` and ``nonce``), the code exchange (authlib's
OAuth 2.0 client) and the ID token's verification (signature against the provider's JWKS, ``iss``,
``aud``/``azp``, ``exp``/``iat``, ``nonce``, ``at_hash``; authlib's ``CodeIDToken`` over joserfc).

What an in-flight sign-in needs to remember (state, nonce, code verifier) is not kept here but in the
database (``cic.services.oauth``), so any worker of any instance can finish what another started. This
module only caches the providers' public documents. Failures raise ``OAuthFailure`` with a short code
the dashboard shows (``oauth_…``) and a detail that is only logged.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import httpx2
from authlib.integrations.httpx_client import OAuth2Client, OAuthError  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri  # type: ignore[import-untyped]
from authlib.oauth2.rfc7636 import create_s256_code_challenge  # type: ignore[import-untyped]
from authlib.oidc.core import CodeIDToken  # type: ignore[import-untyped]
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from cic.settings import Settings

log = logging.getLogger("cic.oidc")

GOOGLE = "google"
MICROSOFT = "microsoft"
SCOPE = "openid email profile"
# The tenant of personal Microsoft accounts (outlook.com, hotmail.com, ...).
MICROSOFT_CONSUMERS_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"
MICROSOFT_DISCOVERY = "https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration"
# Asymmetric algorithms only: "none" and HMAC (keyed with our own client secret) are never accepted.
SIGNING_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
DOCUMENT_TTL_S = 3600.0
CLOCK_LEEWAY_S = 60


class OAuthFailure(Exception):
    """A sign-in that cannot complete. ``code`` goes to the user (``/login?error=<code>``), ``detail``
    only to the log."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class ProviderConfig:
    id: str
    name: str
    client_id: str
    client_secret: str
    discovery_url: str
    microsoft_tenant: str | None = None


def configured_providers(settings: Settings) -> dict[str, ProviderConfig]:
    """The providers whose client id and secret are both set, by id."""
    out: dict[str, ProviderConfig] = {}
    if settings.oauth_google_client_id and settings.oauth_google_client_secret:
        out[GOOGLE] = ProviderConfig(
            id=GOOGLE,
            name="Google",
            client_id=settings.oauth_google_client_id,
            client_secret=settings.oauth_google_client_secret.get_secret_value(),
            discovery_url=settings.oauth_google_discovery_url,
        )
    if settings.oauth_microsoft_client_id and settings.oauth_microsoft_client_secret:
        tenant = settings.oauth_microsoft_tenant.strip() or "common"
        out[MICROSOFT] = ProviderConfig(
            id=MICROSOFT,
            name="Microsoft",
            client_id=settings.oauth_microsoft_client_id,
            client_secret=settings.oauth_microsoft_client_secret.get_secret_value(),
            discovery_url=settings.oauth_microsoft_discovery_url or MICROSOFT_DISCOVERY.format(tenant=tenant),
            microsoft_tenant=tenant.lower(),
        )
    return out


@dataclass(frozen=True)
class VerifiedIdentity:
    """Who the provider says signed in, from a verified ID token."""

    provider: str
    subject: str
    email: str
    email_verified: bool
    name: str


def _secure_url(url: str) -> bool:
    """https, or http to a loopback host (local providers in development and tests)."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return bool(parts.hostname)
    if parts.scheme != "http" or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


def _truthy(value: Any) -> bool:
    """Boolean claims, which some providers send as strings ("true")."""
    return value is True or (isinstance(value, str) and value.lower() in ("true", "1")) or value == 1


class OidcClient:
    """One provider. Thread-safe: routes run in a thread pool, and the cache is shared by them."""

    def __init__(
        self, config: ProviderConfig, *, timeout_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.timeout_s = timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._metadata: tuple[float, dict[str, Any]] | None = None
        self._jwks: tuple[float, KeySet] | None = None

    # --- the provider's public documents -------------------------------------------------------

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        if not _secure_url(url):
            raise OAuthFailure("oauth_unavailable", f"{self.config.id}: refusing a non-https {what} URL {url}")
        try:
            r = httpx.get(url, timeout=self.timeout_s, headers={"accept": "application/json"})
            r.raise_for_status()
            data = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise OAuthFailure("oauth_unavailable", f"{self.config.id}: cannot fetch the {what} {url}: {exc}") from exc
        if not isinstance(data, dict):
            raise OAuthFailure("oauth_unavailable", f"{self.config.id}: the {what} at {url} is not a JSON object")
        return data

    def metadata(self) -> dict[str, Any]:
        """The discovery document (cached for an hour)."""
        with self._lock:
            cached = self._metadata
            if cached is not None and self._clock() - cached[0] < DOCUMENT_TTL_S:
                return cached[1]
            meta = self._get_json(self.config.discovery_url, "discovery document")
            missing = [k for k in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri") if not meta.get(k)]
            if missing:
                raise OAuthFailure("oauth_unavailable", f"{self.config.id}: discovery document lacks {missing}")
            for k in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not _secure_url(str(meta[k])):
                    raise OAuthFailure("oauth_unavailable", f"{self.config.id}: {k} is not https: {meta[k]}")
            self._metadata = (self._clock(), meta)
            # New metadata may point at new keys.
            self._jwks = None
            return meta

    def key_set(self, *, refresh: bool = False) -> KeySet:
        """The provider's signing keys (cached for an hour; ``refresh`` fetches them again)."""
        meta = self.metadata()
        with self._lock:
            cached = self._jwks
            if not refresh and cached is not None and self._clock() - cached[0] < DOCUMENT_TTL_S:
                return cached[1]
            data = self._get_json(str(meta["jwks_uri"]), "key set")
            try:
                keys = KeySet.import_key_set(data)  # type: ignore[arg-type]
            except (JoseError, ValueError, KeyError, TypeError) as exc:
                raise OAuthFailure("oauth_unavailable", f"{self.config.id}: unusable key set: {exc}") from exc
            self._jwks = (self._clock(), keys)
            return keys

    # --- the flow --------------------------------------------------------------------------------

    def authorization_url(self, *, redirect_uri: str, state: str, nonce: str, code_verifier: str) -> str:
        meta = self.metadata()
        params: dict[str, Any] = {
            "nonce": nonce,
            "code_challenge": create_s256_code_challenge(code_verifier),
            "code_challenge_method": "S256",
        }
        if self.config.id in (GOOGLE, MICROSOFT):
            params["prompt"] = "select_account"
        url: str = prepare_grant_uri(
            meta["authorization_endpoint"],
            client_id=self.config.client_id,
            response_type="code",
            redirect_uri=redirect_uri,
            scope=SCOPE,
            state=state,
            **params,
        )
        return url

    def _auth_method(self, meta: dict[str, Any]) -> str:
        supported = meta.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        return "client_secret_post" if "client_secret_post" in supported else "client_secret_basic"

    def exchange_code(self, *, code: str, redirect_uri: str, code_verifier: str) -> dict[str, Any]:
        """The token endpoint's answer for an authorization code (with the PKCE verifier)."""
        meta = self.metadata()
        try:
            with OAuth2Client(
                client_id=self.config.client_id,
                client_secret=self.config.client_secret,
                token_endpoint_auth_method=self._auth_method(meta),
                redirect_uri=redirect_uri,
                timeout=self.timeout_s,
            ) as client:
                token = client.fetch_token(
                    meta["token_endpoint"],
                    grant_type="authorization_code",
                    code=code,
                    redirect_uri=redirect_uri,
                    code_verifier=code_verifier,
                )
        except OAuthError as exc:
            raise OAuthFailure("oauth_token", f"{self.config.id}: token endpoint refused the code: {exc}") from exc
        except (httpx2.HTTPError, ValueError) as exc:  # authlib's client runs on httpx2
            raise OAuthFailure("oauth_token", f"{self.config.id}: token request failed: {exc!r}") from exc
        if not isinstance(token, dict) or not token.get("id_token"):
            raise OAuthFailure("oauth_token", f"{self.config.id}: the token response has no id_token")
        return dict(token)

    def verify_id_token(self, id_token: str, *, nonce: str, access_token: str | None = None) -> dict[str, Any]:
        """The ID token's claims, once its signature and claims check out."""
        meta = self.metadata()
        advertised = meta.get("id_token_signing_alg_values_supported") or ["RS256"]
        algorithms = [a for a in advertised if a in SIGNING_ALGORITHMS]
        if not algorithms:
            raise OAuthFailure("oauth_id_token", f"{self.config.id}: no acceptable signing algorithm in {advertised}")
        try:
            try:
                token = jwt.decode(id_token, self.key_set(), algorithms=algorithms)
            except InvalidKeyIdError:
                # The provider may have rotated its keys since we cached them.
                token = jwt.decode(id_token, self.key_set(refresh=True), algorithms=algorithms)
        except (JoseError, ValueError) as exc:
            raise OAuthFailure("oauth_id_token", f"{self.config.id}: ID token rejected: {exc!r}") from exc
        claims = dict(token.claims)
        options = {
            "iss": {"essential": True, "values": self._issuers(meta, claims)},
            "aud": {"essential": True, "value": self.config.client_id},
            "sub": {"essential": True},
            "exp": {"essential": True},
            "iat": {"essential": True},
        }
        params = {"nonce": nonce, "client_id": self.config.client_id}
        if access_token:
            params["access_token"] = access_token
        try:
            CodeIDToken(claims, token.header, options, params).validate(leeway=CLOCK_LEEWAY_S)
        except JoseError as exc:
            raise OAuthFailure("oauth_id_token", f"{self.config.id}: ID token claims rejected: {exc!r}") from exc
        return claims

    def _issuers(self, meta: dict[str, Any], claims: dict[str, Any]) -> list[str]:
        """The ``iss`` values acceptable for this token.

        Microsoft's multi-tenant endpoints (``common``, ``organizations``) publish the issuer as a
        template, ``https://login.microsoftonline.com/{tenantid}/v2.0``: the token's issuer must be that
        template filled with the token's own ``tid``, and the tenant must be one the configuration
        admits (``organizations``: no personal accounts; ``consumers``: only those). Google's tokens
        carry ``https://accounts.google.com`` or, as Google documents, ``accounts.google.com``.
        """
        issuer = str(meta["issuer"])
        if "{tenantid}" in issuer:
            tid = claims.get("tid")
            if not isinstance(tid, str) or not tid or "/" in tid:
                raise OAuthFailure("oauth_id_token", f"{self.config.id}: multi-tenant ID token without a tid claim")
            tenant = self.config.microsoft_tenant
            if tenant == "organizations" and tid == MICROSOFT_CONSUMERS_TENANT_ID:
                raise OAuthFailure("oauth_id_token", f"{self.config.id}: personal account on an organizations app")
            if tenant == "consumers" and tid != MICROSOFT_CONSUMERS_TENANT_ID:
                raise OAuthFailure("oauth_id_token", f"{self.config.id}: work account on a consumers app")
            return [issuer.replace("{tenantid}", tid)]
        if issuer == "https://accounts.google.com":
            return [issuer, "accounts.google.com"]
        return [issuer]

    def identity(self, claims: dict[str, Any]) -> VerifiedIdentity:
        """Subject, email and whether the provider vouches for the email.

        Google: ``email_verified``. Microsoft: the ``email`` claim is verified when the account is a
        personal Microsoft account (its email is the account's own, confirmed by Microsoft), when the
        token says ``xms_edov`` (the email's domain is verified by the tenant's owner: an optional claim
        to add in the app registration for work and school accounts), or ``email_verified``. Microsoft
        advises against trusting other work-account emails (any user without a mailbox can set their
        ``mail`` attribute), and ``preferred_username``/``upn`` are never used as an email.
        """
        email = claims.get("email")
        if not isinstance(email, str) or "@" not in email:
            raise OAuthFailure("oauth_email", f"{self.config.id}: the ID token carries no email")
        if self.config.id == MICROSOFT:
            verified = (
                _truthy(claims.get("email_verified"))
                or _truthy(claims.get("xms_edov"))
                or claims.get("tid") == MICROSOFT_CONSUMERS_TENANT_ID
            )
        else:
            verified = _truthy(claims.get("email_verified"))
        name = claims.get("name")
        return VerifiedIdentity(
            provider=self.config.id,
            subject=str(claims["sub"]),
            email=email,
            email_verified=verified,
            name=name.strip()[:200] if isinstance(name, str) else "",
        )

    def sign_in(self, *, code: str, redirect_uri: str, code_verifier: str, nonce: str) -> VerifiedIdentity:
        """Code → tokens → verified ID token → identity."""
        token = self.exchange_code(code=code, redirect_uri=redirect_uri, code_verifier=code_verifier)
        claims = self.verify_id_token(str(token["id_token"]), nonce=nonce, access_token=token.get("access_token"))
        return self.identity(claims)


class OidcClients:
    """The enabled providers, built once per process (``app.state.oidc``)."""

    def __init__(self, settings: Settings) -> None:
        self._clients = {
            pid: OidcClient(cfg, timeout_s=settings.oauth_http_timeout_s)
            for pid, cfg in configured_providers(settings).items()
        }

    def enabled(self) -> list[ProviderConfig]:
        return [c.config for c in self._clients.values()]

    def get(self, provider: str) -> OidcClient | None:
        return self._clients.get(provider)
