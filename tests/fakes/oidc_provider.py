"""A local OpenID provider for tests, built with authlib's server side, served over HTTP on loopback.

It speaks what Google and Microsoft speak to a relying party: a discovery document
(``/.well-known/openid-configuration``), a JWKS (``/jwks``), an authorization endpoint (``/authorize``:
authorization code grant, PKCE required, OpenID Connect ``nonce``), a token endpoint (``/token``:
``client_secret_basic`` or ``client_secret_post``; RS256-signed ID tokens) and ``/userinfo``. There is
no login page: ``/authorize`` "signs in" ``provider.user`` at once and redirects back, so a test (or a
Playwright browser) just follows the redirects.

Usage (the ``oidc_provider`` fixture yields one, started)::

    provider.discovery_url          # point CIC_OAUTH_GOOGLE_DISCOVERY_URL (or ..._MICROSOFT_...) at it
    provider.client_id, provider.client_secret
    provider.user = OidcUser(sub="g-1", email="ann@example.com", email_verified=True, name="Ann")
    provider.redirect_uris = [...]  # exact redirect URIs to accept (None: any http(s) URI)
    provider.faults.expired = True  # misbehave: see ``Faults``
    provider.rotate_keys()          # sign with a new key from now on (the JWKS publishes both)
    provider.authorize_requests     # query parameters of every /authorize call, in order
    provider.token_requests         # form parameters of every /token call
    provider.discovery_requests, provider.jwks_requests, provider.userinfo_requests   # counters

``OidcProvider(multi_tenant=True)`` behaves like Microsoft's ``common`` endpoint: the discovery
document's issuer is ``{base}/{tenantid}/v2.0`` and each ID token's ``iss`` names the user's ``tid``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from authlib.common.urls import add_params_to_uri  # type: ignore[import-untyped]
from authlib.consts import default_json_headers  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749 import (  # type: ignore[import-untyped]
    AuthorizationServer,
    ClientMixin,
    OAuth2Error,
    OAuth2Payload,
    OAuth2Request,
)
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749.resource_protector import ResourceProtector  # type: ignore[import-untyped]
from authlib.oauth2.rfc6750 import BearerTokenGenerator, BearerTokenValidator  # type: ignore[import-untyped]
from authlib.oauth2.rfc7636 import CodeChallenge  # type: ignore[import-untyped]
from authlib.oidc.core import (  # type: ignore[import-untyped]
    AuthorizationCodeMixin,
    OpenIDCode,
    UserInfo,
    UserInfoEndpoint,
)
from authlib.oidc.discovery import OpenIDProviderMetadata  # type: ignore[import-untyped]
from joserfc.jwk import KeySet, RSAKey

from tests.servers import LoopThread, free_port

MICROSOFT_CONSUMERS_TID = "9188040d-6c67-4c5b-b112-36a304b66dad"


@dataclass
class OidcUser:
    """Who ``/authorize`` signs in. ``email=None`` leaves the claim out; ``email_verified=None`` too.
    ``tid``: the Microsoft tenant (multi-tenant mode). ``extra``: more ID-token claims (e.g. ``xms_edov``)."""

    sub: str = "subject-1"
    email: str | None = "ann@example.com"
    email_verified: bool | None = True
    name: str = "Ann Example"
    tid: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Faults:
    """Ways to misbehave, each off by default; set any number at once."""

    deny: bool = False  # /authorize answers error=access_denied
    token_error: bool = False  # /token answers 400 invalid_grant
    wrong_nonce: bool = False  # the ID token's nonce is not the one asked for
    wrong_audience: bool = False  # aud is another client
    wrong_issuer: bool = False  # iss is another issuer
    expired: bool = False  # exp an hour ago
    unknown_kid: bool = False  # signed with a key the JWKS never publishes
    bad_signature: bool = False  # signed with another key under a published kid


@dataclass
class _Client(ClientMixin):
    client_id: str
    client_secret: str
    provider: OidcProvider
    client_metadata: dict[str, Any] = field(default_factory=dict)

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        uris = self.provider.redirect_uris
        return uris[0] if uris else None

    def get_allowed_scope(self, scope: str) -> str:
        allowed = {"openid", "email", "profile"}
        return " ".join(s for s in (scope or "").split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        uris = self.provider.redirect_uris
        if uris is None:
            return urlsplit(redirect_uri).scheme in ("http", "https")
        return redirect_uri in uris

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class _Code(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: OidcUser
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int
    expires_at: float

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time


@dataclass
class _Token:
    access_token: str
    scope: str
    user: OidcUser
    client: _Client
    expires_at: float

    def get_scope(self) -> str:
        return self.scope

    def get_user(self) -> OidcUser:
        return self.user

    def get_client(self) -> _Client:
        return self.client

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at

    def is_revoked(self) -> bool:
        return False


class _Payload(OAuth2Payload):
    def __init__(self, query: dict[str, list[str]], form: dict[str, list[str]]) -> None:
        self._datalist = {k: [*query.get(k, []), *form.get(k, [])] for k in {*query, *form}}
        self._data = {k: v[-1] for k, v in self._datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> dict[str, list[str]]:
        return self._datalist


class _Request(OAuth2Request):
    """An aiohttp request, read in full, in authlib's terms."""

    def __init__(self, method: str, uri: str, headers: Any, query: dict[str, list[str]], form: dict[str, list[str]]):
        super().__init__(method, uri, headers=headers)
        self.payload = _Payload(query, form)
        self._args = {k: v[-1] for k, v in query.items()}
        self._form = {k: v[-1] for k, v in form.items()}

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class _CodeGrant(AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
    provider: OidcProvider

    def save_authorization_code(self, code: str, request: _Request) -> None:
        data = request.payload.data
        self.provider._codes[code] = _Code(
            code=code,
            client_id=request.client.client_id,
            redirect_uri=data.get("redirect_uri", ""),
            scope=request.client.get_allowed_scope(data.get("scope", "")),
            user=request.user,
            nonce=data.get("nonce"),
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
            auth_time=int(time.time()),
            expires_at=time.time() + 300,
        )

    def query_authorization_code(self, code: str, client: _Client) -> _Code | None:
        item = self.provider._codes.get(code)
        if item is None or item.client_id != client.client_id or item.expires_at < time.time():
            return None
        return item

    def delete_authorization_code(self, authorization_code: _Code) -> None:
        self.provider._codes.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code: _Code) -> OidcUser:
        return authorization_code.user


