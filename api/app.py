"""Builds the API application. Serving objects are created once here and live on ``app.state``."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import APIRouter, FastAPI, Request, Response

import cic
from api import errors
from api.routes import auth, catalog, docs, environments, health, keys, members, orgs, usage
from cic import logs
from cic.db import make_engine
from cic.settings import Settings, get_settings

log = logging.getLogger("cic.api")


def management_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    for module in (auth, orgs, members, environments, keys, catalog, usage):
        router.include_router(module.router)
    return router


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.engine = make_engine(settings)
        app.state.redis = aioredis.from_url(settings.redis_url) if settings.redis_url else None
        if app.state.redis is None:
            log.warning(
                "CIC_REDIS_URL is not set: limits, caches and locks are in-process. "
                "Run a single API process, or set CIC_REDIS_URL for several workers or instances."
            )
        log.info(
            "api started",
            extra={"version": cic.__version__, "env": settings.env, "database": settings.database_url.split(":", 1)[0]},
        )
        try:
            yield
        finally:
            if app.state.redis is not None:
                await app.state.redis.aclose()
            app.state.engine.dispose()

    app = FastAPI(
        title="CrossLogic Inference Cloud",
        version=cic.__version__,
        summary="Management API of the CrossLogic Inference Cloud control plane",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    errors.install(app)
    app.middleware("http")(_request_id)
    app.include_router(health.router)
    app.include_router(management_router())
    docs.install(app)
    return app


async def _request_id(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    rid = request.headers.get("x-request-id") or f"req_{uuid.uuid4().hex}"
    rid = rid[:64]
    token = logs.request_id_var.set(rid)
    start = time.perf_counter()
    try:
        response = await call_next(request)
    finally:
        logs.request_id_var.reset(token)
    response.headers["x-request-id"] = rid
    log.debug(
        "request",
        extra={
            "method": request.method,
            "path": request.url.path,
            "status": response.status_code,
            "ms": round((time.perf_counter() - start) * 1e3, 2),
            "request_id": rid,
        },
    )
    return response


def app_factory() -> FastAPI:
    """Entry point for ``uvicorn --factory api.app:app_factory`` (what ``cic api`` runs)."""
    settings = get_settings()
    logs.configure(settings.log_level, json_output=settings.log_json)
    return create_app(settings)
