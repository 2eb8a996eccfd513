"""Sign-in with Google / Microsoft (OpenID Connect, authorization code + PKCE).

``GET /auth/providers`` lists the enabled providers; ``/auth/oauth/{provider}/start`` sends the browser
to the provider; the provider sends it back to ``/auth/oauth/{provider}/callback``, which ends at the
dashboard: ``{dashboard}/auth/callback#token=<session token>&next=<path>`` on success,
``{dashboard}/login?error=<code>`` on failure (details in the server log, never in the browser).
"""

from __future__ import annotations

import logging
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse
from sqlalchemy.exc import SQLAlchemyError

from api.deps import SessionDep, SettingsDep
from cic.errors import CICError, NotFound
from cic.models.identity import OAuthProviderPublic
from cic.oidc import OAuthFailure, OidcClient, OidcClients
from cic.services import oauth, users
from cic.settings import Settings

log = logging.getLogger("cic.api.oauth")

router = APIRouter(prefix="/auth", tags=["auth"])


def _clients(request: Request) -> OidcClients:
    clients: OidcClients = request.app.state.oidc
    return clients


def _client(request: Request, provider: str) -> OidcClient:
    client = _clients(request).get(provider)
    if client is None:
        raise NotFound(
            f"Sign-in with '{provider}' is not available here.", param="provider", code="oauth_provider_not_found"
        )
    return client


def redirect_uri(settings: Settings, provider: str) -> str:
    """The address to register with the provider (its "authorized redirect URI")."""
    return f"{settings.public_base_url}/api/v1/auth/oauth/{provider}/callback"


def _to_login(settings: Settings, code: str) -> RedirectResponse:
    return RedirectResponse(f"{settings.dashboard_url}/login?{urlencode({'error': code})}", status_code=302)


def _failed(settings: Settings, provider: str, failure: OAuthFailure) -> RedirectResponse:
    log.warning("oauth sign-in failed: %s", failure.detail, extra={"provider": provider, "error_code": failure.code})
    return _to_login(settings, failure.code)


@router.get("/providers", response_model=list[OAuthProviderPublic])
def providers(request: Request) -> list[OAuthProviderPublic]:
    """The sign-in providers enabled on this platform (public)."""
    return [OAuthProviderPublic(id=c.id, name=c.name) for c in _clients(request).enabled()]


@router.get("/oauth/{provider}/start", status_code=302, response_class=RedirectResponse)
def start(
    provider: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    next_: Annotated[str | None, Query(alias="next", description="dashboard path to return to")] = None,
) -> RedirectResponse:
    """Send the browser to the provider's sign-in page. 404 for a provider that is not enabled,
    422 for a ``next`` that is not a dashboard path."""
    client = _client(request, provider)
    next_path = oauth.safe_next(next_)
    try:
        pending = oauth.begin(
            session,
            provider=provider,
            next_path=next_path,
            pepper=settings.key_pepper.get_secret_value(),
            ttl_s=settings.oauth_state_ttl_s,
        )
        url = client.authorization_url(
            redirect_uri=redirect_uri(settings, provider),
            state=pending.state,
            nonce=pending.nonce,
            code_verifier=pending.code_verifier,
        )
    except OAuthFailure as failure:
        session.rollback()
        return _failed(settings, provider, failure)
    session.commit()
    return RedirectResponse(url, status_code=302)


@router.get("/oauth/{provider}/callback", status_code=302, response_class=RedirectResponse)
def callback(
    provider: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    code: str | None = None,
    state: str | None = None,
    error: str | None = None,
    error_description: str | None = None,
) -> RedirectResponse:
    """Where the provider sends the browser back. Always answers with a redirect to the dashboard."""
    client = _client(request, provider)
    pepper = settings.key_pepper.get_secret_value()
    try:
        if error:
            # The person cancelled, or the provider refused; spend the state all the same.
            if state:
                try:
                    oauth.consume_state(session, provider=provider, state=state, pepper=pepper)
                    session.commit()
                except OAuthFailure:
                    session.rollback()
            raise OAuthFailure("oauth_denied", f"provider answered {error}: {(error_description or '')[:200]}")
        pending = oauth.consume_state(session, provider=provider, state=state or "", pepper=pepper)
        # Spent now, whatever happens next: a replay of this callback finds it used.
        session.commit()
        if not code:
            raise OAuthFailure("oauth_token", "callback without a code")
        identity = client.sign_in(
            code=code,
            redirect_uri=redirect_uri(settings, provider),
            code_verifier=pending.code_verifier,
            nonce=pending.nonce,
        )
        ip = request.client.host if request.client else ""
        user, _ = oauth.sign_in(session, identity, ip=ip)
        token, _row = users.start_session(
            session,
            user,
            pepper=pepper,
            ttl_hours=settings.session_ttl_hours,
            user_agent=request.headers.get("user-agent", ""),
            ip=ip,
        )
        session.commit()
    except OAuthFailure as failure:
        session.rollback()
        return _failed(settings, provider, failure)
    except (CICError, SQLAlchemyError):
        session.rollback()
        log.exception("oauth sign-in failed on our side", extra={"provider": provider})
        return _to_login(settings, "server_error")
    fragment = urlencode({"token": token, "next": pending.next_path})
    return RedirectResponse(f"{settings.dashboard_url}/auth/callback#{fragment}", status_code=302)
