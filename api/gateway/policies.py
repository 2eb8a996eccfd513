"""Routing policies: which of a model's candidate nodes gets a request.

Each policy is a small class registered by name (``class LeastLoad(RoutingPolicy, name="least_load")``, as
SkyPilot's ``sky/serve/load_balancing_policies.py`` does) and a pure function of immutable inputs:
``choose(candidates, request)`` reads `NodeSnapshot`s — what the last heartbeat said about the engine plus this
worker's own view (requests in flight, latency and error EWMAs, health) — and a `RouteRequest`. No clock, no I/O,
no shared state: the same inputs give the same node, so every policy is tested without a network.

Health comes first for every policy: a node whose ``health_score`` is below `MIN_HEALTH` (its circuit breaker is
open, or its failure EWMA is above one half) is skipped while a healthier candidate exists; when none is healthy
the healthiest are used, since trying a suspect node beats refusing the request.

Policies:

- ``round_robin``: the candidates in turn.
- ``least_load``: fewest pending requests — the engine's running + waiting (last heartbeat) plus this worker's
  in flight — weighted by KV-cache pressure; ties in turn.
- ``latency``: lowest EWMA time to first token (this worker's measurements, else the engine's mean), inflated by
  this worker's requests in flight there so that a momentarily fast node is not flooded before its EWMA reacts;
  ``least_load`` when no candidate has a measurement.
- ``cost``: the cheapest node per hour, spot before on-demand at the same price, then least load; a tier whose
  engines all report requests waiting for a slot is passed over for the next one (when every tier queues, the
  cheapest takes the request), so a cheap node is kept full rather than driven into an unbounded queue.
- ``prefix_affinity``: consistent hashing of the prompt's prefix (rendezvous / highest-random-weight hashing) with
  bounded loads (Mirrokni, Thorup, Zadimoghaddam): a node takes the request only if its load stays within
  ``(1 + ε)`` × the mean, else the next node in the key's order does. Repeated prefixes reach the same warm KV
  cache; a hot prefix spills over instead of queueing.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from agent.scrape import EngineStats
from cic.models.nodes import NATIVE_ENGINES

DEFAULT_POLICY = "least_load"
MIN_HEALTH = 0.5  # below this a node is skipped while a healthier one exists
STALE_STATS_S = 15.0  # engine stats older than this are ignored (the heartbeat timeout)
BOUNDED_LOAD_EPSILON = 0.25
NO_STATS = EngineStats()  # what a node without heartbeats (a static node) reports


class UnknownPolicyError(ValueError):
    """A routing policy name that no policy is registered under."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown routing policy {name!r}; choose one of: {', '.join(POLICY_NAMES)}")
        self.name = name


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """One candidate node as a policy sees it: immutable, taken for one routing decision."""

    id: str
    model: str
    region: str
    base_url: str
    engine: str = "vllm"
    served_model: str = ""
    api_key_env: str = ""
    spot: bool = False
    price_per_hour_micros: int = 0
    stats: EngineStats = NO_STATS  # from the last heartbeat; all zero for static nodes
    heartbeat_age_s: float | None = None  # None: no heartbeat ever (a static node)
    in_flight: int = 0  # this worker's requests in flight to the node
    ewma_latency_s: float | None = None  # None: no measurement yet
    ewma_ttft_s: float | None = None
    error_rate: float = 0.0  # EWMA of failures, 0..1
    health_score: float = 1.0  # 0 (circuit open) .. 1

    @property
    def native(self) -> bool:
        return self.engine in NATIVE_ENGINES

    @property
    def fresh_stats(self) -> EngineStats | None:
        """The engine stats when the heartbeat that carried them is recent enough to trust."""
        if self.heartbeat_age_s is None or self.heartbeat_age_s > STALE_STATS_S:
            return None
        return self.stats

    @property
    def pending(self) -> float:
        """Requests queued or running on the node as far as we know: the engine's plus this worker's."""
        stats = self.fresh_stats
        engine = stats.num_requests_running + stats.num_requests_waiting if stats else 0.0
        return engine + self.in_flight

    @property
    def load(self) -> float:
        """``pending`` (counting the request being placed) weighted by KV-cache pressure: up to 2× when full."""
        stats = self.fresh_stats
        kv = min(max(stats.kv_cache_usage_perc, 0.0), 1.0) if stats else 0.0
        return (self.pending + 1.0) * (1.0 + kv)


@dataclass(frozen=True, slots=True)
class RouteRequest:
    model: str
    region: str = ""
    prefix_key: str = ""  # the start of the rendered prompt: requests sharing it share KV-cache blocks
    session_id: str | None = None  # the client's `user` (or session header), when it sends one
    counter: int = 0  # increases by one per routing decision: round-robin turns and tie-breaks


