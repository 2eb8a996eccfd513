"""Usage records made directly (the gateway's metering is tested in tests/gateway)."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Engine

from cic.models import UsageRecord

_seq = itertools.count()


def record(
    org_id: str,
    env_id: str,
    at: datetime,
    *,
    model: str = "llama-3-8b",
    key_id: str = "key_a",
    region: str = "us-east",
    prompt: int = 10,
    completion: int = 5,
    cost: int | None = None,
    status: str = "ok",
    latency_ms: int = 100,
    ttft_ms: int | None = None,
) -> dict[str, Any]:
    """A usage record row; cost defaults to llama-3-8b's list price ($0.05 per 1M = 50,000 µ$)."""
    return {
        "request_id": f"req_test_{next(_seq)}_{at.timestamp()}",
        "org_id": org_id,
        "environment_id": env_id,
        "api_key_id": key_id,
        "model_id": model,
        "region_code": region,
        "endpoint": "chat.completions",
        "stream": ttft_ms is not None,
        "status": status,
        "http_status": 200 if status == "ok" else 502,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached_tokens": 0,
        "latency_ms": latency_ms,
        "ttft_ms": ttft_ms,
        "input_per_1m_micros": 50_000,
        "output_per_1m_micros": 50_000,
        "cost_picousd": cost if cost is not None else (prompt + completion) * 50_000,
        "created_at": at,
    }


def insert_records(engine: Engine, rows: list[dict[str, Any]]) -> None:
    """Inserted like the gateway's batcher does: ``ingested_at`` is the database's clock."""
    if rows:
        with engine.begin() as conn:
            conn.execute(insert(UsageRecord), rows)
