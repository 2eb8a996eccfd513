"""Which nodes can serve a request: an in-memory view of the node table, refreshed in the background, and this
worker's own measurements of each node.

`pick` keeps the region rule — nodes of the model in the environment's region first, others only where the
environment allows cross-region failover — and leaves the choice among them to a routing policy
(`api.gateway.policies`), named per call or defaulting to the registry's. The policy sees immutable
`NodeSnapshot`s: the node's row (price, spot, engine stats from its last heartbeat) and this worker's view of it
(requests in flight, latency and TTFT EWMAs, failure EWMA, circuit breaker), which the dispatcher feeds through
`observe` after every attempt.

Circuit breaker: `FAILURES_TO_OPEN` consecutive failures, or a failure EWMA above `ERROR_RATE_TO_OPEN`, open it
for `OPEN_S` (health 0: the node gets no traffic while another will do). Afterwards the node is half-open: its
health is 1 − the failure EWMA, which decays with time since the last failure, so it soon gets a request again;
one more failure re-opens the breaker at once, a success closes it.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from agent.scrape import EngineStats
from api.gateway.policies import (
    DEFAULT_POLICY,
    NO_STATS,
    STALE_STATS_S,
    NodeSnapshot,
    RouteRequest,
    RoutingPolicy,
    get_policy,
)
from cic.models import Node, NodeStatus
from cic.models.nodes import NATIVE_ENGINES

log = logging.getLogger("cic.gateway")

LATENCY_ALPHA = 0.2  # weight of a new latency / TTFT sample
ERROR_ALPHA = 0.1  # weight of a new outcome in the failure EWMA (about the last ten attempts)
ERROR_HALF_LIFE_S = 10.0  # the failure EWMA halves over this much time without failures
FAILURES_TO_OPEN = 5
ERROR_RATE_TO_OPEN = 0.5
OPEN_S = 5.0


@dataclass(frozen=True, slots=True)
class NodeView:
    id: str
    model: str
    region: str
    base_url: str
    engine: str
    served_model: str
    api_key_env: str
    spot: bool = False
    price_per_hour_micros: int = 0
    stats: EngineStats = NO_STATS  # from the last heartbeat (``nodes.load``); zero for static nodes
    last_heartbeat_at: datetime | None = None

    @property
    def native(self) -> bool:
        return self.engine in NATIVE_ENGINES


def load_nodes(engine: Engine) -> list[NodeView]:
    with Session(engine) as session:
        rows = session.exec(
            select(Node).where(Node.status == NodeStatus.healthy.value, col(Node.deregistered_at).is_(None))
        )
        return [
            NodeView(
                n.id,
                n.model_id,
                n.region_code,
                n.endpoint_url.rstrip("/"),
                n.engine,
                n.served_model or n.model_id,
                n.api_key_env,
                spot=n.spot,
                price_per_hour_micros=n.price_per_hour_micros,
                stats=EngineStats.from_load(n.load),
                last_heartbeat_at=n.last_heartbeat_at,
            )
            for n in rows
        ]


@dataclass(slots=True)
class _Health:
    """This worker's measurements of one node (mutable; never handed out)."""

    ewma_latency_s: float | None = None
    ewma_ttft_s: float | None = None
    error_rate: float = 0.0  # as of `error_at`; decays from there
    error_at: float = 0.0
    consecutive_failures: int = 0
    open_until: float = field(default=-math.inf)

    def errors(self, now: float) -> float:
        if not self.error_rate:
            return 0.0
        return self.error_rate * 0.5 ** (max(0.0, now - self.error_at) / ERROR_HALF_LIFE_S)

    def score(self, now: float) -> float:
        return 0.0 if now < self.open_until else max(0.0, 1.0 - self.errors(now))


def _ewma(old: float | None, sample: float, alpha: float) -> float:
    return sample if old is None else old + alpha * (sample - old)


