"""The dashboard's client of the management REST API.

Every page talks to ``/api/v1`` exactly like any other client would: over HTTP, with the user's session
token as ``Authorization: Bearer clss_…``. The dashboard never opens the database. Where the API lives
comes from ``CIC_DASHBOARD_API_URL`` (``cic up``: this very process on loopback).
"""

from __future__ import annotations

from typing import Any

import httpx

from cic.settings import get_settings


class ApiError(Exception):
    """An error answer of the API (its one error shape), or the API being out of reach."""

    def __init__(self, status: int, message: str, code: str = "", param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param

    @property
    def unauthenticated(self) -> bool:
        return self.status == 401


def _error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict) and err.get("message"):
        return ApiError(response.status_code, str(err["message"]), str(err.get("code") or ""), err.get("param"))
    if response.status_code == 404:
        return ApiError(404, "Not found.", "not_found")
    return ApiError(response.status_code, f"The server answered {response.status_code}. Try again.", "server_error")


async def call(
    method: str,
    path: str,
    *,
    token: str | None = None,
    json: Any = None,
    params: dict[str, Any] | list[tuple[str, Any]] | None = None,
) -> Any:
    """One API call: the decoded JSON body (``None`` for 204), or :class:`ApiError`."""
    settings = get_settings()
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        async with httpx.AsyncClient(
            base_url=settings.dashboard_api_url, timeout=settings.dashboard_api_timeout_s
        ) as client:
            response = await client.request(method, f"/api/v1{path}", json=json, params=params, headers=headers)
    except httpx.TimeoutException as exc:
        raise ApiError(504, "The API took too long to answer. Try again in a moment.", "api_timeout") from exc
    except httpx.TransportError as exc:
        raise ApiError(503, "The API cannot be reached right now. Try again in a moment.", "api_unreachable") from exc
    if response.status_code == 204:
        return None
    if response.is_success:
        return response.json()
    raise _error(response)
