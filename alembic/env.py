"""Alembic environment: migrations run against ``SQLModel.metadata`` with type comparison on."""

from __future__ import annotations

from typing import Any

from sqlalchemy import engine_from_config, pool
from sqlmodel import SQLModel

import cic.models  # noqa: F401  (registers every table)
from alembic import context
from cic.migrations import include_object, render_item
from cic.settings import Settings

config = context.config
target_metadata = SQLModel.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    settings = Settings()
    settings.ensure_local_dirs()
    return settings.database_url


def _configure_kwargs() -> dict[str, Any]:
    return {
        "target_metadata": target_metadata,
        "compare_type": True,
        "render_as_batch": True,  # SQLite can only ALTER through table copies
        "render_item": render_item,
        "include_object": include_object,
    }


def run_migrations_offline() -> None:
    context.configure(url=_url(), literal_binds=True, **_configure_kwargs())
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        context.configure(connection=connectable, **_configure_kwargs())
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = engine_from_config({"sqlalchemy.url": _url()}, prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, **_configure_kwargs())
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
