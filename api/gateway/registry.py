"""Which nodes can serve a request: an in-memory view of the node table, refreshed in the background.

Until the fleet's routing policies land, the choice is: nodes of the model in the environment's
region first (others only where the environment allows cross-region failover), fewest requests in
flight from this worker, round-robin among ties.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from cic.models import Node, NodeStatus
from cic.models.nodes import NATIVE_ENGINES


@dataclass(frozen=True, slots=True)
class NodeView:
    id: str
    model: str
    region: str
    base_url: str
    engine: str
    served_model: str
    api_key_env: str

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
            )
            for n in rows
        ]


class NodeRegistry:
    def __init__(self) -> None:
        self._by_model: dict[str, list[NodeView]] = {}
        self.in_flight: dict[str, int] = defaultdict(int)
        self._rr = itertools.count()

    def replace(self, nodes: list[NodeView]) -> None:
        by_model: dict[str, list[NodeView]] = defaultdict(list)
        for n in sorted(nodes, key=lambda n: n.id):
            by_model[n.model].append(n)
        self._by_model = dict(by_model)

    def nodes(self) -> list[NodeView]:
        return [n for ns in self._by_model.values() for n in ns]

    def pick(
        self, model: str, region: str, *, cross_region: bool, exclude: frozenset[str] = frozenset()
    ) -> NodeView | None:
        candidates = self._by_model.get(model)
        if not candidates:
            return None
        local = [n for n in candidates if n.region == region and n.id not in exclude]
        pool = local or ([n for n in candidates if n.id not in exclude] if cross_region else [])
        if not pool:
            return None
        if len(pool) == 1:
            return pool[0]
        least = min(self.in_flight[n.id] for n in pool)
        tied = [n for n in pool if self.in_flight[n.id] == least]
        return tied[next(self._rr) % len(tied)]