class NodeRegistry:
    def __init__(
        self,
        default_policy: str = DEFAULT_POLICY,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.default_policy = get_policy(default_policy).name  # an unknown name fails here, at start-up
        self._clock = clock
        self._wall = wall_clock
        self._by_model: dict[str, list[NodeView]] = {}
        self._by_id: dict[str, NodeView] = {}
        self._heartbeat: dict[str, float] = {}  # node id -> Unix time of its last heartbeat
        self._health: dict[str, _Health] = {}
        # This worker's requests in flight per node; the dispatcher counts them up and down around each attempt.
        self.in_flight: defaultdict[str, int] = defaultdict(int)
        self._rr = itertools.count()
        self._warned: set[str] = set()

    def replace(self, nodes: Iterable[NodeView]) -> None:
        """Swap in a fresh view of the node table; measurements of the nodes that remain are kept."""
        by_model: dict[str, list[NodeView]] = defaultdict(list)
        by_id: dict[str, NodeView] = {}
        for n in sorted(nodes, key=lambda n: n.id):
            by_model[n.model].append(n)
            by_id[n.id] = n
        self._by_model = dict(by_model)
        self._by_id = by_id
        self._heartbeat = {i: n.last_heartbeat_at.timestamp() for i, n in by_id.items() if n.last_heartbeat_at}
        self._health = {i: h for i, h in self._health.items() if i in by_id}
        for gone in [i for i, count in self.in_flight.items() if count == 0 and i not in by_id]:
            del self.in_flight[gone]

    def nodes(self) -> list[NodeView]:
        return [n for ns in self._by_model.values() for n in ns]

    def snapshots(self, model: str | None = None) -> list[NodeSnapshot]:
        """Every node (of ``model``) as a policy would see it now."""
        nodes = self._by_model.get(model, []) if model is not None else self.nodes()
        now, wall = self._clock(), self._wall()
        return [self._snapshot(n, now, wall) for n in nodes]

    def pick(
        self,
        model: str,
        region: str,
        *,
        cross_region: bool,
        exclude: frozenset[str] = frozenset(),
        policy: str | None = None,
        prefix_key: str = "",
        session_id: str | None = None,
    ) -> NodeView | None:
        """The node for a request, or None when no node of ``model`` may serve it.

        ``policy`` names a routing policy (an environment's override); None, or a name no policy has, means the
        registry's default.
        """
        candidates = self._by_model.get(model)
        if not candidates:
            return None
        local = [n for n in candidates if n.region == region and n.id not in exclude]
        pool = local or ([n for n in candidates if n.id not in exclude] if cross_region else [])
        if not pool:
            return None
        now, wall = self._clock(), self._wall()
        request = RouteRequest(model, region, prefix_key, session_id, next(self._rr))
        chosen = self._policy(policy).choose([self._snapshot(n, now, wall) for n in pool], request)
        return self._by_id[chosen.id] if chosen is not None else None

    def saturated(self, model: str, region: str, *, cross_region: bool, waiting_threshold: float) -> bool:
        """Every node that could take the request reports a queue (vLLM's waiting requests) at or over
        the threshold: the fleet is full, and shared traffic should wait or be shed."""
        candidates = self._by_model.get(model) or []
        pool = [n for n in candidates if n.region == region] or (candidates if cross_region else [])
        if not pool:
            return False
        wall = self._wall()
        for n in pool:
            beat = self._heartbeat.get(n.id)
            fresh = beat is not None and wall - beat <= STALE_STATS_S
            if not fresh or n.stats.num_requests_waiting < waiting_threshold:
                return False
        return True

    def observe(self, node_id: str, *, ok: bool, latency_s: float, ttft_s: float | None) -> None:
        """Record one attempt on a node: its outcome, how long it took, and its time to first token if any."""
        if node_id not in self._by_id:
            return  # gone from the table since the attempt began
        h = self._health.get(node_id)
        if h is None:
            h = self._health[node_id] = _Health()
        now = self._clock()
        h.error_rate = h.errors(now) + ERROR_ALPHA * ((0.0 if ok else 1.0) - h.errors(now))
        h.error_at = now
        if ok:
            h.consecutive_failures = 0
            h.open_until = -math.inf
            h.ewma_latency_s = _ewma(h.ewma_latency_s, latency_s, LATENCY_ALPHA)
            if ttft_s is not None:
                h.ewma_ttft_s = _ewma(h.ewma_ttft_s, ttft_s, LATENCY_ALPHA)
            return
        h.consecutive_failures += 1
        if h.consecutive_failures >= FAILURES_TO_OPEN or h.error_rate > ERROR_RATE_TO_OPEN:
            if now >= h.open_until:
                log.warning(
                    "circuit opened for node",
                    extra={"node": node_id, "failures": h.consecutive_failures, "error_rate": round(h.error_rate, 3)},
                )
            h.open_until = now + OPEN_S

    # --- internals -------------------------------------------------------------------------------

    def _policy(self, name: str | None) -> RoutingPolicy:
        if name is None:
            return get_policy(self.default_policy)
        try:
            return get_policy(name)
        except ValueError as exc:
            if name not in self._warned:
                self._warned.add(name)
                log.warning("%s; routing with %s", exc, self.default_policy)
            return get_policy(self.default_policy)

    def _snapshot(self, n: NodeView, now: float, wall: float) -> NodeSnapshot:
        h = self._health.get(n.id)
        beat = self._heartbeat.get(n.id)
        return NodeSnapshot(
            id=n.id,
            model=n.model,
            region=n.region,
            base_url=n.base_url,
            engine=n.engine,
            served_model=n.served_model,
            api_key_env=n.api_key_env,
            spot=n.spot,
            price_per_hour_micros=n.price_per_hour_micros,
            stats=n.stats,
            heartbeat_age_s=max(0.0, wall - beat) if beat is not None else None,
            in_flight=self.in_flight.get(n.id, 0),
            ewma_latency_s=h.ewma_latency_s if h else None,
            ewma_ttft_s=h.ewma_ttft_s if h else None,
            error_rate=h.errors(now) if h else 0.0,
            health_score=h.score(now) if h else 1.0,
        )
