"""One error shape for every HTTP error: ``{"error": {"message", "type", "param", "code"}}``.

It is OpenAI's shape, so the ``openai`` SDK and our own dashboard read errors the same way.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from cic.errors import CICError

log = logging.getLogger(__name__)

_HTTP_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(message: str, type_: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    type_: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(message, type_, param=param, code=code), status_code=status, headers=headers)


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts)


async def _cic_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CICError)
    return error_response(exc.status_code, exc.message, exc.error_type, param=exc.param, code=exc.code)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = next(e for e in errors if e.get("type") == "json_invalid")
        msg = (detail.get("ctx") or {}).get("error", "invalid JSON")
        return error_response(
            400,
            f"We could not parse the JSON body of your request ({msg}).",
            "invalid_request_error",
            code="invalid_json",
        )
    parts = []
    for e in errors[:5]:
        where = _loc(e.get("loc", ()))
        parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
    first = _loc(errors[0].get("loc", ())) if errors else None
    body = error_body(
        "Invalid request: " + "; ".join(parts) + ".",
        "invalid_request_error",
        param=first or None,
        code="validation_failed",
    )
    body["error"]["details"] = [
        {"loc": _loc(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors
    ]
    return JSONResponse(body, status_code=422)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else "Request failed."
    if exc.status_code == 404 and message == "Not Found":
        message = "No such endpoint."
    return error_response(
        exc.status_code, message, _HTTP_TYPES.get(exc.status_code, "api_error"), headers=getattr(exc, "headers", None)
    )


async def _db_unavailable(_: Request, exc: Exception) -> JSONResponse:
    log.error("database unavailable: %s", exc)
    return error_response(
        503,
        "The service is temporarily unavailable; please retry.",
        "service_unavailable",
        code="database_unavailable",
        headers={"retry-after": "1"},
    )


async def _unhandled(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(
        500, "The server had an error while processing your request.", "api_error", code="internal_error"
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(CICError, _cic_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _db_unavailable)
    app.add_exception_handler(PoolTimeout, _db_unavailable)
    app.add_exception_handler(Exception, _unhandled)
