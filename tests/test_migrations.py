"""Migrations build the schema the models describe, on SQLite and PostgreSQL, both ways."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

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


def test_histograms_become_arrays_and_back(empty_db: str) -> None:
    """0010 converts the roll-ups' histograms in place: ``{"bucket": count}`` maps to
    ``[first bucket, counts…]`` arrays (gaps filled with zeros), and back on downgrade."""
    migrations.upgrade(empty_db, "0009_rollup_totals")
    eng = create_engine(empty_db)
    jsonb = "CAST({} AS jsonb)" if eng.dialect.name == "postgresql" else "{}"
    maps = [('{"46": 3, "48": 1, "47": 0}', "{}"), ('{"0": 2}', '{"31": 5, "30": 1}')]
    try:
        with eng.begin() as conn:
            for table, period, at in (
                ("usage_hourly", "hour", "2026-10-05 10:00:00+00"),
                ("usage_daily", "day", "2026-10-05"),
            ):
                insert = text(
                    f"INSERT INTO {table} (id, {period}, org_id, environment_id, api_key_id, model_id, region_code,"
                    " requests, errors, prompt_tokens, completion_tokens, cached_tokens, cost_picousd, latency_ms_sum,"
                    " ttft_count, ttft_ms_sum, latency_hist, ttft_hist, updated_at)"
                    " VALUES (:id, :at, 'org_x', 'env_x', :key, 'm', '', 1, 0, 0, 0, 0, 0, 0, 0, 0,"
                    f" {jsonb.format(':lat')}, {jsonb.format(':ttft')}, :updated)"
                )
                for i, (lat, ttft) in enumerate(maps):
                    params = {"id": i + 1, "at": at, "key": f"key_{i}", "lat": lat, "ttft": ttft}
                    conn.execute(insert, {**params, "updated": "2026-10-05 10:00:00+00"})

        def read(table: str) -> list[tuple[object, object]]:
            with eng.connect() as conn:
                rows = conn.execute(text(f"SELECT latency_hist, ttft_hist FROM {table} ORDER BY id")).all()
            return [tuple(json.loads(v) if isinstance(v, str) else v for v in row) for row in rows]

        migrations.upgrade(empty_db)
        for table in ("usage_hourly", "usage_daily"):
            assert read(table) == [([46, 3, 0, 1], []), ([0, 2], [30, 1, 5])]
        migrations.downgrade(empty_db, "0009_rollup_totals")
        for table in ("usage_hourly", "usage_daily"):
            assert read(table) == [({"46": 3, "48": 1}, {}), ({"0": 2}, {"31": 5, "30": 1})]
    finally:
        eng.dispose()
