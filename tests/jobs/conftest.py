"""Fixtures for the jobs: every lock backend on the real servers (Redis, Upstash's REST protocol onto
Redis, PostgreSQL advisory locks, in-process on SQLite), unique job names, job specs."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy.engine import Engine

from cic import migrations
from cic.db import make_engine
from cic.settings import Settings
from jobs import locks
from jobs.registry import JobFunc, JobSpec
from tests.conftest import REDIS_URL
from tests.fakes.upstash import FakeUpstash, upstash_server

UPSTASH_TOKEN = "upstash-test-token"
BACKENDS = ["redis", "upstash", "postgresql", "local"]


def make_spec(
    name: str,
    func: JobFunc,
    *,
    every: timedelta | None = None,
    cron: str | None = None,
    timeout: timedelta = timedelta(seconds=30),
    max_attempts: int = 3,
) -> JobSpec:
    if every is None and cron is None:
        every = timedelta(hours=1)
    return JobSpec(name, func, every, cron, f"test job {name}", timeout, max_attempts)


@pytest.fixture
def job_name() -> str:
    """Unique per test, so lock keys never collide with other runs sharing the Redis server."""
    return f"t-{secrets.token_hex(5)}"


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('jobs-sqlite') / 'jobs.db'}"
    migrations.upgrade(url)
    return url


@pytest.fixture(scope="session")
def sqlite_settings(sqlite_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(env="local", database_url=sqlite_url, redis_url=None, spool_dir=tmp_path_factory.mktemp("spool"))


@pytest.fixture(scope="session")
def sqlite_engine(sqlite_settings: Settings) -> Iterator[Engine]:
    eng = make_engine(sqlite_settings)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def upstash() -> Iterator[tuple[str, FakeUpstash]]:
    with upstash_server(REDIS_URL, UPSTASH_TOKEN) as served:
        yield served


@dataclass
class Backend:
    name: str
    settings: Settings
    engine: Engine

    def make_lock(self) -> locks.JobLock:
        """A fresh lock client, as another instance would have."""
        lock = locks.from_settings(self.settings, self.engine)
        assert lock.backend == self.name
        return lock


@pytest.fixture(params=BACKENDS)
def backend(
    request: pytest.FixtureRequest,
    settings: Settings,
    engine: Engine,
    sqlite_settings: Settings,
    sqlite_engine: Engine,
    upstash: tuple[str, FakeUpstash],
) -> Backend:
    name: str = request.param
    if name == "redis":
        return Backend(name, settings, engine)
    if name == "upstash":
        url, _ = upstash
        upstash_settings = settings.model_copy(
            update={
                "redis_url": None,
                "upstash_redis_rest_url": url,
                "upstash_redis_rest_token": SecretStr(UPSTASH_TOKEN),
            }
        )
        return Backend(name, upstash_settings, engine)
    if name == "postgresql":
        return Backend(name, settings.model_copy(update={"redis_url": None}), engine)
    return Backend(name, sqlite_settings, sqlite_engine)


@pytest.fixture
def lock_factory(backend: Backend) -> Iterator[Callable[[], locks.JobLock]]:
    """Lock clients for the backend under test, closed at the end."""
    made: list[locks.JobLock] = []

    def make() -> locks.JobLock:
        made.append(backend.make_lock())
        return made[-1]

    yield make
    for lock in made:
        lock.close()


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]
