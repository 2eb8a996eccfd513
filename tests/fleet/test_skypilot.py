"""The sky.Task for a GPU node, the run command it executes, and SkyPilotLauncher against a stand-in SDK.

Nothing here reaches SkyPilot's API server or a cloud: ``sky.Task``/``sky.Resources`` work offline, and the
launcher's SDK calls go to ``FakeSky``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]

from cic.fleet.launcher import ClusterState, LauncherError
from cic.fleet.skypilot import (
    RegionMap,
    SkyPilotLauncher,
    attach_secrets,
    build_task,
    load_template,
    render_task_yaml,
)
from tests.fleet.helpers import HF_TOKEN, TOKEN, no_secrets, spec

sky = pytest.importorskip("sky")
StatusResponse = pytest.importorskip("sky.schemas.api.responses").StatusResponse


def test_build_task_resources_and_envs() -> None:
    task = build_task(spec(region="in-mumbai", accelerators="A10G:2"))
    [res] = list(task.resources)
    assert res.use_spot is True
    assert res.accelerators == {"A10G": 2}
    assert str(res.cloud) == "AWS"
    assert res.region == "ap-south-1"
    assert res.disk_size == 256
    assert res.ports == ["8000"]
    assert task.envs["MODEL"] == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert task.envs["SERVED_MODEL_NAME"] == "llama-3-8b"
    assert task.envs["CIC_REGION"] == "in-mumbai"
    assert task.envs["TENSOR_PARALLEL_SIZE"] == "2"
    setup = str(task.setup)
    assert "pip install" in setup and "vllm==${VLLM_VERSION}" in setup
    assert "${CIC_PACKAGE_SPEC}" in setup


def test_built_task_carries_no_secrets() -> None:
    task = build_task(spec())
    assert task.secrets == {}
    dumped = yaml.safe_dump(task.to_yaml_config())
    no_secrets(dumped)
    assert "secrets" not in task.to_yaml_config()
    no_secrets(repr(task))


def test_attached_secrets_reach_the_task_but_not_the_rendered_yaml() -> None:
    task = attach_secrets(build_task(spec()), spec())
    assert {k: v.get_secret_value() for k, v in task.secrets.items()} == {
        "CIC_NODE_TOKEN": TOKEN,
        "HF_TOKEN": HF_TOKEN,
    }
    text = render_task_yaml(task)
    no_secrets(text)
    rendered = yaml.safe_load(text)
    assert rendered["secrets"] == {"CIC_NODE_TOKEN": "<redacted>", "HF_TOKEN": "<redacted>"}
    assert rendered["resources"]["infra"] == "aws/us-east-1"
    assert rendered["envs"]["CIC_LAUNCH_ID"] == "lch_0123456789abcdef0123"
    assert "_user_specified_yaml" not in rendered
    no_secrets(yaml.safe_dump(task.to_yaml_config(use_user_specified_yaml=True)))
    no_secrets(repr(task))


def test_without_hf_token_only_the_node_token_is_sent() -> None:
    task = attach_secrets(build_task(spec(hf_token=None)), spec(hf_token=None))
    assert set(task.secrets) == {"CIC_NODE_TOKEN"}


def test_template_launches_by_hand_too() -> None:
    """``sky launch infra/skypilot/vllm-node.yaml --env … --secret …`` passes SkyPilot's schema."""
    config = load_template()
    envs = [
        ("MODEL", "meta-llama/Meta-Llama-3-8B-Instruct"),
        ("SERVED_MODEL_NAME", "llama-3-8b"),
        ("CIC_REGION", "us-east"),
        ("CIC_CONTROL_PLANE", "https://cp.example.com"),
        ("CIC_PACKAGE_SPEC", "crosslogic-inference-cloud"),
    ]
    task = sky.Task.from_yaml_config(config, env_overrides=envs, secrets_overrides=[("CIC_NODE_TOKEN", TOKEN)])
    assert task.envs["VLLM_VERSION"] == "0.11.0"
    [res] = list(task.resources)
    assert res.use_spot is True


