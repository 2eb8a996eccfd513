"""Engine and session construction. The engine is built once per process and passed around explicitly."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from psycopg import pq
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

from cic import events
from cic.settings import Settings


def make_engine(settings: Settings) -> Engine:
    settings.ensure_local_dirs()
    kwargs: dict[str, Any] = {"echo": settings.sql_echo, "pool_pre_ping": True}
    if settings.is_sqlite:
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs.update(pool_size=10, max_overflow=20, pool_recycle=1800)
        # Day boundaries (usage per day, budgets per month) are UTC whatever the server's zone.
        kwargs["connect_args"] = {"options": "-c timezone=UTC"}
    engine = create_engine(settings.database_url, **kwargs)
    if settings.is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    elif engine.dialect.driver == "psycopg":
        event.listen(engine, "before_cursor_execute", _binary_results)
    return engine


BINARY_RESULTS = "cic_binary_results"
"""Execution option: PostgreSQL sends this statement's results in binary, which psycopg decodes
faster than text (arrays above all: no digits to parse). The Python values are the same."""


def _binary_results(_conn: Any, cursor: Any, _statement: str, _params: Any, context: Any, _executemany: bool) -> None:
    if context is not None and context.execution_options.get(BINARY_RESULTS):
        cursor.format = pq.Format.BINARY


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
    # What PostgreSQL has built in and the roll-ups use (SQLite has them only in some builds).
    dbapi_conn.create_function("ln", 1, _ln, deterministic=True)
    dbapi_conn.create_function("floor", 1, _floor, deterministic=True)


def _ln(x: float | None) -> float | None:
    return None if x is None or x <= 0 else math.log(x)


def _floor(x: float | None) -> int | None:
    return None if x is None else math.floor(x)


@contextmanager
def session_scope(engine: Engine, publisher: events.Publisher | None = None) -> Iterator[Session]:
    """A session whose work is committed on success and rolled back on any error.
    ``publisher`` receives the cache invalidations of the committed work (see ``cic.events``)."""
    with Session(engine, expire_on_commit=False) as session:
        events.attach_publisher(session, publisher)
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
