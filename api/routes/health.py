from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text
from sqlalchemy.engine import Engine

from api.gateway import metrics as gateway_metrics

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)

READY_TIMEOUT_S = 2.0


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up. Says nothing about its dependencies (see /ready)."""
    return {"status": "ok"}


def _ping_db(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics() -> Response:
    """Prometheus metrics of this instance (every worker's, aggregated)."""
    return Response(gateway_metrics.render(), media_type=gateway_metrics.CONTENT_TYPE)


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """Whether this instance can serve: the database and (when configured) Redis answer. 503 names the failure."""
    checks: dict[str, Any] = {}
    try:
        await asyncio.wait_for(asyncio.to_thread(_ping_db, request.app.state.engine), READY_TIMEOUT_S)
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; report it
        checks["database"] = f"error: {type(exc).__name__}: {exc}".splitlines()[0][:300]
    redis = request.app.state.redis
    if redis is None:
        checks["redis"] = "not configured (in-process mode)"
    else:
        try:
            await asyncio.wait_for(redis.ping(), READY_TIMEOUT_S)
            checks["redis"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["redis"] = f"error: {type(exc).__name__}: {exc}".splitlines()[0][:300]
    failed = [k for k, v in checks.items() if v.startswith("error")]
    if failed:
        log.warning("not ready", extra={"failed": failed})
        return JSONResponse({"status": "unavailable", "failed": failed, "checks": checks}, status_code=503)
    return JSONResponse({"status": "ok", "checks": checks})