class _OpenIDCode(OpenIDCode):
    """ID tokens, with the provider's faults applied."""

    def __init__(self, provider: OidcProvider) -> None:
        super().__init__(require_nonce=True)
        self.provider = provider

    def exists_nonce(self, nonce: str, request: _Request) -> bool:
        return any(c.nonce == nonce for c in self.provider._codes.values())

    def get_client_algorithm(self, client: _Client) -> str:
        return "RS256"

    def resolve_client_private_key(self, client: _Client) -> RSAKey:
        return self.provider._key_for_signing()

    def get_encode_header(self, client: _Client) -> dict[str, str]:
        key = self.provider._key_for_signing()
        return {"alg": "RS256", "kid": str(key.kid)}

    def get_client_claims(self, client: _Client) -> dict[str, Any]:
        return {}

    def get_compatible_claims(self, request: _Request) -> dict[str, Any]:
        p = self.provider
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": p.token_issuer(request.user),
            "aud": request.client.client_id,
            "iat": now,
            "exp": now + 3600,
            "auth_time": now,
        }
        if p.faults.wrong_audience:
            claims["aud"] = "someone-else"
        if p.faults.wrong_issuer:
            claims["iss"] = "https://evil.example"
        if p.faults.expired:
            claims["iat"], claims["exp"] = now - 7200, now - 3600
        return claims

    def get_authorization_code_claims(self, authorization_code: _Code) -> dict[str, Any]:
        claims: dict[str, Any] = super().get_authorization_code_claims(authorization_code)
        if self.provider.faults.wrong_nonce:
            claims["nonce"] = "not-the-nonce-you-sent"
        return claims

    def generate_user_info(self, user: OidcUser, scope: str) -> UserInfo:
        return self.provider.user_info(user)


class _UserInfo(UserInfoEndpoint):
    def __init__(self, provider: OidcProvider, protector: ResourceProtector) -> None:
        super().__init__(resource_protector=protector)
        self.provider = provider

    def __call__(self, request: _Request) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        token = self.resource_protector.validate_request(["openid"], request)
        return 200, dict(self.provider.user_info(token.get_user())), default_json_headers


