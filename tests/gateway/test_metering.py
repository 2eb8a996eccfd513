"""The usage meter: batched, idempotent by request id, spooled when the database is down, replayed."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from api.gateway.metering import UsageMeter
from cic.models import UsageRecord


def _row(i: int) -> dict[str, Any]:
    return {
        "request_id": f"req_spool_{i}",
        "org_id": "org_x",
        "environment_id": "env_x",
        "api_key_id": "key_x",
        "model_id": "llama-3-8b",
        "region_code": "us-east",
        "node_id": "node_x",
        "endpoint": "chat.completions",
        "stream": False,
        "status": "ok",
        "http_status": 200,
        "error_code": None,
        "prompt_tokens": i,
        "completion_tokens": 2 * i,
        "cached_tokens": 0,
        "latency_ms": 5,
        "ttft_ms": 3,
        "input_per_1m_micros": 50_000,
        "output_per_1m_micros": 50_000,
        "cost_picousd": 150_000 * i,
        "created_at": datetime.now(UTC),
    }


def _count(session: Session) -> int:
    session.expire_all()
    return int(session.exec(select(func.count()).select_from(UsageRecord)).one())


def test_spool_when_db_down_then_replay_exactly_once(engine: Engine, session: Session, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    dead = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere", connect_args={"connect_timeout": 1})
    down = UsageMeter(dead, spool)
    for i in range(1, 2501):
        down.record(_row(i))
    asyncio.run(down.flush())
    assert down.spooled == 2500 and down.pending == 0
    assert sum(1 for _ in spool.glob("usage-*.jsonl")) == 1
    assert _count(session) == 0

    up = UsageMeter(engine, spool)
    up.record(_row(1))  # one of them also arrives directly: the replay must not count it twice
    asyncio.run(up.flush())
    assert asyncio.run(up.replay_spool()) == 2500
    assert list(spool.iterdir()) == []
    assert _count(session) == 2500
    total = session.exec(select(func.sum(UsageRecord.cost_picousd))).one()
    assert total == 150_000 * sum(range(1, 2501))
    assert asyncio.run(up.replay_spool()) == 0
    first = session.exec(select(UsageRecord).where(col(UsageRecord.request_id) == "req_spool_7")).one()
    assert first.created_at.tzinfo is not None and first.completion_tokens == 14


def test_shutdown_flushes_queue(engine: Engine, session: Session, tmp_path: Path) -> None:
    meter = UsageMeter(engine, tmp_path)
    for i in range(1, 11):
        meter.record(_row(i))
    asyncio.run(meter.close())
    assert _count(session) == 10


def test_batch_taken_by_a_cancelled_flush_is_still_written(engine: Engine, session: Session, tmp_path: Path) -> None:
    """Cancelling the flush loop while its batch waits for a worker thread must not drop the batch."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        submitted = asyncio.Event()

        class OneWorker(ThreadPoolExecutor):
            def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
                future = super().submit(fn, *args, **kwargs)
                if fn != busy.wait:
                    submitted.set()  # the flush loop has handed its batch to the executor
                return future

        busy = threading.Event()
        loop.set_default_executor(OneWorker(max_workers=1))
        loop.run_in_executor(None, busy.wait)  # the only worker thread is taken: the batch queues behind it
        try:
            meter = UsageMeter(engine, tmp_path, flush_interval_s=0.01)
            for i in range(1, 6):
                meter.record(_row(i))
            runner = asyncio.create_task(meter.run())
            await asyncio.wait_for(submitted.wait(), 10)
            assert meter.pending == 0
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
            busy.set()
            await meter.close()

        finally:
            busy.set()  # never leave the executor blocked, or asyncio.run would wait for it forever

    asyncio.run(scenario())
    assert _count(session) == 5


def test_a_record_the_database_refuses_is_set_aside_and_the_rest_of_its_batch_written(
    engine: Engine, session: Session, tmp_path: Path
) -> None:
    """One bad record (here a NUL, which PostgreSQL refuses in text) must not hold its batch hostage, neither
    when written nor when replayed from the spool: the others land, it goes to rejected-usage-*.jsonl."""
    spool = tmp_path / "spool"
    bad = {**_row(3), "error_code": "nul\x00here"}
    meter = UsageMeter(engine, spool)
    for row in (_row(1), _row(2), bad, _row(4)):
        meter.record(row)
    asyncio.run(meter.flush())
    assert meter.written == 3 and meter.spooled == 0
    assert _count(session) == 3
    (rejected,) = spool.glob("rejected-usage-*.jsonl")
    assert b"req_spool_3" in rejected.read_bytes()

    # The same from a spool file (written while the database was down): replayed, apart from the bad one.
    rejected.unlink()
    dead = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere", connect_args={"connect_timeout": 1})
    down = UsageMeter(dead, spool)
    for row in (_row(5), {**bad, "request_id": "req_spool_6"}, _row(7)):
        down.record(row)
    asyncio.run(down.flush())
    assert down.spooled == 3
    assert asyncio.run(meter.replay_spool()) == 2
    assert _count(session) == 5
    assert [p.name.split("-")[0] for p in spool.iterdir()] == ["rejected"]
    assert asyncio.run(meter.replay_spool()) == 0  # a set-aside record is not retried on its own
