"""Fixtures: a throwaway PostgreSQL database per test session, real Redis, the real app.

PostgreSQL and Redis are the ones ``scripts/services`` makes sure of (127.0.0.1:5432 / :6379);
``CIC_TEST_PG_URL`` and ``CIC_TEST_REDIS_URL`` point elsewhere.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, SQLModel

from api.app import create_app
from cic import migrations
from cic.db import make_engine, session_scope
from cic.services import catalog
from cic.settings import Settings
from tests.fakes.oidc_provider import OidcProvider
from tests.fakes.smtp import SmtpServer

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# Fixture plugins: `stripe_fake` (a local Stripe the real SDK talks to, tests/fakes/stripe_server.py).
pytest_plugins = ["tests.fakes.stripe_server"]

PG_ADMIN_URL = os.environ.get("CIC_TEST_PG_URL", "postgresql://postgres:postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("CIC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# The `cic` console script of the environment running the tests.
CIC = str(Path(sys.executable).with_name("cic"))
# Tables the catalog seed fills once per session; everything else is emptied after each test.
KEEP = {"regions", "models", "model_prices", "alembic_version"}


def pg_admin_conninfo() -> str:
    return make_url(PG_ADMIN_URL).set(drivername="postgresql").render_as_string(hide_password=False)


def create_database(prefix: str = "cic_test") -> str:
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(pg_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return (
        make_url(PG_ADMIN_URL).set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    )


def drop_database(url: str) -> None:
    name = make_url(url).database
    with psycopg.connect(pg_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = create_database()
    try:
        migrations.upgrade(url)
        yield url
    finally:
        drop_database(url)


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(
        env="local",
        database_url=database_url,
        redis_url=REDIS_URL,
        public_base_url="http://testserver",
        log_json=True,
    )


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[Engine]:
    eng = make_engine(settings)
    with session_scope(eng) as s:
        catalog.seed(s)
    yield eng
    eng.dispose()


@pytest.fixture(autouse=True)
def _clean_tables(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "engine" not in request.fixturenames:
        return
    eng: Engine = request.getfixturevalue("engine")
    tables = [t.name for t in SQLModel.metadata.sorted_tables if t.name not in KEEP]
    with eng.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as s:
        yield s


@pytest.fixture
def pepper(settings: Settings) -> str:
    return settings.key_pepper.get_secret_value()


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A local SMTP server collecting every message (see ``tests/fakes/smtp.py``)."""
    with SmtpServer().running() as server:
        yield server


@pytest.fixture
def oidc_provider() -> Iterator[OidcProvider]:
    """A local OpenID provider on loopback, signing in ``oidc_provider.user`` without a login page
    (see ``tests/fakes/oidc_provider.py``)."""
    with OidcProvider().running() as provider:
        yield provider
