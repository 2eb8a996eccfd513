"""What one data-plane request did, and its usage record."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from api.gateway.catalog import Price
from api.gateway.ratelimit import Admission, Layer
from cic.services.keys import KeyIdentity

MODEL_ID_MAX = 64  # usage_records.model_id


def _column_text(text: str, size: int) -> str:
    """What a client sent, made storable: at most ``size`` characters, valid UTF-8, no NUL (PostgreSQL
    refuses it). A made-up model name is still metered, and cannot make the batch it is in fail."""
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates become '?'
    return text[:size].replace("\x00", "\ufffd")


@dataclass(slots=True)
class Call:
    request_id: str
    identity: KeyIdentity
    endpoint: str  # chat.completions | completions | embeddings
    model: str
    stream: bool
    client_wants_usage: bool = False
    started: float = field(default_factory=time.perf_counter)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    node_id: str | None = None
    region: str = ""
    status: str = "ok"  # ok | error | cancelled
    http_status: int = 200
    error_code: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    usage_exact: bool = False
    ttft_s: float | None = None
    prompt_text: str = ""
    messages: int = 0
    response_started: bool = False
    stream_done: bool = False  # [DONE] was relayed
    admission: Admission | None = None
    # an overlapped admission (see Gateway._admit): its layers until it is sent, then its outcome to come
    deferred: tuple[Layer, ...] | None = None
    pending: asyncio.Future[Admission] | None = None
    pending_cost: int = 0
    cost_picousd: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # x-ratelimit-* for the response
    lease_renewed: float = field(default_factory=time.monotonic)

    def fail(self, http_status: int, code: str | None, status: str = "error") -> None:
        self.status = status
        self.http_status = http_status
        self.error_code = code

    def take_usage(self, usage: dict[str, Any] | None) -> None:
        if not usage:
            return
        self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        self.completion_tokens = int(usage.get("completion_tokens") or 0)
        details = usage.get("prompt_tokens_details") or {}
        self.cached_tokens = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
        self.usage_exact = True

    def mark_first_byte(self) -> None:
        if self.ttft_s is None:
            self.ttft_s = time.perf_counter() - self.started

    def row(self, price: Price | None) -> dict[str, Any]:
        latency_ms = int((time.perf_counter() - self.started) * 1000)
        ident = self.identity
        return {
            "request_id": self.request_id,
            "org_id": ident.org_id,
            "environment_id": ident.environment_id,
            "api_key_id": ident.key_id,
            "model_id": _column_text(self.model, MODEL_ID_MAX),
            "region_code": self.region,
            "node_id": self.node_id,
            "endpoint": self.endpoint,
            "stream": self.stream,
            "status": self.status,
            "http_status": self.http_status,
            "error_code": self.error_code,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "latency_ms": latency_ms,
            "ttft_ms": int(self.ttft_s * 1000) if self.ttft_s is not None else None,
            "input_per_1m_micros": price.input_per_1m_micros if price else 0,
            "output_per_1m_micros": price.output_per_1m_micros if price else 0,
            "cost_picousd": price.cost_picousd(self.prompt_tokens, self.completion_tokens) if price else 0,
            "created_at": self.created_at,
        }
