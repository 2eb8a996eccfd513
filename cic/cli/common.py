"""What every ``cic`` command module shares: readable failures, JSON output, one transaction per command."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import redis
import typer
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlmodel import Session

from cic import events
from cic.db import make_engine, session_scope
from cic.errors import CICError
from cic.services.authz import Actor
from cic.settings import Settings, get_settings

OPERATOR = Actor.system("cli")


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def settings() -> Settings:
    try:
        return get_settings()
    except ValidationError as exc:
        fail("invalid settings: " + "; ".join(e["msg"] for e in exc.errors()))


def emit(obj: Any) -> None:
    """JSON on stdout (pydantic models and lists of them included)."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    elif isinstance(obj, list):
        obj = [o.model_dump(mode="json") if isinstance(o, BaseModel) else o for o in obj]
    typer.echo(json.dumps(obj, indent=2, default=str, ensure_ascii=False))


def db_error(exc: OperationalError | ProgrammingError) -> NoReturn:
    message = str(exc.orig).splitlines()[0] if exc.orig else str(exc)
    missing = "no such table" in message or "does not exist" in message
    fail(f"database error{' (run `cic db upgrade` first?)' if missing else ''}: {message}")


@contextmanager
def db() -> Iterator[tuple[Session, Settings]]:
    """One transaction per command; domain errors become ``error: <message>`` and exit status 1.
    What the command changes is published to the API workers' caches after the commit."""
    s = settings()
    engine = make_engine(s)
    bus = redis.Redis.from_url(s.redis_url) if s.redis_url else None
    try:
        with session_scope(engine, events.redis_publisher(bus) if bus else None) as session:
            yield session, s
    except CICError as exc:
        fail(exc.message)
    except (OperationalError, ProgrammingError) as exc:
        db_error(exc)
    finally:
        engine.dispose()
        if bus is not None:
            bus.close()