def run_script(task: Any, home: Path) -> tuple[list[str], str]:
    """Run the task's ``run`` under bash with a stand-in ``cic``: its arguments, and the token in its env."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    fake = home / ".cic" / "agent" / "bin" / "cic"
    fake.parent.mkdir(parents=True)
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\necho "token=${CIC_NODE_TOKEN:-}"\n')
    fake.chmod(0o755)
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), **task.envs}
    env.update({k: v.get_secret_value() for k, v in task.secrets.items()})
    out = subprocess.run([bash, "-c", task.run], env=env, capture_output=True, text=True, check=True, timeout=30)
    *args, token = out.stdout.splitlines()
    return args, token


def test_run_command_starts_the_agent_with_vllm_args(tmp_path: Path) -> None:
    s = spec(accelerators="A10G:2", extra_envs={"CIC_ADVERTISE_URL": "http://203.0.113.7:8000"})
    task = attach_secrets(build_task(s), s)
    task.update_envs({"VLLM_EXTRA_ARGS": "--gpu-memory-utilization 0.92 --enable-prefix-caching"})
    args, token = run_script(task, tmp_path)
    assert args == [
        "agent",
        "--control-plane",
        "https://cp.example.com",
        "--region",
        "us-east",
        "--provider",
        "aws",
        "--model",
        "llama-3-8b",
        "--vllm-model",
        "meta-llama/Meta-Llama-3-8B-Instruct",
        "--vllm-python",
        f"{tmp_path}/.cic/vllm/bin/python",
        "--port",
        "8000",
        "--gpu",
        "A10G:2",
        "--launch-id",
        "lch_0123456789abcdef0123",
        "--advertise-url",
        "http://203.0.113.7:8000",
        "--spot",
        "--spot-cloud",
        "aws",
        "--",
        "--tensor-parallel-size",
        "2",
        "--max-model-len",
        "8192",
        "--gpu-memory-utilization",
        "0.92",
        "--enable-prefix-caching",
    ]
    assert token == f"token={TOKEN}"  # from the environment (the agent's --token envvar), not argv


def test_run_command_leaves_out_empty_options(tmp_path: Path) -> None:
    # On-demand, on a cloud without a metadata lookup here (Kubernetes), no launch id, no context length.
    s = spec(spot=False, launch_id=None, max_model_len=None, region="eu-west")
    regions = RegionMap.for_cloud("aws", {"eu-west": "kubernetes/prod-eu"})
    args, _ = run_script(attach_secrets(build_task(s, regions=regions), s), tmp_path)
    for absent in ("--launch-id", "--max-model-len", "--advertise-url", "--spot", "--spot-cloud"):
        assert absent not in args
    assert args[args.index("--provider") + 1] == "kubernetes"
    assert args[-3:] == ["--", "--tensor-parallel-size", "1"]


# --- SkyPilotLauncher over a stand-in SDK --------------------------------------------------------------


class FakeSky:
    """The slice of ``sky`` the launcher calls; requests complete at once."""

    StatusRefreshMode = sky.StatusRefreshMode

    def __init__(self, records: list[Any] | None = None, error: Exception | None = None) -> None:
        self.records = records or []
        self.error = error
        self.calls: list[tuple[str, Any, dict[str, Any]]] = []

    def _call(self, name: str, arg: Any, **kw: Any) -> str:
        self.calls.append((name, arg, kw))
        if self.error is not None:
            raise self.error
        return f"req-{name}-{len(self.calls)}"

    def launch(self, task: Any, **kw: Any) -> str:
        return self._call("launch", task, **kw)

    def down(self, cluster_name: str) -> str:
        return self._call("down", cluster_name)

    def status(self, **kw: Any) -> str:
        return self._call("status", None, **kw)

    def get(self, request_id: str) -> Any:
        self.calls.append(("get", request_id, {}))
        return self.records if request_id.startswith("req-status") else None

    def stream_and_get(self, request_id: str) -> Any:
        self.calls.append(("stream_and_get", request_id, {}))


def test_launch_submits_the_task_with_secrets_and_autodown(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeSky()
    launcher = SkyPilotLauncher(sdk=fake)
    with caplog.at_level(logging.DEBUG):
        handle = launcher.launch(spec())
    [(name, task, kw)] = fake.calls
    assert name == "launch"
    assert kw == {
        "cluster_name": "cic-llama-3-8b-us-east-a1b2c3",
        "retry_until_up": False,
        "idle_minutes_to_autostop": 10,
        "down": True,
    }
    assert task.secrets["CIC_NODE_TOKEN"].get_secret_value() == TOKEN
    assert (handle.cluster_name, handle.request_id) == ("cic-llama-3-8b-us-east-a1b2c3", "req-launch-1")
    assert any(r.getMessage() == "launching cluster" for r in caplog.records)
    for record in caplog.records:
        no_secrets(record.getMessage())
        no_secrets(repr(record.__dict__))
    launcher.wait(handle)
    assert fake.calls[-1] == ("stream_and_get", "req-launch-1", {})


def test_launch_errors_become_launcher_errors_without_secrets() -> None:
    launcher = SkyPilotLauncher(sdk=FakeSky(error=RuntimeError("Failed to connect to API server\nmore")))
    with pytest.raises(LauncherError, match=r"Failed to connect to API server$") as exc:
        launcher.launch(spec())
    no_secrets(str(exc.value))


def test_autodown_can_be_turned_off() -> None:
    fake = FakeSky()
    SkyPilotLauncher(sdk=fake, autodown_idle_minutes=None, retry_until_up=True).launch(spec())
    kw = fake.calls[0][2]
    assert (kw["down"], kw["idle_minutes_to_autostop"], kw["retry_until_up"]) == (False, None, True)


def test_status_maps_skypilot_records() -> None:
    records: list[Any] = [
        {"name": "up", "status": sky.ClusterStatus.UP, "cluster_ever_up": True, "init_kind": None},
        {"name": "booting", "status": sky.ClusterStatus.INIT, "cluster_ever_up": False, "init_kind": "launching"},
        {"name": "sick", "status": sky.ClusterStatus.INIT, "cluster_ever_up": True, "init_kind": "unhealthy"},
        {"name": "stopped", "status": sky.ClusterStatus.STOPPED, "cluster_ever_up": True, "init_kind": None},
        {"name": "someone-elses", "status": sky.ClusterStatus.UP, "cluster_ever_up": True, "init_kind": None},
    ]
    # The SDK's own record type (a pydantic model), as sky.get(sky.status(...)) returns them.
    records[0] = StatusResponse(
        name="up",
        launched_at=0,
        status=sky.ClusterStatus.UP,
        autostop=-1,
        to_down=True,
        cluster_hash="h",
        cluster_ever_up=True,
        user_hash="u",
        user_name="ops",
        workspace="default",
        is_managed=False,
        nodes=1,
    )
    fake = FakeSky(records)
    states = SkyPilotLauncher(sdk=fake, refresh="FORCE").status(["up", "booting", "sick", "stopped", "gone", "up"])
    assert states == {
        "up": ClusterState.running,
        "booting": ClusterState.launching,
        "sick": ClusterState.unhealthy,
        "stopped": ClusterState.stopped,
        "gone": ClusterState.missing,
    }
    assert fake.calls[0][2] == {
        "cluster_names": ["up", "booting", "sick", "stopped", "gone"],
        "refresh": sky.StatusRefreshMode.FORCE,
    }
    assert SkyPilotLauncher(sdk=FakeSky()).status([]) == {}


def test_status_failure_is_a_launcher_error() -> None:
    with pytest.raises(LauncherError, match="SkyPilot status failed"):
        SkyPilotLauncher(sdk=FakeSky(error=ConnectionError("refused"))).status(["a"])


def test_down_is_idempotent() -> None:
    fake = FakeSky()
    SkyPilotLauncher(sdk=fake).down("cic-a")
    assert [c[:2] for c in fake.calls] == [("down", "cic-a"), ("get", "req-down-1")]
    gone = FakeSky(error=sky.exceptions.ClusterDoesNotExist("Cluster 'cic-a' does not exist."))
    SkyPilotLauncher(sdk=gone).down("cic-a")  # no error
    with pytest.raises(LauncherError, match="SkyPilot down of 'cic-a' failed: boom"):
        SkyPilotLauncher(sdk=FakeSky(error=RuntimeError("boom"))).down("cic-a")
