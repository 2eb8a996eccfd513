"""Running Alembic from code (``cic db upgrade``, tests) and the hooks autogenerate uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection, Engine
from sqlmodel import SQLModel, sql

from alembic import command

ROOT = Path(__file__).resolve().parent.parent
ALEMBIC_DIR = ROOT / "alembic"


def alembic_config(url: str | None = None) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    if url:
        # ConfigParser interpolation: a literal % must be doubled.
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def diff(conn: Connection) -> list[Any]:
    """What autogenerate would still write: empty when the migrations match the models."""
    import cic.models  # noqa: F401

    ctx = MigrationContext.configure(conn, opts={"compare_type": True, "include_object": include_object})
    return list(compare_metadata(ctx, SQLModel.metadata))


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Render our column types as plain SQLAlchemy ones so migrations never import models."""
    if type_ == "type":
        if isinstance(obj, sql.sqltypes.AutoString):
            return f"sa.String(length={obj.length!r})" if obj.length else "sa.String()"
        name = type(obj).__name__
        if name == "UTCDateTime":
            return "cic.models.types.UTCDateTime()"
    return False


NOT_MODELS = {"alembic_version", "apscheduler_jobs"}
"""Tables a migration creates that no model describes (Alembic's own, APScheduler's job store)."""


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    if type_ == "table":
        return name not in NOT_MODELS
    return not (type_ == "index" and obj.table.name in NOT_MODELS)
