"""The reconciler over the real database: deployments in, launches out, a preempted spot node replaced."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from cic.fleet.launcher import FakeLauncher
from cic.fleet.reconciler import FleetConfig, reconcile_once
from cic.fleet.store import DbLaunchStore
from cic.models import Deployment, Launch, NodeToken
from cic.models.nodes import NodeRegister
from cic.services import nodes


def test_reconcile_over_database(engine: Engine, session: Session, pepper: str) -> None:
    session.add(Deployment(model_id="llama-3-8b", region_code="us-east", replicas=2, accelerators="A10G:1"))
    session.commit()
    store = DbLaunchStore(engine, pepper)
    launcher = FakeLauncher()
    config = FleetConfig(control_plane_url="https://cp.example", package_spec="crosslogic-inference-cloud==0.1.0")

    first = reconcile_once(store, launcher, config)
    assert [o.ok for o in first.outcomes] == [True, True]
    launches = session.exec(select(Launch)).all()
    assert len(launches) == 2 and {x.status for x in launches} == {"launching"}
    assert all(spec.spot and spec.hf_repo == "meta-llama/Meta-Llama-3-8B-Instruct" for spec in launcher.launched)
    assert len(session.exec(select(NodeToken)).all()) == 2  # one bootstrap token per launch, stored hashed
    assert all(spec.bootstrap_token.startswith("clnt_") for spec in launcher.launched)

    node_of: dict[str, str] = {}
    for spec in launcher.launched:  # each cluster boots; its agent registers with the launch's token
        launcher.up(spec.cluster_name)
        node = nodes.register_node(
            session,
            spec.bootstrap_token,
            NodeRegister(
                model="llama-3-8b",
                region="us-east",
                endpoint_url="http://10.0.0.9:8000",
                spot=True,
                launch_id=spec.launch_id,
            ),
            pepper=pepper,
        )
        node_of[spec.cluster_name] = node.id
    session.commit()
    reconcile_once(store, launcher, config)
    session.expire_all()
    assert {x.status for x in session.exec(select(Launch))} == {"running"}

    lost = launcher.launched[0].cluster_name
    launcher.preempt(lost)  # the cloud takes a spot VM back; its agent drained and left
    nodes.node_deregister(session, node_of[lost])
    session.commit()
    third = reconcile_once(store, launcher, config)
    session.expire_all()
    statuses = sorted(x.status for x in session.exec(select(Launch)))
    assert statuses == ["launching", "preempted", "running"], (statuses, third.decisions)
    assert len(launcher.launched) == 3 and launcher.launched[-1].spot