class _Bearer(BearerTokenValidator):
    def __init__(self, provider: OidcProvider) -> None:
        super().__init__()
        self.provider = provider

    def authenticate_token(self, token_string: str) -> _Token | None:
        return self.provider._tokens.get(token_string)


class _Server(AuthorizationServer):
    def __init__(self, provider: OidcProvider) -> None:
        super().__init__(scopes_supported=["openid", "email", "profile"])
        self.provider = provider

    def query_client(self, client_id: str) -> _Client | None:
        return self.provider.client if client_id == self.provider.client.client_id else None

    def save_token(self, token: dict[str, Any], request: _Request) -> None:
        self.provider._tokens[token["access_token"]] = _Token(
            access_token=token["access_token"],
            scope=token.get("scope", ""),
            user=request.user,
            client=request.client,
            expires_at=time.time() + int(token.get("expires_in", 3600)),
        )

    def create_oauth2_request(self, request: _Request) -> _Request:
        return request

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> web.Response:
        hdrs = {k: v for k, v in headers if k.lower() != "content-type"}
        if isinstance(body, dict):
            return web.json_response(body, status=status, headers=hdrs)
        return web.Response(status=status, text=str(body or ""), headers=hdrs)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None


class OidcProvider:
    """See the module docstring. Start with ``with provider.running():`` (or the ``oidc_provider``
    fixture)."""

    def __init__(
        self,
        *,
        client_id: str = "cic-test-client",
        client_secret: str | None = None,
        multi_tenant: bool = False,
    ) -> None:
        self.multi_tenant = multi_tenant
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.client = _Client(client_id, client_secret or secrets.token_urlsafe(24), self)
        self.user = OidcUser(tid=MICROSOFT_CONSUMERS_TID if multi_tenant else None)
        self.faults = Faults()
        self.redirect_uris: list[str] | None = None
        self.require_pkce = True
        self.authorize_requests: list[dict[str, str]] = []
        self.token_requests: list[dict[str, str]] = []
        self.userinfo_requests = 0
        self.discovery_requests = 0
        self.jwks_requests = 0
        self._codes: dict[str, _Code] = {}
        self._tokens: dict[str, _Token] = {}
        self._published: list[RSAKey] = []
        self._signing = self._new_key()
        self._published.append(self._signing)
        self._stray = self._new_key()  # never published
        self._server = _Server(self)
        self._server.register_token_generator("default", BearerTokenGenerator(lambda **_: secrets.token_urlsafe(32)))
        grant = type("CodeGrant", (_CodeGrant,), {"provider": self})
        self._server.register_grant(grant, [CodeChallenge(required=True), _OpenIDCode(self)])
        protector = ResourceProtector()
        protector.register_token_validator(_Bearer(self))
        self._server.register_endpoint(_UserInfo(self, protector))
        self._loop: LoopThread | None = None
        self._runner: web.AppRunner | None = None

    # --- what a relying party configures -------------------------------------------------------

    @property
    def client_id(self) -> str:
        return str(self.client.client_id)

    @property
    def client_secret(self) -> str:
        return str(self.client.client_secret)

    @property
    def issuer(self) -> str:
        """The discovery document's issuer (a ``{tenantid}`` template in multi-tenant mode)."""
        return f"{self.base_url}/{{tenantid}}/v2.0" if self.multi_tenant else self.base_url

    @property
    def discovery_url(self) -> str:
        return f"{self.base_url}/.well-known/openid-configuration"

    def token_issuer(self, user: OidcUser) -> str:
        return self.issuer.replace("{tenantid}", user.tid or "") if self.multi_tenant else self.issuer

    def user_info(self, user: OidcUser) -> UserInfo:
        info: dict[str, Any] = {"sub": user.sub, "name": user.name}
        if user.email is not None:
            info["email"] = user.email
        if user.email_verified is not None:
            info["email_verified"] = user.email_verified
        if self.multi_tenant and user.tid:
            info["tid"] = user.tid
        info.update(user.extra)
        return UserInfo(info)

    def metadata(self) -> dict[str, Any]:
        meta = OpenIDProviderMetadata(
            issuer=self.issuer,
            authorization_endpoint=f"{self.base_url}/authorize",
            token_endpoint=f"{self.base_url}/token",
            userinfo_endpoint=f"{self.base_url}/userinfo",
            jwks_uri=f"{self.base_url}/jwks",
            response_types_supported=["code"],
            subject_types_supported=["public"] if not self.multi_tenant else ["pairwise"],
            id_token_signing_alg_values_supported=["RS256"],
            scopes_supported=["openid", "email", "profile"],
            token_endpoint_auth_methods_supported=["client_secret_basic", "client_secret_post"],
            claims_supported=["sub", "iss", "aud", "exp", "iat", "nonce", "email", "email_verified", "name"],
            code_challenge_methods_supported=["S256"],
            grant_types_supported=["authorization_code"],
        )
        meta.validate()
        return dict(meta)

    # --- keys --------------------------------------------------------------------------------------

    @staticmethod
    def _new_key() -> RSAKey:
        return RSAKey.generate_key(2048, parameters={"kid": secrets.token_hex(8), "use": "sig", "alg": "RS256"})

    def rotate_keys(self) -> None:
        """Sign with a new key from now on; the JWKS publishes the old and the new one."""
        self._signing = self._new_key()
        self._published.append(self._signing)

    def _key_for_signing(self) -> RSAKey:
        if self.faults.unknown_kid:
            return self._stray
        if self.faults.bad_signature:
            # Another private key under the published kid: the signature cannot verify.
            return RSAKey.import_key({**self._stray.as_dict(private=True), "kid": str(self._signing.kid)})
        return self._signing

    def jwks(self) -> dict[str, Any]:
        return dict(KeySet(list(self._published)).as_dict(private=False))

    # --- HTTP ----------------------------------------------------------------------------------------

    @staticmethod
    def _multi(items: Any) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for k, v in items:
            out.setdefault(k, []).append(v)
        return out

    async def _request(self, request: web.Request) -> _Request:
        form = self._multi((await request.post()).items()) if request.method == "POST" else {}
        return _Request(request.method, str(request.url), request.headers, self._multi(request.query.items()), form)

    async def _discovery(self, _: web.Request) -> web.Response:
        self.discovery_requests += 1
        return web.json_response(self.metadata())

    async def _jwks(self, _: web.Request) -> web.Response:
        self.jwks_requests += 1
        return web.json_response(self.jwks())

    async def _authorize(self, request: web.Request) -> web.Response:
        req = await self._request(request)
        self.authorize_requests.append(dict(req.args))
        try:
            grant = self._server.get_consent_grant(req, end_user=self.user)
        except OAuth2Error as error:
            # No redirect to an unverified client or redirect URI: show the error here.
            return web.json_response({"error": error.error, "error_description": error.description}, status=400)
        if self.require_pkce and req.args.get("code_challenge_method") != "S256":
            uri = add_params_to_uri(
                req.args["redirect_uri"],
                [
                    ("error", "invalid_request"),
                    ("error_description", "PKCE S256 required"),
                    ("state", req.args.get("state", "")),
                ],
            )
            return web.Response(status=302, headers={"Location": uri})
        user = None if self.faults.deny else self.user
        response: web.Response = self._server.create_authorization_response(req, grant_user=user, grant=grant)
        return response

    async def _token(self, request: web.Request) -> web.Response:
        req = await self._request(request)
        self.token_requests.append(dict(req.form))
        if self.faults.token_error:
            return web.json_response({"error": "invalid_grant", "error_description": "the code is no good"}, status=400)
        response: web.Response = self._server.create_token_response(req)
        return response

    async def _userinfo(self, request: web.Request) -> web.Response:
        self.userinfo_requests += 1
        response: web.Response = self._server.create_endpoint_response("userinfo", await self._request(request))
        return response

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        app.router.add_route("*", "/userinfo", self._userinfo)
        return app

    @contextmanager
    def running(self) -> Iterator[OidcProvider]:
        """Serve on ``self.base_url`` (its own event-loop thread) until the block ends."""
        loop = LoopThread()
        runner = web.AppRunner(self.app())

        async def start() -> None:
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()

        try:
            loop.run(start())
            yield self
        finally:
            loop.run(runner.cleanup())
            loop.close()
