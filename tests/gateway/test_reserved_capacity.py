"""Reserved capacity and load shedding: when the model's nodes are saturated, an org's reserved traffic
gets in up to its reservation; shared traffic waits briefly and is shed with 503 + retry-after."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sqlmodel import Session

from cic.models import Node
from cic.models.types import utcnow
from cic.services import reservations
from cic.services.authz import Actor
from tests.gateway.conftest import add_node, client, make_tenant
from tests.servers import Sims, wait_until

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "ping"}]


def _set_waiting(session: Session, node_id: str, waiting: int) -> None:
    node = session.get(Node, node_id)
    assert node is not None
    node.load = {"num_requests_running": 8, "num_requests_waiting": waiting}
    node.last_heartbeat_at = utcnow()
    session.add(node)
    session.commit()


def test_reserved_traffic_admitted_shared_shed(sims: Sims, serve, session: Session, pepper: str) -> None:
    sim = sims.start(model="llama-3-8b")
    node_id = add_node(session, sim)
    reserved = make_tenant(session, pepper)
    shared = make_tenant(session, pepper)
    reservations.set_reservation(
        session, Actor.system(), reserved.org_id, model="llama-3-8b", region="us-east", tokens_per_s=5
    )  # 300 tokens a minute
    session.commit()
    with serve(shed_queue_s=0.3) as base:
        c_shared = client(base, shared.key)
        assert c_shared.chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_tokens=2).choices
        _set_waiting(session, node_id, 40)  # the fleet reports a deep queue

        def shed() -> bool:
            try:
                c_shared.chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_tokens=2)
            except openai.APIStatusError as exc:
                return exc.status_code == 503
            return False

        wait_until(shed, timeout=5, what="shared traffic shed once the registry sees the queue")
        r = httpx.post(
            f"{base}/v1/chat/completions",
            headers={"Authorization": f"Bearer {shared.key}"},
            json={"model": "llama-3-8b", "messages": MESSAGES, "max_tokens": 2},
        )
        assert r.status_code == 503 and r.json()["error"]["code"] == "capacity_exhausted"
        assert int(r.headers["retry-after"]) >= 1

        # Reserved traffic gets in, up to its reservation (each request reserves ~10 + 2 tokens).
        statuses = []
        for _ in range(40):
            r = httpx.post(
                f"{base}/v1/chat/completions",
                headers={"Authorization": f"Bearer {reserved.key}"},
                json={"model": "llama-3-8b", "messages": MESSAGES, "max_tokens": 2},
            )
            statuses.append(r.status_code)
            if r.status_code != 200:
                break
        admitted = statuses.count(200)
        assert statuses[-1] == 503 and 10 <= admitted < 40, statuses

        _set_waiting(session, node_id, 0)  # the queue drains: everyone is served again
        wait_until(lambda: not shed(), timeout=5, what="shared traffic back")


def test_reservations_are_operator_only(session: Session, pepper: str) -> None:
    tenant = make_tenant(session, pepper)
    from cic.errors import PermissionDenied
    from cic.models import Org

    org = session.get(Org, tenant.org_id)
    assert org is not None
    with pytest.raises(PermissionDenied):
        reservations.set_reservation(
            session, Actor.user("usr_nobody"), org.id, model="llama-3-8b", region="us-east", tokens_per_s=1
        )
