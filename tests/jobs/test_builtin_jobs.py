"""The platform's own jobs: node-health (also run by the API's workers), spool-replay, job-history-prune."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from api.app import create_app
from api.gateway.metering import UsageMeter
from cic.models import Node, UsageRecord
from cic.models.nodes import NodeRegister
from cic.models.types import utcnow
from cic.services import nodes
from cic.services.authz import Actor
from cic.settings import Settings
from jobs import records
from jobs.registry import JobContext, all_jobs
from jobs.runner import RunStatus, run_job
from jobs.spool import spool_replay
from tests.conftest import REDIS_URL
from tests.gateway.test_metering import _row
from tests.jobs.test_runner import runs
from tests.servers import wait_until


@pytest.fixture
def own_lock_settings(settings: Settings) -> Settings:
    """node-health's lock key is the same for every deployment sharing a Redis database; other test
    sessions' API servers on this machine sweep too, so these tests take a Redis database of their own."""
    return settings.model_copy(update={"redis_url": REDIS_URL.rsplit("/", 1)[0] + "/13"})


def silent_node(session: Session, settings: Settings, pepper: str) -> Node:
    token, _ = nodes.create_node_token(session, Actor.system(), pepper=pepper)
    node = nodes.register_node(
        session,
        token,
        NodeRegister(model="llama-3-8b", region="us-east", endpoint_url="http://127.0.0.1:9"),
        pepper=pepper,
    )
    node.last_heartbeat_at = utcnow() - timedelta(seconds=settings.heartbeat_timeout_s + 5)
    session.add(node)
    session.commit()
    return node


def test_node_health_job_marks_a_silent_node(
    session: Session, engine: Engine, own_lock_settings: Settings, pepper: str
) -> None:
    settings = own_lock_settings
    node = silent_node(session, settings, pepper)
    spec = all_jobs()["node-health"]
    result = run_job(spec, settings, engine)
    assert result.status is RunStatus.ran and result.summary == {"applied": 1}
    session.expire_all()
    assert session.get(Node, node.id).status == "unhealthy"  # type: ignore[union-attr]
    assert run_job(spec, settings, engine).status in (RunStatus.skipped, RunStatus.ran)  # same or next 5 s slot


def test_api_workers_sweep_through_the_same_job(
    session: Session, engine: Engine, own_lock_settings: Settings, pepper: str
) -> None:
    """The API's background sweep is the node-health job: its runs land in job_runs, once per period."""
    settings = own_lock_settings
    node = silent_node(session, settings, pepper)
    with TestClient(create_app(settings)), TestClient(create_app(settings)):  # two workers
        wait_until(lambda: len(runs(engine, "node-health")) >= 2, timeout=20, what="two sweep periods")
    rows = runs(engine, "node-health")
    assert rows[0].summary == {"applied": 1} and all(r.attempts == 1 for r in rows)
    session.expire_all()
    assert session.get(Node, node.id).status == "unhealthy"  # type: ignore[union-attr]


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def count_usage(session: Session) -> int:
    session.expire_all()
    return int(session.exec(select(func.count()).select_from(UsageRecord)).one())


def test_spool_replay_job_replays_files_of_exited_processes_only(
    session: Session, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    dead_db = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere", connect_args={"connect_timeout": 1})
    meter = UsageMeter(dead_db, spool)  # the database is down: records go to usage-<our pid>.jsonl
    for i in range(1, 1201):
        meter.record(_row(i))
    asyncio.run(meter.flush())
    ours = spool / f"usage-{os.getpid()}.jsonl"
    assert ours.exists() and meter.spooled == 1200
    # Half of it was written by a worker that has since exited; a torn last line from its crash too.
    lines = ours.read_bytes().splitlines(keepends=True)
    exited = spool / f"usage-{dead_pid()}.jsonl"
    exited.write_bytes(b"".join(lines[:600]) + b'{"request_id": "req_torn", "org')
    ours.write_bytes(b"".join(lines[600:]))

    spec = all_jobs()["spool-replay"]
    jobs_settings = settings.model_copy(update={"spool_dir": spool})
    result = run_job(spec, jobs_settings, engine)
    assert result.status is RunStatus.ran
    assert result.summary == {"replayed": 600, "files_waiting": 1}
    assert count_usage(session) == 600
    assert not exited.exists() and ours.exists()  # a live process's own file is left to it
    [corrupt] = spool.glob("*.corrupt")
    assert b"req_torn" in corrupt.read_bytes()

    # That process (this one, here) replays its own file; a replay of the replayed changes nothing.
    assert asyncio.run(UsageMeter(engine, spool).replay_spool()) == 600
    assert count_usage(session) == 1200 and not list(spool.glob("usage-*.jsonl"))


def test_spool_replay_leaves_files_when_the_database_is_down(settings: Settings, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    UsageMeter(create_engine("sqlite://"), spool)._spool([_row(1), _row(2)])
    (spool / f"usage-{os.getpid()}.jsonl").rename(spool / f"usage-{dead_pid()}.jsonl")
    down = settings.model_copy(update={"spool_dir": spool})
    dead = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere", connect_args={"connect_timeout": 1})
    ctx = JobContext(settings=down, engine=dead, now=utcnow(), log=logging.getLogger("test"))
    assert spool_replay(ctx) == {"replayed": 0, "files_waiting": 1}  # the body, as the runner calls it
    [left] = spool.glob("usage-*.jsonl")
    assert left.read_bytes().count(b"\n") == 2  # requeued whole, for the next run


def test_job_history_prune(engine: Engine, settings: Settings) -> None:
    now = utcnow()
    for age_days in (1, 8, 30):
        period = now - timedelta(days=age_days)
        claimed = records.claim(
            engine,
            "t-prune",
            period,
            "host/1/x",
            now=now,
            force=False,
            max_attempts=1,
            takeover_running=True,
            stale_before=now,
        )
        assert claimed == records.Claimed(1)
    result = run_job(all_jobs()["job-history-prune"], settings, engine, force=True)
    assert result.status is RunStatus.ran and result.summary and result.summary["deleted"] == 2
    assert [r.name for r in runs(engine, "t-prune")] == ["t-prune"]
