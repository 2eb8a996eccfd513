"""Cache invalidation across processes: a change to a key or environment reaches every API worker.

Services mark what they changed with ``invalidate(session, ...)``; once the transaction commits, the
marks are handed to the session's publisher (``attach_publisher``): Redis pub/sub in a Redis
deployment, a direct call into the process's own caches otherwise. Publishing after the commit (never
before) means a worker that reloads on the message reads the committed state.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from sqlalchemy import event
from sqlmodel import Session

log = logging.getLogger(__name__)

CHANNEL = "cic:invalidate"
_PENDING = "cic_invalidate"
_PUBLISHER = "cic_publisher"


@dataclass
class Invalidation:
    keys: set[str] = field(default_factory=set)
    envs: set[str] = field(default_factory=set)
    orgs: set[str] = field(default_factory=set)

    def to_json(self) -> str:
        return json.dumps({"keys": sorted(self.keys), "envs": sorted(self.envs), "orgs": sorted(self.orgs)})

    @classmethod
    def from_json(cls, raw: str | bytes) -> Invalidation:
        data: dict[str, Any] = json.loads(raw)
        return cls(keys=set(data.get("keys", ())), envs=set(data.get("envs", ())), orgs=set(data.get("orgs", ())))


Publisher = Callable[[Invalidation], None]


def invalidate(
    session: Session, *, keys: tuple[str, ...] = (), envs: tuple[str, ...] = (), orgs: tuple[str, ...] = ()
) -> None:
    pending: Invalidation = session.info.setdefault(_PENDING, Invalidation())
    pending.keys.update(keys)
    pending.envs.update(envs)
    pending.orgs.update(orgs)


def attach_publisher(session: Session, publisher: Publisher | None) -> Session:
    if publisher is not None:
        session.info[_PUBLISHER] = publisher
    return session


@event.listens_for(Session, "after_commit")
def _publish_after_commit(session: Session) -> None:
    pending: Invalidation | None = session.info.pop(_PENDING, None)
    publisher: Publisher | None = session.info.get(_PUBLISHER)
    if pending is None or publisher is None:
        return
    try:
        publisher(pending)
    except redis.RedisError as exc:
        # The change is committed; caches fall back to their TTL. Say so loudly.
        log.error("could not publish cache invalidation; workers will see it within the cache TTL: %s", exc)


@event.listens_for(Session, "after_rollback")
def _drop_on_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)


def redis_publisher(client: redis.Redis) -> Publisher:
    def publish(inv: Invalidation) -> None:
        client.publish(CHANNEL, inv.to_json())

    return publish
