"""Every lock backend: mutual exclusion, a crashed holder's lock expires after its TTL, and release is
compare-and-delete (a holder slower than its TTL never frees the next holder's lock)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import psycopg
import pytest
import redis
from sqlalchemy.engine import Engine

from cic.settings import Settings
from jobs import locks
from tests.conftest import pg_admin_conninfo
from tests.fakes.upstash import FakeUpstash
from tests.jobs.conftest import UPSTASH_TOKEN, Backend
from tests.servers import wait_until

LockFactory = Callable[[], locks.JobLock]


def test_mutual_exclusion(lock_factory: LockFactory, job_name: str) -> None:
    a, b = lock_factory(), lock_factory()
    key = locks.lock_key(job_name)
    lease = a.acquire(key, timedelta(seconds=30))
    assert lease is not None
    assert b.acquire(key, timedelta(seconds=30)) is None
    assert a.acquire(key, timedelta(seconds=30)) is None  # not re-entrant either
    assert b.acquire(locks.lock_key(job_name + "-other"), timedelta(seconds=30)) is not None  # per job
    assert lease.release() is True
    assert lease.release() is False  # once
    again = b.acquire(key, timedelta(seconds=30))
    assert again is not None and again.token != lease.token
    assert again.release() is True


def test_crashed_holder_frees_the_lock_after_its_ttl(lock_factory: LockFactory, job_name: str) -> None:
    key = locks.lock_key(job_name)
    ttl = timedelta(milliseconds=800)
    crashed = lock_factory().acquire(key, ttl)  # never released: its holder "crashed"
    assert crashed is not None
    taken_at = time.monotonic()
    other = lock_factory()
    assert other.acquire(key, timedelta(seconds=30)) is None
    lease = wait_until(lambda: other.acquire(key, timedelta(seconds=30)), timeout=15, what="the lock to expire")
    assert time.monotonic() - taken_at >= 0.5  # not before (most of) the TTL
    # The crashed holder wakes up and "releases": compare-and-delete leaves the new holder's lock alone.
    assert crashed.release() is False
    assert lock_factory().acquire(key, timedelta(seconds=30)) is None
    assert lease.release() is True


def test_from_settings_picks_the_backend(
    settings: Settings, engine: Engine, sqlite_settings: Settings, sqlite_engine: Engine
) -> None:
    assert locks.from_settings(settings, engine).backend == "redis"
    upstash = settings.model_copy(
        update={"redis_url": None, "upstash_redis_rest_url": "http://127.0.0.1:9", "upstash_redis_rest_token": None}
    )
    assert locks.from_settings(upstash, engine).backend == "postgresql"  # a URL without a token is not enough
    assert locks.from_settings(sqlite_settings, sqlite_engine).backend == "local"


def test_advisory_key_is_stable() -> None:
    # Same key in every process and version: derived from sha256, not Python's salted hash().
    assert locks.advisory_key("cic:lock:job:node-health") == locks.advisory_key("cic:lock:job:node-health")
    assert locks.advisory_key("cic:lock:job:a") != locks.advisory_key("cic:lock:job:b")
    assert locks.advisory_key("cic:lock:job:node-health") == -6408289387260469122  # sha256[:8], signed


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_advisory_lock_is_freed_when_the_holder_dies(backend: Backend, job_name: str) -> None:
    """A killed process's session ends at once, and its advisory lock with it."""
    lock = backend.make_lock()
    key = locks.lock_key(job_name)
    lease = lock.acquire(key, timedelta(minutes=10))
    assert lease is not None
    assert lock.acquire(key, timedelta(minutes=10)) is None
    with psycopg.connect(pg_admin_conninfo(), autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s",
            (locks.advisory_key(key) & 0xFFFFFFFF,),
        )
    again = wait_until(lambda: lock.acquire(key, timedelta(minutes=10)), timeout=10, what="the lock to free")
    assert lease.release() is False
    assert again.release() is True


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
def test_redis_lock_is_a_key_with_a_ttl(backend: Backend, job_name: str) -> None:
    lock = backend.make_lock()
    key = locks.lock_key(job_name)
    lease = lock.acquire(key, timedelta(seconds=90))
    assert lease is not None
    r = redis.Redis.from_url(backend.settings.redis_url or "")
    try:
        assert r.get(key) == lease.token.encode()
        assert 85_000 < int(r.pttl(key)) <= 90_000  # type: ignore[arg-type]
        assert lease.release() is True
        assert r.exists(key) == 0
    finally:
        r.close()


@pytest.mark.parametrize("backend", ["upstash"], indirect=True)
def test_upstash_speaks_set_nx_px_and_eval(backend: Backend, job_name: str, upstash: tuple[str, FakeUpstash]) -> None:
    _, fake = upstash
    key = locks.lock_key(job_name)
    lease = backend.make_lock().acquire(key, timedelta(seconds=2))
    assert lease is not None and lease.release() is True
    mine = [c for c in fake.commands if key in c]
    assert mine[0] == ["SET", key, lease.token, "NX", "PX", 2000]
    assert mine[1][0] == "EVAL" and mine[1][-1] == lease.token


@pytest.mark.parametrize("backend", ["upstash"], indirect=True)
def test_upstash_outage_and_bad_token_are_lock_errors(
    backend: Backend, job_name: str, upstash: tuple[str, FakeUpstash]
) -> None:
    url, fake = upstash
    bad = locks.UpstashLock.from_credentials(url, UPSTASH_TOKEN + "-wrong")
    with pytest.raises(locks.LockError, match="Unauthorized"):
        bad.acquire(locks.lock_key(job_name), timedelta(seconds=1))
    fake.down = True
    try:
        with pytest.raises(locks.LockError):
            backend.make_lock().acquire(locks.lock_key(job_name), timedelta(seconds=1))
    finally:
        fake.down = False


def test_redis_down_is_a_lock_error(job_name: str) -> None:
    lock = locks.RedisLock.from_url("redis://127.0.0.1:1/0")
    with pytest.raises(locks.LockError):
        lock.acquire(locks.lock_key(job_name), timedelta(seconds=1))
    lock.close()