class RoutingPolicy:
    """Base of the policies; a subclass names itself: ``class X(RoutingPolicy, name="x")``."""

    name: ClassVar[str]
    _registry: ClassVar[dict[str, type[RoutingPolicy]]] = {}

    def __init_subclass__(cls, name: str, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if name in RoutingPolicy._registry:
            raise ValueError(f"routing policy {name!r} is registered twice")
        cls.name = name
        RoutingPolicy._registry[name] = cls

    def choose(self, candidates: Sequence[NodeSnapshot], request: RouteRequest) -> NodeSnapshot | None:
        """The node for ``request``, or None when there is no candidate."""
        pool = healthy(candidates)
        if not pool:
            return None
        if len(pool) == 1:
            return pool[0]
        return self.select(pool, request)

    def select(self, pool: Sequence[NodeSnapshot], request: RouteRequest) -> NodeSnapshot:
        """The choice among at least two candidates of equal standing health-wise."""
        raise NotImplementedError


def healthy(candidates: Sequence[NodeSnapshot]) -> Sequence[NodeSnapshot]:
    """The candidates at or above `MIN_HEALTH`; if there are none, the healthiest of them."""
    ok = [n for n in candidates if n.health_score >= MIN_HEALTH]
    if len(ok) == len(candidates):
        return candidates
    if ok:
        return ok
    best = max(n.health_score for n in candidates)
    return [n for n in candidates if n.health_score == best]


def _in_turn(tied: Sequence[NodeSnapshot], request: RouteRequest) -> NodeSnapshot:
    return tied[request.counter % len(tied)]


def _lowest(pool: Sequence[NodeSnapshot], score: dict[str, float], request: RouteRequest) -> NodeSnapshot:
    """The node with the lowest score; ties (within a relative 1e-9) in turn."""
    best = min(score.values())
    tied = [n for n in pool if score[n.id] <= best + 1e-9 * max(1.0, abs(best))]
    return _in_turn(tied, request)


class RoundRobin(RoutingPolicy, name="round_robin"):
    def select(self, pool: Sequence[NodeSnapshot], request: RouteRequest) -> NodeSnapshot:
        return _in_turn(pool, request)


class LeastLoad(RoutingPolicy, name="least_load"):
    def select(self, pool: Sequence[NodeSnapshot], request: RouteRequest) -> NodeSnapshot:
        return _least_load(pool, request)


def _least_load(pool: Sequence[NodeSnapshot], request: RouteRequest) -> NodeSnapshot:
    return _lowest(pool, {n.id: n.load for n in pool}, request)


class Latency(RoutingPolicy, name="latency"):
    def select(self, pool: Sequence[NodeSnapshot], request: RouteRequest) -> NodeSnapshot:
        estimates = {n.id: t for n in pool if (t := _ttft_estimate(n)) is not None}
        if not estimates:
            return _least_load(pool, request)
        # A node we know nothing about is assumed as fast as the fastest: it gets tried, then measured.
        unknown = min(estimates.values())
        score = {n.id: estimates.get(n.id, unknown) * (1 + n.in_flight) for n in pool}
        return _lowest(pool, score, request)


def _ttft_estimate(node: NodeSnapshot) -> float | None:
    if node.ewma_ttft_s is not None:
        return node.ewma_ttft_s
    stats = node.fresh_stats
    return stats.ttft_mean_s if stats else None


class Cost(RoutingPolicy, name="cost"):
    def select(self, pool: Sequence[NodeSnapshot], request: RouteRequest) -> NodeSnapshot:
        # Price tiers, cheapest first, spot before on-demand within a price. The first tier with a node whose
        # engine is not queueing takes the request; when every engine queues, the cheapest tier does anyway.
        tiers: dict[tuple[int, bool], list[NodeSnapshot]] = {}
        for n in pool:
            tiers.setdefault((n.price_per_hour_micros, not n.spot), []).append(n)
        ordered = [tiers[k] for k in sorted(tiers)]
        for tier in ordered:
            room = [n for n in tier if not _queueing(n)]
            if room:
                return _least_load(room, request)
        return _least_load(ordered[0], request)


def _queueing(node: NodeSnapshot) -> bool:
    """The engine said it has requests waiting for a slot: every slot is busy."""
    stats = node.fresh_stats
    return stats is not None and stats.num_requests_waiting > 0


class PrefixAffinity(RoutingPolicy, name="prefix_affinity"):
    epsilon: ClassVar[float] = BOUNDED_LOAD_EPSILON

    def select(self, pool: Sequence[NodeSnapshot], request: RouteRequest) -> NodeSnapshot:
        key = request.prefix_key or request.session_id
        if not key:
            return _least_load(pool, request)
        # Rendezvous hashing: each node's weight for the key; the key's order over the nodes is stable, and a
        # node joining or leaving moves only the keys it wins or held.
        k = _hash64(key.encode())
        order = sorted(pool, key=lambda n: (_mix(k ^ _hash64(n.id.encode())), n.id), reverse=True)
        loads = [n.pending for n in pool]
        capacity = math.ceil((1 + self.epsilon) * (sum(loads) + 1) / len(pool))
        for node in order:
            if node.pending + 1 <= capacity:
                return node
        return _least_load(pool, request)


def _hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _mix(x: int) -> int:
    """SplitMix64's finaliser: a well-spread 64-bit weight from a combined key."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


POLICY_NAMES: tuple[str, ...] = tuple(sorted(RoutingPolicy._registry))
_INSTANCES: dict[str, RoutingPolicy] = {name: cls() for name, cls in RoutingPolicy._registry.items()}


def get_policy(name: str) -> RoutingPolicy:
    """The policy registered as ``name``; `UnknownPolicyError` (a ValueError) for any other name."""
    try:
        return _INSTANCES[name]
    except KeyError:
        raise UnknownPolicyError(name) from None
