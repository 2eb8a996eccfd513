"""Builds the API application. Serving objects are created once here and live on ``app.state``.

The process serves two things: the management API (FastAPI: ``/api/v1``, health, docs) and the
OpenAI-compatible data plane (``/v1/*`` and ``/{org}/{env}/v1/*``), a plain ASGI app that requests
reach without passing through FastAPI's routing, dependencies or middleware.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis
import redis.asyncio as aioredis
from fastapi import APIRouter, FastAPI

import cic
from api import errors, sweeper
from api.gateway.app import Receive, Scope, Send
from api.gateway.service import DataPlane
from api.routes import (
    admin,
    auth,
    billing,
    catalog,
    docs,
    environments,
    health,
    invitations,
    keys,
    members,
    nodes_internal,
    oauth,
    orgs,
    usage,
    webhooks,
)
from cic import events, logs, nodeauth
from cic.db import make_engine
from cic.oidc import OidcClients
from cic.services.orgs import RESERVED_SLUGS
from cic.settings import Settings, get_settings

log = logging.getLogger("cic.api")


def management_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    for module in (auth, oauth, orgs, members, invitations, environments, keys, catalog, usage, billing, admin):
        router.include_router(module.router)
    return router


class PlatformApp:
    """The ASGI entry point: the data plane's paths go straight to the gateway, the rest to FastAPI."""

    def __init__(self, api: FastAPI) -> None:
        self.api = api

    @property
    def state(self) -> Any:
        return self.api.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith("/v1/"):
                await self.api.state.data_plane.gateway(scope, receive, send, path[4:], None)
                return
            parts = path.split("/", 4)
            if len(parts) == 5 and parts[3] == "v1" and parts[1] not in RESERVED_SLUGS:
                await self.api.state.data_plane.gateway(scope, receive, send, parts[4], (parts[1], parts[2]))
                return
        await self.api(scope, receive, send)


def create_app(settings: Settings | None = None) -> PlatformApp:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.engine = make_engine(settings)
        app.state.redis = (
            aioredis.Redis(
                # A burst waits for a pooled connection rather than failing with "Too many connections".
                connection_pool=aioredis.BlockingConnectionPool.from_url(
                    settings.redis_url, max_connections=settings.redis_max_connections, timeout=5
                )
            )
            if settings.redis_url
            else None
        )
        sync_redis = redis.Redis.from_url(settings.redis_url) if settings.redis_url else None
        data_plane = DataPlane(settings, app.state.engine, app.state.redis)
        app.state.data_plane = data_plane
        # After a management change commits, caches everywhere drop what it touched.
        app.state.publisher = (
            events.redis_publisher(sync_redis) if sync_redis is not None else data_plane.apply_invalidation
        )
        if app.state.redis is None:
            log.warning(
                "CIC_REDIS_URL is not set: limits, caches and locks are in-process. "
                "Run a single API process, or set CIC_REDIS_URL for several workers or instances."
            )
        app.state.nonces = nodeauth.RedisNonces(sync_redis) if sync_redis is not None else nodeauth.MemoryNonces()
        # Sign-in providers: their discovery documents and keys, fetched on first use and cached.
        app.state.oidc = OidcClients(settings)
        await data_plane.start()
        sweep = asyncio.create_task(sweeper.run(app.state.engine, settings), name="health sweep")
        log.info(
            "api started",
            extra={
                "version": cic.__version__,
                "env": settings.env,
                "pid": os.getpid(),
                "database": settings.database_url.split(":", 1)[0],
            },
        )
        try:
            yield
        finally:
            sweep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweep
            await data_plane.stop()
            if app.state.redis is not None:
                await app.state.redis.aclose()
            if sync_redis is not None:
                sync_redis.close()
            app.state.engine.dispose()

    api = FastAPI(
        title="CrossLogic Inference Cloud",
        version=cic.__version__,
        summary="Management API of the CrossLogic Inference Cloud control plane",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    errors.install(api)
    api.include_router(health.router)
    api.include_router(nodes_internal.router)
    api.include_router(webhooks.router)
    api.include_router(management_router())
    docs.install(api)
    api.add_middleware(RequestIdMiddleware)
    return PlatformApp(api)


class RequestIdMiddleware:
    """``x-request-id`` on every management response (the data plane sets its own), and in the logs."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = f"req_{os.urandom(12).hex()}"
        for k, v in scope["headers"]:
            if k == b"x-request-id" and v:
                rid = v.decode("latin-1")[:64]
                break
        token = logs.request_id_var.set(rid)

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logs.request_id_var.reset(token)


def app_factory() -> PlatformApp:
    """Entry point for ``uvicorn --factory api.app:app_factory`` (what ``cic api`` runs)."""
    settings = get_settings()
    logs.configure(settings.log_level, json_output=settings.log_json)
    return create_app(settings)
