"""Migrations build the schema the models describe, on SQLite and PostgreSQL, both ways."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from cic import migrations
from tests.conftest import create_database, drop_database


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
    else:
        url = create_database("cic_migr")
        try:
            yield url
        finally:
            drop_database(url)


def test_upgrade_matches_models_and_roundtrips(empty_db: str) -> None:
    migrations.upgrade(empty_db)
    eng = create_engine(empty_db)
    try:
        with eng.connect() as conn:
            assert migrations.diff(conn) == []
        assert migrations.current(eng) == migrations.head()
        tables = set(inspect(eng).get_table_names())
        assert {
            "users",
            "orgs",
            "memberships",
            "environments",
            "api_keys",
            "regions",
            "models",
            "model_prices",
            "nodes",
            "usage_records",
            "audit_log",
        } <= tables

        migrations.downgrade(empty_db, "base")
        assert set(inspect(eng).get_table_names()) <= {"alembic_version"}

        migrations.upgrade(empty_db)
        with eng.connect() as conn:
            assert migrations.diff(conn) == []
    finally:
        eng.dispose()


def test_diff_notices_a_model_change(empty_db: str) -> None:
    """The no-difference check above can fail: a schema missing a column is reported."""
    migrations.upgrade(empty_db)
    eng = create_engine(empty_db)
    try:
        with eng.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE nodes DROP COLUMN gpu")
        with eng.connect() as conn:
            found = migrations.diff(conn)
        assert any(d[0] == "add_column" and d[3].name == "gpu" for d in found if isinstance(d, tuple))
    finally:
        eng.dispose()
