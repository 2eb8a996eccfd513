"""One port for the dashboard and the API (the all-in-one run, ``cic up``).

Reflex's ``api_transformer`` receives Reflex's own ASGI app (its event websocket and the compiled
frontend) and returns what serves the port: the platform's paths go to the platform app (management
API, data plane, node API, health, docs), everything else to Reflex. Reflex runs the lifespan at the
top of its stack, so the platform app's own lifespan (engine, Redis, data plane, health sweep) is
entered through a Reflex lifespan task.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from api.app import PlatformApp
from cic.services.orgs import RESERVED_SLUGS

Scope = dict[str, Any]
ASGIApp = Callable[..., Any]

PLATFORM_PREFIXES = ("/api/", "/v1/", "/internal/", "/docs", "/docs-assets/")
PLATFORM_PATHS = frozenset({"/health", "/ready", "/metrics", "/openapi.json"})


def is_platform_path(path: str) -> bool:
    """The API's paths; the dashboard has everything else."""
    if path in PLATFORM_PATHS or path.startswith(PLATFORM_PREFIXES):
        return True
    # An environment's own base URL: /{org}/{env}/v1/...
    parts = path.split("/", 4)
    return len(parts) == 5 and parts[3] == "v1" and parts[1] not in RESERVED_SLUGS


class OnePort:
    """The ASGI app in front: the platform's paths to the platform app, the rest to Reflex."""

    def __init__(self, platform: PlatformApp, dashboard: ASGIApp) -> None:
        self.platform = platform
        self.dashboard = dashboard

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and is_platform_path(scope["path"]):
            await self.platform(scope, receive, send)
        else:
            await self.dashboard(scope, receive, send)


def transformer(platform: PlatformApp) -> Callable[[ASGIApp], ASGIApp]:
    def put_platform_in_front(dashboard: ASGIApp) -> ASGIApp:
        return OnePort(platform, dashboard)

    return put_platform_in_front


def platform_lifespan(platform: PlatformApp) -> Callable[[], AbstractAsyncContextManager[None]]:
    """A Reflex lifespan task that runs the platform app's start-up and shutdown."""

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        async with platform.api.router.lifespan_context(platform.api):
            yield

    return lifespan
