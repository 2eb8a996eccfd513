from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from agent.simulator import RunningSim
from api.server import HTTP_PROTOCOL
from cic.models import Plan, UsageRecord
from cic.models.environments import EnvironmentCreate
from cic.models.keys import ApiKeyCreate
from cic.models.nodes import NodeCreate
from cic.services import environments, keys, nodes, orgs, users
from cic.services.authz import Actor
from cic.settings import Settings
from tests.servers import LoopThread, Sims, api_server, wait_until

__all__ = ["Tenant", "add_node", "client", "make_tenant", "usage_records"]


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture
def sims(loop_thread: LoopThread) -> Iterator[Sims]:
    s = Sims(loop_thread)
    yield s
    s.stop_all()


@pytest.fixture
def gateway_settings(settings: Settings, tmp_path: Any) -> Settings:
    return settings.model_copy(update={"spool_dir": tmp_path / "spool", "node_refresh_s": 0.2})


@pytest.fixture
def serve(loop_thread: LoopThread, gateway_settings: Settings, engine: Engine) -> Any:
    """``with serve() as base_url:`` runs the platform app; start it after adding the nodes it should see.
    ``serve(http="httptools")`` runs it under uvicorn's own protocol instead of the API's (api/server.py)."""

    def _serve(http: str = HTTP_PROTOCOL, **overrides: Any) -> Any:
        return api_server(loop_thread, gateway_settings.model_copy(update=overrides), http=http)

    return _serve


@dataclass
class Tenant:
    org_id: str
    org_slug: str
    env_id: str
    key: str
    key_id: str


def make_tenant(
    session: Session,
    pepper: str,
    *,
    region: str = "us-east",
    models: tuple[str, ...] = ("llama-3-8b",),
    cross_region: bool = False,
    env: str = "prod",
    plan: Plan = Plan.enterprise,
    key_limits: dict[str, int] | None = None,
) -> Tenant:
    """An org (enterprise by default: no plan limits, unless a test sets some), an environment, a key."""
    owner = users.create_user(session, email=f"owner-{secrets.token_hex(4)}@example.com", password=None)
    actor = Actor.user(owner.id)
    org = orgs.create_org(session, actor, name=f"Tenant {owner.id[-6:]}", owner=owner, plan=plan)
    e = environments.create_env(
        session,
        actor,
        org.id,
        EnvironmentCreate(name=env, region=region, models=list(models), allow_cross_region_failover=cross_region),
    )
    created = keys.create_key(
        session,
        actor,
        org.id,
        ApiKeyCreate.model_validate({"name": "test", "environment": env, **(key_limits or {})}),
        pepper=pepper,
    )
    session.commit()
    return Tenant(org.id, org.slug, e.id, created.plaintext, created.key.id)


@pytest.fixture
def tenant(session: Session, pepper: str) -> Tenant:
    return make_tenant(session, pepper, models=("llama-3-8b", "mistral-7b", "all-minilm-l6-v2"))


def add_node(
    session: Session, sim: RunningSim, *, model: str = "llama-3-8b", region: str = "us-east", served_model: str = ""
) -> str:
    node = nodes.add_static_node(
        session, Actor.system(), NodeCreate(model=model, region=region, endpoint_url=sim.url, served_model=served_model)
    )
    session.commit()
    return node.id


def client(base: str, key: str, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=30, **kw)


def usage_records(session: Session, expected: int, timeout: float = 10.0) -> list[UsageRecord]:
    """Wait until exactly ``expected`` usage records are in the database (the meter writes in batches)."""

    def check() -> list[UsageRecord] | None:
        session.expire_all()
        rows = list(session.exec(select(UsageRecord).order_by(col(UsageRecord.id))))
        assert len(rows) <= expected, f"more usage records than requests: {len(rows)} > {expected}"
        return rows if len(rows) == expected else None

    return wait_until(check, timeout=timeout, what=f"{expected} usage records")
