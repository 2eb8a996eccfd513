"""Gateway benchmark: the CrossLogic gateway vs the LiteLLM proxy vs the upstream alone, on this machine.

One command, ``.venv/bin/python bench/gateway.py`` (see ``--help`` and bench/README.md), starts

* a fast vLLM-protocol upstream: the project's vLLM simulator (``agent.simulator``) with zero latency;
* our gateway, ``cic api --workers 2``, on a fresh PostgreSQL database and Redis, set up with the ``cic`` CLI
  (org, environment, key, a static node pointing at the simulator) — authentication and metering on;
* the LiteLLM proxy (``litellm --num_workers 2``, from its own venv ``bench/.venv-litellm``) routing the same
  model to the same simulator, with a master key and Redis, no database;

drives each of them with ``wrk`` (bench/chat.lua) — non-stream and stream chat completions at concurrency 1
and 50 — and prints one markdown table (RPS, p50/p99 latency, latency added over the upstream, server CPU per
request, errors), the gateway/LiteLLM throughput ratio, and a metering check (one usage record per request).
Raw numbers go to ``bench/results/gateway-<timestamp>.json``.

``--soak N`` instead drives N requests through the gateway alone at concurrency 50 and reports the workers'
resident memory at start, every 10 % and at the end.

Every process runs in its own process group and is stopped on exit, on errors and on Ctrl-C; the database
is dropped at the end (unless ``--keep-db``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = ROOT / ".venv" / "bin" / "python"
CIC = ROOT / ".venv" / "bin" / "cic"
LUA_SCRIPT = BENCH / "chat.lua"
RESULTS = BENCH / "results"
LITELLM_VENV = BENCH / ".venv-litellm"
LITELLM_SPEC = "litellm[proxy]==1.106.2"  # what `pip install 'litellm[proxy]'` resolves to here (RECIPES.md)

MODEL = "llama-3-8b"
HOST = "127.0.0.1"
PG_ADMIN_URL = "postgresql://postgres:postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
LITELLM_MASTER_KEY = "sk-bench-master"
CHAT_PATH = "/v1/chat/completions"
KEY_RPM = 1_000_000_000  # non-binding key limits (--limits key): the limiter runs, never refuses
KEY_TPM = 2_000_000_000

MODES = ("non-stream", "stream")
TARGETS = ("direct", "gateway", "litellm")
SERVICE_COMMS = frozenset({"postgres", "redis-server"})  # shared services whose CPU is reported beside the targets
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class BenchError(RuntimeError):
    """A step failed; the message says which and why."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- processes ------------------------------------------------------------------------------------------------


class Processes:
    """The servers this run started, each the leader of its own process group; stopped as whole groups."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, TextIO] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        out = (self.log_dir / f"{name}.log").open("w")
        self._logs[name] = out
        log(f"start {name}: {' '.join(argv)}")
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=ROOT,
            start_new_session=True,
        )  # fmt: skip
        self.procs[name] = proc
        return proc

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def check(self, name: str) -> None:
        """Raise with the end of its log if the process has exited."""
        proc = self.procs[name]
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with status {proc.returncode}:\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, name: str, timeout: float = 15.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        pgid = proc.pid  # leader of its own session, so its pid is the group id
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"{name} did not stop in {timeout:.0f}s; killing its process group")
        # Anything left in the group (workers of a dead supervisor) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        out = self._logs.pop(name, None)
        if out is not None:
            out.close()

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_for(what: str, ready: Callable[[], bool], timeout: float, procs: Processes, name: str) -> None:
    """Poll ``ready`` until it is true; fail early if the process dies, or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        procs.check(name)
        if ready():
            return
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not ready after {timeout:.0f}s; log:\n{procs.log_tail(name)}")
        time.sleep(0.2)


def http_status(url: str, *, body: bytes | None = None, token: str = "", timeout: float = 5.0) -> int:
    """The HTTP status of one request (0 when nothing answered)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, headers=headers, method="POST" if body else "GET")  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback only
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, urllib.error.URLError):
        return 0


def chat_body(max_tokens: int, stream: bool = False) -> bytes:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hello, how are you?"}],
        "max_tokens": max_tokens,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


# --- /proc accounting -----------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name: [state, ppid, ...]; None if the process is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return data[data.rindex(")") + 2 :].split()


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        fields = _stat_fields(pid)
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        if _stat_fields(pid) is not None:
            tree.append(pid)
            todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of the processes, their reaped children included."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ticks / CLK_TCK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
    return total


def service_pids() -> list[int]:
    """PostgreSQL and Redis server processes (shared with anything else on the machine)."""
    pids = []
    for pid in _all_pids():
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() in SERVICE_COMMS:
                pids.append(pid)
    return pids


def system_busy_seconds() -> float:
    """CPU time the whole machine spent not idle, summed over cores."""
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK


def wait_for_quiet(max_wait: float, *, cores: float = 0.25, window: float = 1.0) -> float:
    """Before a run (servers idle): wait up to ``max_wait`` s for the machine's busy CPU to drop below ``cores``
    (someone else's tests, say). Returns the last load seen."""
    deadline = time.monotonic() + max_wait
    announced = False
    while True:
        before = system_busy_seconds()
        time.sleep(window)
        load = (system_busy_seconds() - before) / window
        if load < cores or time.monotonic() >= deadline:
            if announced:
                log(f"machine load {load:.2f} cores; going on")
            return load
        if not announced:
            log(f"machine busy ({load:.2f} cores outside the benchmark); waiting up to {max_wait:.0f}s for quiet")
            announced = True


def worker_pids(root: int) -> list[int]:
    """The server's worker processes (multiprocessing children); the whole tree if there are none."""
    workers = []
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                workers.append(pid)
    return workers or process_tree(root)


def connections_per_process(pids: list[int], port: int) -> list[int]:
    """Established TCP connections to local ``port`` held by each process (how the kernel spread the clients)."""
    established: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "01" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    established.add(cols[9])  # socket inode
    counts = []
    for pid in pids:
        inodes = set()
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    link = os.readlink(fd)
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
        counts.append(len(inodes & established))
    return counts


def settle(root: int, *, quiet_cores: float = 0.05, window: float = 0.5, timeout: float = 30.0) -> None:
    """Wait until the process tree is idle (start-up work done), so it does not count against a run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_seconds(process_tree(root))
        time.sleep(window)
        if (cpu_seconds(process_tree(root)) - before) / window < quiet_cores:
            return


@dataclass
class CpuUse:
    """CPU seconds spent during one run, by whom."""

    target: float
    upstream: float
    services: float
    other_cores: float  # the rest of the machine's busy time (wrk excluded), per second of the run
    processes_gone: int  # target processes that existed at the start and not at the end


class CpuMeter:
    """Starts counting at construction: the target's process tree, the upstream's, PostgreSQL + Redis, the machine."""

    def __init__(self, target_root: int, upstream_root: int | None) -> None:
        self.target_root = target_root
        self.target_pids = process_tree(target_root)
        self.upstream_pids = process_tree(upstream_root) if upstream_root is not None else []
        self.service_pids = service_pids()
        self._start = self._read()

    def _read(self) -> tuple[float, float, float, float]:
        return (
            cpu_seconds(process_tree(self.target_root)),
            cpu_seconds(self.upstream_pids),
            cpu_seconds(self.service_pids),
            system_busy_seconds(),
        )

    def stop(self, load: Load) -> CpuUse:
        # The target's tree is re-read at both ends (a worker may be replaced); at the start it is the same tree.
        end = self._read()
        target, upstream, services, busy = (b - a for a, b in zip(self._start, end, strict=True))
        other = max(0.0, busy - target - upstream - services - load.wrk_cpu_s) / max(load.wall_s, 1e-9)
        gone = len(set(self.target_pids) - set(process_tree(self.target_root)))
        return CpuUse(target, upstream, services, other, gone)


# --- load generation (wrk) ------------------------------------------------------------------------------------


@dataclass
class Load:
    """What one wrk run saw."""

    issued: int
    answered: int
    ok: int
    non2xx: int
    socket_errors: int
    elapsed_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    wrk_cpu_s: float
    wall_s: float  # the whole wrk run, drain and stop included
    connect_errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)  # non-2xx status -> count
    error_sample: str = ""  # the first non-2xx answer: status and start of the body

    @property
    def rps(self) -> float:
        return self.answered / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def unanswered(self) -> int:
        """Requests sent but never answered (their connection was dropped, or they hung)."""
        return self.issued - self.answered

    @property
    def errors(self) -> int:
        """Failed requests: non-2xx answers, requests never answered, connections refused."""
        return self.non2xx + self.unanswered + self.connect_errors


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    apt = shutil.which("apt-get")
    if apt is None:
        raise BenchError("wrk is not installed and apt-get is not available; install wrk")
    log("installing wrk with apt-get")
    if subprocess.run([apt, "install", "-y", "wrk"], capture_output=True, check=False).returncode != 0:
        subprocess.run([apt, "update"], capture_output=True, check=False)
        subprocess.run([apt, "install", "-y", "wrk"], capture_output=True, check=True)
    path = shutil.which("wrk")
    if path is None:
        raise BenchError("apt-get install wrk did not provide a wrk command")
    return path


class Wrk:
    def __init__(self, binary: str, work_dir: Path, max_tokens: int, drain_timeout: float) -> None:
        self.binary = binary
        self.work_dir = work_dir
        self.max_tokens = max_tokens
        self.drain_timeout = drain_timeout
        self._runs = 0

    def run(
        self,
        base_url: str,
        *,
        token: str,
        stream: bool,
        concurrency: int,
        seconds: float = 0,
        limit: int = 0,
        during: Callable[[], None] | None = None,
    ) -> Load:
        """Run until ``seconds`` have passed or ``limit`` requests were issued, then wait for every answer.
        ``during`` is called once, a second into the run."""
        self._runs += 1
        done_file = self.work_dir / f"wrk-{self._runs}.done"
        draining_file = Path(f"{done_file}.draining")
        # wrk's -d is only a safety cap: the script stops issuing at the deadline/limit and signals when drained.
        cap = int(seconds + 120) if seconds else int(max(300, limit * 0.05))
        env = os.environ | {
            "BENCH_PATH": CHAT_PATH,
            "BENCH_MODEL": MODEL,
            "BENCH_AUTH": token,
            "BENCH_STREAM": "1" if stream else "0",
            "BENCH_MAX_TOKENS": str(self.max_tokens),
            "BENCH_SECONDS": str(seconds),
            "BENCH_LIMIT": str(limit),
            "BENCH_DONE_FILE": str(done_file),
        }
        # --timeout sizes wrk's latency histogram (8 bytes per microsecond): keep it to a minute, not the cap.
        argv = [
            self.binary,
            "-t1",
            f"-c{concurrency}",
            f"-d{cap}s",
            "--timeout",
            f"{min(cap, 60)}s",
            "-s",
            str(LUA_SCRIPT),
        ]
        usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        proc = subprocess.Popen(
            [*argv, base_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True
        )
        try:
            deadline = time.monotonic() + cap + 10
            drain_deadline: float | None = None
            while not done_file.exists() and proc.poll() is None and time.monotonic() < deadline:
                if during is not None and time.monotonic() - started > 1.0:
                    during()
                    during = None
                if drain_deadline is None and draining_file.exists():
                    drain_deadline = time.monotonic() + self.drain_timeout
                if drain_deadline is not None and time.monotonic() > drain_deadline:
                    log(f"wrk: requests still unanswered {self.drain_timeout:.0f}s after the end; stopping it")
                    break
                time.sleep(0.02)
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # wrk prints its summary (and runs done()) on SIGINT
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        wall = time.monotonic() - started
        usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        wrk_cpu = (usage_after.ru_utime + usage_after.ru_stime) - (usage_before.ru_utime + usage_before.ru_stime)
        line = next((ln for ln in out.decode(errors="replace").splitlines() if ln.startswith("BENCH_RESULT ")), None)
        if line is None:
            raise BenchError(f"wrk printed no result (status {proc.returncode}):\n{out.decode()}\n{err.decode()}")
        raw = json.loads(line.removeprefix("BENCH_RESULT "))
        return Load(
            issued=raw["issued"],
            answered=raw["answered"],
            ok=raw["ok"],
            non2xx=raw["non2xx"],
            socket_errors=raw["connect_errors"] + raw["read_errors"] + raw["write_errors"],
            elapsed_s=raw["elapsed_s"],
            p50_ms=raw["p50_us"] / 1000,
            p90_ms=raw["p90_us"] / 1000,
            p99_ms=raw["p99_us"] / 1000,
            mean_ms=raw["mean_us"] / 1000,
            max_ms=raw["max_us"] / 1000,
            wrk_cpu_s=wrk_cpu,
            wall_s=wall,
            connect_errors=raw["connect_errors"],
            statuses=raw["statuses"],
            error_sample=raw["error_sample"],
        )


# --- targets --------------------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    base_url: str
    token: str
    process: str  # name in Processes
    answered: int = 0  # every request wrk got an answer to (warm-ups included)
    ok: int = 0
    rss_start: int = 0
    rss_end: int = 0


def start_upstream(procs: Processes) -> Target:
    """The vLLM simulator with zero latency (``cic node sim`` when the CLI has it, else agent.simulator.run)."""
    port = free_port()
    has_node_cli = "node" in _cic_help()
    if has_node_cli:
        argv = [str(CIC), "node", "sim", "--model", MODEL, "--host", HOST, "--port", str(port)]
        argv += ["--ttft-ms", "0", "--itl-ms", "0"]
    else:
        code = (
            "from agent.simulator import SimConfig, run; "
            f"run(SimConfig(model={MODEL!r}, ttft_ms=0, itl_ms=0), {HOST!r}, {port})"
        )
        argv = [str(PYTHON), "-c", code]
    procs.start("upstream", argv, dict(os.environ))
    target = Target("direct", f"http://{HOST}:{port}", "", "upstream")
    wait_for("upstream", lambda: http_status(f"{target.base_url}/health") == 200, 60, procs, "upstream")
    wait_for(
        "upstream chat",
        lambda: http_status(target.base_url + CHAT_PATH, body=chat_body(16)) == 200,
        30,
        procs,
        "upstream",
    )
    return target


def _cic_help() -> str:
    return subprocess.run([str(CIC), "--help"], capture_output=True, text=True, check=False).stdout


class Database:
    """A fresh PostgreSQL database for the gateway, dropped at the end."""

    def __init__(self, keep: bool) -> None:
        self.name = f"cic_bench_{secrets.token_hex(4)}"
        self.keep = keep
        self.created = False
        self.url = f"postgresql://postgres:postgres@127.0.0.1:5432/{self.name}"

    def create(self) -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        self.created = True
        log(f"created database {self.name}")

    def drop(self) -> None:
        if not self.created:
            return
        if self.keep:
            log(f"kept database {self.name} (--keep-db)")
            return
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))
        self.created = False
        log(f"dropped database {self.name}")

    def usage_counts(self) -> tuple[int, int]:
        """(rows, rows with status ok) in usage_records."""
        with psycopg.connect(self.url) as conn:
            row = conn.execute("SELECT count(*), count(*) FILTER (WHERE status = 'ok') FROM usage_records").fetchone()
        assert row is not None
        return int(row[0]), int(row[1])


def gateway_env(db: Database, work_dir: Path) -> dict[str, str]:
    spool = work_dir / "spool"
    metrics = work_dir / "prometheus"
    spool.mkdir(exist_ok=True)
    metrics.mkdir(exist_ok=True)
    return os.environ | {
        "CIC_DATABASE_URL": db.url,
        "CIC_REDIS_URL": REDIS_URL,
        "CIC_LOG_LEVEL": "WARNING",
        "CIC_SPOOL_DIR": str(spool),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
    }


def cic(env: dict[str, str], *args: str) -> dict[str, Any]:
    """Run a ``cic`` command; return its JSON output ({} if it printed none)."""
    argv = [str(CIC), *args]
    if args[0] == "nodes" and "nodes" not in _cic_help():
        # `cic nodes` exists in cic/cli/main.py but is not mounted on the command line yet: call its sub-app.
        argv = [str(PYTHON), "-c", "from cic.cli.main import nodes_app; nodes_app()", *args[1:]]
    res = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    if res.returncode != 0:
        raise BenchError(f"`cic {' '.join(args)}` failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    out = res.stdout.strip()
    start = min((i for i in (out.find("{"), out.find("[")) if i >= 0), default=-1)
    return json.loads(out[start:]) if start >= 0 else {}


def setup_gateway(env: dict[str, str], upstream: Target, limits: str) -> str:
    """Schema, catalog, tenant, key and node, through the CLI; returns the API key.

    The org is on the enterprise plan (the free plan's 60 requests/minute would turn the run into 429s). With
    ``limits="key"`` the key has limits far above what the run can reach, so every request still goes through
    the rate limiter (one Redis round trip), as a paying tenant's would; with ``"none"`` no layer has a limit
    and the limiter is skipped.
    """
    cic(env, "db", "upgrade")
    cic(env, "catalog", "seed")
    org = cic(env, "orgs", "create", "--name", "Bench", "--owner", "bench@example.com", "--plan", "enterprise")
    slug = str(org["slug"])
    cic(env, "envs", "create", "--org", slug, "--name", "prod", "--region", "us-east", "--models", MODEL)
    key_limits = ["--rpm", str(KEY_RPM), "--tpm", str(KEY_TPM)] if limits == "key" else []
    key = cic(env, "keys", "create", "--org", slug, "--env", "prod", "--name", "bench", *key_limits)
    node = cic(env, "nodes", "add", "--model", MODEL, "--region", "us-east", "--endpoint", upstream.base_url)
    log(f"gateway set up: org {slug}, node {node.get('id', '?')} -> {upstream.base_url}")
    return str(key["key"])


def start_gateway(procs: Processes, env: dict[str, str], token: str, workers: int) -> Target:
    port = free_port()
    argv = [str(CIC), "api", "--host", HOST, "--port", str(port), "--workers", str(workers)]
    procs.start("gateway", argv, env)
    target = Target("gateway", f"http://{HOST}:{port}", token, "gateway")
    wait_for("gateway", lambda: http_status(f"{target.base_url}/ready") == 200, 90, procs, "gateway")
    url = target.base_url + CHAT_PATH
    wait_for("gateway chat", lambda: http_status(url, body=chat_body(16), token=token) == 200, 60, procs, "gateway")
    return target


def ensure_litellm(spec: str) -> Path:
    """bench/.venv-litellm with the LiteLLM proxy (created on first use; a few minutes)."""
    binary = LITELLM_VENV / "bin" / "litellm"
    if binary.exists():
        return binary
    log(f"creating {LITELLM_VENV.relative_to(ROOT)} and installing {spec} (a few minutes)")
    subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    pip = LITELLM_VENV / "bin" / "pip"
    subprocess.run([str(pip), "install", "-q", spec], check=True)
    if not binary.exists():
        raise BenchError(f"{spec} installed no litellm command")
    return binary


def litellm_version() -> str:
    meta = list((LITELLM_VENV / "lib").glob("python*/site-packages/litellm-*.dist-info"))
    return meta[0].name.removeprefix("litellm-").removesuffix(".dist-info") if meta else "?"


def start_litellm(procs: Processes, binary: Path, upstream: Target, work_dir: Path, workers: int) -> Target:
    config = work_dir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: hosted_vllm/{MODEL}\n"
        f"      api_base: {upstream.base_url}/v1\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_MASTER_KEY}\n"
        "litellm_settings:\n"
        "  disable_hf_tokenizer_download: true\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no cost-map download at import
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": "6379",
        "LITELLM_LOG": "ERROR",  # no per-request access log (the gateway has none either)
        "HF_HUB_OFFLINE": "1",
    }
    port = free_port()
    argv = [str(binary), "--config", str(config), "--host", HOST, "--port", str(port), "--num_workers", str(workers)]
    procs.start("litellm", argv, env)
    target = Target("litellm", f"http://{HOST}:{port}", LITELLM_MASTER_KEY, "litellm")
    url = target.base_url + CHAT_PATH
    body = chat_body(16)
    wait_for("litellm", lambda: http_status(url, body=body, token=target.token) == 200, 180, procs, "litellm")
    return target


# --- runs -----------------------------------------------------------------------------------------------------


@dataclass
class Row:
    target: str
    mode: str
    concurrency: int
    load: Load
    cpu_ms_per_req: float
    services_cpu_ms_per_req: float
    upstream_cpu_ms_per_req: float
    other_cpu_cores: float  # busy CPU of the machine not explained by target, upstream, services or wrk
    rss_before: int
    rss_after: int
    processes_replaced: int = 0  # server processes that were gone after the run (a worker died or was restarted)
    connections_per_worker: list[int] = field(default_factory=list)  # established client connections, mid-run
    added_p50_ms: float | None = None
    admission_p50_ms: float | None = None  # the gateway's own histogram of its limiter admissions, this run only
    limiter_wait_p50_ms: float | None = None  # the latency the limiter added to a request, this run only

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["load"]["rps"] = self.load.rps
        data["load"]["errors"] = self.load.errors
        data["load"]["unanswered"] = self.load.unanswered
        return data


@dataclass
class Bench:
    args: argparse.Namespace
    procs: Processes
    wrk: Wrk
    upstream: Target | None = None
    rows: list[Row] = field(default_factory=list)

    def measure(self, target: Target, mode: str, concurrency: int) -> Row:
        stream = mode == "stream"
        root = self.procs.pid(target.process)
        if self.args.quiet_wait > 0:
            wait_for_quiet(self.args.quiet_wait)
        if self.args.warmup > 0:
            self._count(target, self.wrk.run(target.base_url, token=target.token, stream=stream,
                                             concurrency=concurrency, seconds=self.args.warmup))  # fmt: skip
        upstream = self.procs.pid("upstream") if target.process != "upstream" else None
        meter = CpuMeter(root, upstream)
        rss_before = rss_bytes(meter.target_pids)
        conns: list[int] = []
        port = int(target.base_url.rsplit(":", 1)[1])
        limiter_before = histogram_buckets(target.base_url, settled=True) if target.name == "gateway" else None
        load = self.wrk.run(
            target.base_url,
            token=target.token,
            stream=stream,
            concurrency=concurrency,
            seconds=self.args.duration,
            during=lambda: conns.extend(connections_per_process(worker_pids(root), port)),
        )
        cpu = meter.stop(load)
        self._count(target, load)
        self.procs.check(target.process)
        n = max(load.answered, 1)
        row = Row(
            target=target.name,
            mode=mode,
            concurrency=concurrency,
            load=load,
            cpu_ms_per_req=cpu.target * 1000 / n,
            services_cpu_ms_per_req=cpu.services * 1000 / n,
            upstream_cpu_ms_per_req=cpu.upstream * 1000 / n,
            other_cpu_cores=cpu.other_cores,
            rss_before=rss_before,
            rss_after=rss_bytes(process_tree(root)),
            processes_replaced=cpu.processes_gone,
            connections_per_worker=conns,
        )
        if limiter_before is not None:
            after = histogram_buckets(target.base_url, settled=True)
            for name, attr in (("admission", "admission_p50_ms"), ("wait", "limiter_wait_p50_ms")):
                metric = f"cic_limiter_{name}_seconds"
                setattr(row, attr, bucket_p50_ms(limiter_before.get(metric, {}), after.get(metric, {})))
        log(
            f"{target.name:8} {mode:10} c={concurrency:<3} {load.rps:9.1f} req/s  p50 {load.p50_ms:7.2f} ms  "
            f"p99 {load.p99_ms:7.2f} ms  cpu {row.cpu_ms_per_req:6.2f} ms/req  errors {load.errors}"
        )
        self.rows.append(row)
        return row

    @staticmethod
    def _count(target: Target, load: Load) -> None:
        target.answered += load.answered
        target.ok += load.ok

    def run_target(self, target: Target) -> None:
        root = self.procs.pid(target.process)
        settle(root)
        target.rss_start = rss_bytes(process_tree(root))
        for mode in self.args.modes:
            for concurrency in self.args.concurrency:
                self.measure(target, mode, concurrency)
        target.rss_end = rss_bytes(process_tree(root))


METRICS_FLUSH_S = 1.0  # api/gateway/metrics.py FLUSH_S: how late a worker's tallies can reach /metrics


def histogram_buckets(
    base_url: str,
    metrics: tuple[str, ...] = ("cic_limiter_admission_seconds", "cic_limiter_wait_seconds"),
    *,
    settled: bool = False,
) -> dict[str, dict[float, float]]:
    """Cumulative counts of each histogram by upper bound (seconds), every worker summed. ``settled``: read
    once every worker has flushed what it tallied until now (the load has stopped; a worker flushes its
    per-request metrics every METRICS_FLUSH_S, and only the one that answers the scrape does so at once)."""
    if settled:
        time.sleep(METRICS_FLUSH_S + 0.2)
    out: dict[str, dict[float, float]] = {m: {} for m in metrics}
    try:
        with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as resp:  # noqa: S310 - loopback only
            text = resp.read().decode()
    except (OSError, urllib.error.URLError):
        return out
    for line in text.splitlines():
        name, _, rest = line.partition("_bucket{")
        if rest and name in out:
            le = rest.split('le="', 1)[1].split('"', 1)[0]
            out[name][float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def bucket_p50_ms(before: dict[float, float], after: dict[float, float]) -> float | None:
    """The median of the observations between two scrapes, interpolated linearly inside its bucket."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    half = counts[-1] / 2
    lower, below = 0.0, 0.0
    for bound, cum in zip(bounds, counts, strict=True):
        if cum >= half:
            if bound == float("inf"):
                return lower * 1000
            return (lower + (bound - lower) * (half - below) / max(cum - below, 1e-9)) * 1000
        lower, below = bound, cum
    return None


def check_metering(db: Database, target: Target, baseline: tuple[int, int], timeout: float = 10.0) -> dict[str, Any]:
    """One usage record per answered request: poll the table until it matches (the meter writes in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        rows, ok = db.usage_counts()
        rows, ok = rows - baseline[0], ok - baseline[1]
        if (rows, ok) == (target.answered, target.ok) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    passed = (rows, ok) == (target.answered, target.ok)
    return {"records": rows, "requests": target.answered, "ok_records": ok, "ok_requests": target.ok, "pass": passed}


def usage_baseline(db: Database) -> tuple[int, int]:
    """Usage rows from the readiness probes, once the meter has written them (stable for a second)."""
    last = db.usage_counts()
    stable_since = time.monotonic()
    deadline = stable_since + 15
    while time.monotonic() - stable_since < 1.0 and time.monotonic() < deadline:
        time.sleep(0.25)
        now = db.usage_counts()
        if now != last:
            last, stable_since = now, time.monotonic()
    return last


# --- report ---------------------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f}"


def add_latency_overhead(rows: list[Row]) -> None:
    direct = {r.mode: r.load.p50_ms for r in rows if r.target == "direct" and r.concurrency == 1}
    for r in rows:
        if r.concurrency == 1 and r.mode in direct:
            r.added_p50_ms = r.load.p50_ms - direct[r.mode]


def table(rows: list[Row]) -> str:
    head = (
        "| target | mode | concurrency | RPS | p50 ms | p99 ms | added p50 ms | CPU ms/req | PG+Redis CPU ms/req "
        "| errors | other load (cores) |"
    )
    lines = [head, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        lines.append(
            f"| {r.target} | {r.mode} | {r.concurrency} | {fmt(r.load.rps, 0)} | {fmt(r.load.p50_ms)} "
            f"| {fmt(r.load.p99_ms)} | {fmt(r.added_p50_ms)} | {fmt(r.cpu_ms_per_req)} "
            f"| {fmt(r.services_cpu_ms_per_req)} | {r.load.errors} | {fmt(r.other_cpu_cores)} |"
        )
    return "\n".join(lines)


def error_summary(load: Load) -> str:
    parts = [f"{n} × HTTP {status}" for status, n in sorted(load.statuses.items())]
    if load.unanswered:
        parts.append(f"{load.unanswered} never answered")
    if load.connect_errors:
        parts.append(f"{load.connect_errors} connections refused")
    parts.append(f"socket errors (wrk): {load.socket_errors}")
    if load.error_sample:
        parts.append(f"first error: {load.error_sample[:200]!r}")
    return "; ".join(parts)


def ratios(rows: list[Row]) -> dict[str, float | None]:
    top = max((r.concurrency for r in rows), default=0)
    out: dict[str, float | None] = {}
    for mode in MODES:
        by = {r.target: r.load.rps for r in rows if r.mode == mode and r.concurrency == top}
        if "gateway" in by and "litellm" in by:
            out[mode] = by["gateway"] / by["litellm"] if by["litellm"] else None
    return out


def environment_info(args: argparse.Namespace, wrk_binary: str) -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=False)
    wrk_version = subprocess.run([wrk_binary, "-v"], capture_output=True, text=True, check=False)
    return {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "git_commit": commit.stdout.strip(),
        "wrk": (wrk_version.stdout + wrk_version.stderr).splitlines()[0] if wrk_version.stdout else "?",
        "litellm": litellm_version() if "litellm" in args.targets else None,
        "args": {k: v for k, v in vars(args).items()},
    }


def write_json(payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"gateway-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


# --- main flows -----------------------------------------------------------------------------------------------


def comparison(bench: Bench, db: Database, work_dir: Path) -> dict[str, Any]:
    args = bench.args
    procs = bench.procs
    upstream = bench.upstream
    assert upstream is not None
    targets: list[Target] = []
    metering: dict[str, Any] | None = None

    if "direct" in args.targets:
        bench.run_target(upstream)
        targets.append(upstream)

    if "gateway" in args.targets:
        env = gateway_env(db, work_dir)
        db.create()
        token = setup_gateway(env, upstream, args.limits)
        gateway = start_gateway(procs, env, token, args.workers)
        baseline = usage_baseline(db)
        bench.run_target(gateway)
        targets.append(gateway)
        metering = check_metering(db, gateway, baseline)
        procs.stop("gateway")

    if "litellm" in args.targets:
        binary = ensure_litellm(args.litellm_spec)
        litellm = start_litellm(procs, binary, upstream, work_dir, args.litellm_workers)
        bench.run_target(litellm)
        targets.append(litellm)
        procs.stop("litellm")

    add_latency_overhead(bench.rows)
    print()
    print(table(bench.rows))
    print()
    top = max(args.concurrency)
    for mode, ratio in ratios(bench.rows).items():
        print(f"gateway / LiteLLM RPS at concurrency {top}, {mode}: {fmt(ratio)}x")
    if "gateway" in args.targets:
        limiter = f"key limits rpm={KEY_RPM:,} tpm={KEY_TPM:,}, never reached" if args.limits == "key" else "no limits"
        print(f"gateway tenant: enterprise plan, {limiter}; auth and metering on")
        for r in bench.rows:
            if r.admission_p50_ms is not None:
                print(
                    f"limiter admission round trip inside the gateway (Redis + event-loop wait), "
                    f"{r.mode} c={r.concurrency}: p50 {r.admission_p50_ms:.3f} ms (cic_limiter_admission_seconds)"
                )
            if r.limiter_wait_p50_ms is not None:
                print(
                    f"latency the limiter added to a request (its wait for the admission; overlapped with "
                    f"forwarding: how long the node's answer waited for it), {r.mode} c={r.concurrency}: "
                    f"p50 {r.limiter_wait_p50_ms:.3f} ms (cic_limiter_wait_seconds)"
                )
    for t in targets:
        print(f"{t.name} RSS (process tree): {mib(t.rss_start)} MiB at start, {mib(t.rss_end)} MiB at end")
    if metering is not None:
        status = "OK" if metering["pass"] else "MISMATCH"
        print(
            f"usage records: {metering['records']} of {metering['requests']} requests "
            f"(status ok: {metering['ok_records']} of {metering['ok_requests']} 2xx) — {status}"
        )
    for r in bench.rows:
        if r.load.errors or r.load.socket_errors:
            print(f"errors in {r.target} {r.mode} c={r.concurrency}: {error_summary(r.load)}")
        if r.concurrency > 1 and len(r.connections_per_worker) > 1:
            spread = "/".join(str(n) for n in r.connections_per_worker)
            print(f"{r.target} {r.mode} c={r.concurrency}: client connections per worker: {spread}")
        if r.processes_replaced:
            died = r.processes_replaced
            print(f"{r.target} {r.mode} c={r.concurrency}: {died} server process(es) died during the run")
    busy = [r for r in bench.rows if r.other_cpu_cores > 0.2]
    if busy:
        worst = max(r.other_cpu_cores for r in busy)
        print(f"note: other processes used up to {worst:.2f} cores during {len(busy)} run(s); numbers may be low")
    return {
        "table": table(bench.rows),
        "rows": [r.as_json() for r in bench.rows],
        "ratios_rps_gateway_over_litellm": ratios(bench.rows),
        "targets": [asdict(t) | {"token": "…"} for t in targets],
        "metering": metering,
    }


def soak(bench: Bench, db: Database, work_dir: Path) -> dict[str, Any]:
    """N requests through the gateway at concurrency 50 in ten slices; the workers' RSS after each slice."""
    args = bench.args
    procs = bench.procs
    upstream = bench.upstream
    assert upstream is not None
    env = gateway_env(db, work_dir)
    db.create()
    token = setup_gateway(env, upstream, args.limits)
    gateway = start_gateway(procs, env, token, args.workers)
    baseline = usage_baseline(db)
    root = procs.pid("gateway")
    settle(root)
    if args.quiet_wait > 0:
        wait_for_quiet(args.quiet_wait)
    stream = args.soak_mode == "stream"
    samples: list[dict[str, Any]] = []

    def sample(label: str, done: int, load: Load | None, cpu: CpuUse | None) -> None:
        workers = worker_pids(root)
        per_worker = [rss_bytes([p]) for p in workers]
        entry = {"at": label, "requests": done, "workers_rss": sum(per_worker), "per_worker_rss": per_worker}
        if load is not None and cpu is not None:
            entry |= {"rps": load.rps, "p50_ms": load.p50_ms, "p99_ms": load.p99_ms, "errors": load.errors}
            entry |= {"cpu_ms_per_req": cpu.target * 1000 / max(load.answered, 1), "other_cores": cpu.other_cores}
        samples.append(entry)
        extra = f"  ({load.rps:,.0f} req/s, p99 {load.p99_ms:.1f} ms, errors {load.errors})" if load else ""
        log(f"soak {label:>5}: {done:>10,} requests  workers RSS {mib(sum(per_worker))} MiB{extra}")

    sample("start", 0, None, None)
    total = args.soak
    done = 0
    for i in range(1, 11):
        chunk = total * i // 10 - total * (i - 1) // 10
        meter = CpuMeter(root, procs.pid("upstream"))
        load = bench.wrk.run(gateway.base_url, token=token, stream=stream, concurrency=args.soak_concurrency,
                             limit=chunk)  # fmt: skip
        cpu = meter.stop(load)
        Bench._count(gateway, load)
        procs.check("gateway")
        if load.errors or load.socket_errors:
            log(f"soak slice {i}: {error_summary(load)}")
        done += load.answered
        sample(f"{i * 10}%", done, load, cpu)
    metering = check_metering(db, gateway, baseline)
    procs.stop("gateway")

    print()
    print(f"soak: {total:,} {args.soak_mode} requests through the gateway at concurrency {args.soak_concurrency}")
    print()
    print("| at | requests | workers RSS MiB | RPS | p50 ms | p99 ms | CPU ms/req | errors | other load (cores) |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for s in samples:
        print(
            f"| {s['at']} | {s['requests']:,} | {mib(s['workers_rss'])} | {fmt(s.get('rps'), 0)} "
            f"| {fmt(s.get('p50_ms'))} | {fmt(s.get('p99_ms'))} | {fmt(s.get('cpu_ms_per_req'))} "
            f"| {s.get('errors', '')} | {fmt(s.get('other_cores'))} |"
        )
    first, last = samples[1]["workers_rss"], samples[-1]["workers_rss"]
    print(f"\nworkers RSS from 10% to 100%: {mib(first)} → {mib(last)} MiB ({(last - first) / 2**20:+.1f} MiB)")
    status = "OK" if metering["pass"] else "MISMATCH"
    print(f"usage records: {metering['records']} of {metering['requests']} requests — {status}")
    return {"soak": samples, "metering": metering}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark the CrossLogic gateway against the LiteLLM proxy and the upstream alone "
        "(vLLM simulator), with wrk. Prints one markdown table; writes bench/results/gateway-<timestamp>.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds of each measured run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each measured run (0: none)")
    p.add_argument("--concurrency", type=_int_list, default="1,50", help="comma-separated connection counts")
    p.add_argument("--modes", type=_choice_list(MODES), default=",".join(MODES), help="comma-separated modes")
    p.add_argument("--targets", type=_choice_list(TARGETS), default=",".join(TARGETS), help="comma-separated targets")
    p.add_argument("--max-tokens", type=int, default=16, help="max_tokens of each request")
    p.add_argument("--workers", type=int, default=2, help="gateway workers (cic api --workers)")
    p.add_argument("--litellm-workers", type=int, default=2, help="LiteLLM proxy workers (--num_workers)")
    p.add_argument("--litellm-spec", default=LITELLM_SPEC, help="what to pip-install into bench/.venv-litellm")
    p.add_argument("--soak", type=int, default=0, metavar="N", help="instead: N requests through the gateway only")
    p.add_argument("--soak-concurrency", type=int, default=50, help="connections during --soak")
    p.add_argument("--soak-mode", choices=MODES, default="non-stream", help="request kind during --soak")
    p.add_argument(
        "--drain-timeout", type=float, default=30.0, help="seconds to wait for the last answers after a run's end"
    )
    p.add_argument(
        "--limits",
        choices=("key", "none"),
        default="key",
        help="gateway tenant: a key with non-binding rpm/tpm limits (the limiter runs), or no limits at all",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="before each run, wait up to this many seconds for other load on the machine to end (0: don't)",
    )
    p.add_argument("--keep-db", action="store_true", help="do not drop the benchmark database at the end")
    p.add_argument("--keep-logs", action="store_true", help="keep the servers' logs (path printed at the end)")
    args = p.parse_args(argv)
    if args.soak < 0 or (args.soak and args.soak < 10):
        p.error("--soak needs at least 10 requests")
    return args


def _int_list(text: str) -> list[int]:
    values = [int(x) for x in text.split(",") if x.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive integers, e.g. 1,50")
    return values


def _choice_list(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        values = [x.strip() for x in text.split(",") if x.strip()]
        bad = [v for v in values if v not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}")
        return [c for c in choices if c in values]

    return parse


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """SIGINT (even when inherited as ignored), SIGTERM and SIGHUP unwind, so the finally-blocks stop every server."""

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if "direct" not in args.targets and not args.soak:
        log("note: without the direct target there is no 'added p50' column")
    wrk_binary = ensure_wrk()
    if "litellm" in args.targets and not args.soak:
        ensure_litellm(args.litellm_spec)  # before anything starts: the first install takes minutes
    work_dir = Path(tempfile.mkdtemp(prefix="cic-bench-"))
    procs = Processes(work_dir)
    db = Database(keep=args.keep_db)
    bench = Bench(args, procs, Wrk(wrk_binary, work_dir, args.max_tokens, args.drain_timeout))
    failed = True
    return_code = 0
    try:
        with terminate_on_sigterm():
            bench.upstream = start_upstream(procs)
            payload = {"environment": environment_info(args, wrk_binary)}
            payload |= soak(bench, db, work_dir) if args.soak else comparison(bench, db, work_dir)
            path = write_json(payload)
            print(f"\nraw results: {path.relative_to(ROOT)}")
            failed = False
            if payload.get("metering") and not payload["metering"]["pass"]:
                log("error: usage records do not match the requests")
                return_code = 2
    except BenchError as exc:
        log(f"error: {exc}")
    except KeyboardInterrupt:
        log("interrupted")
    finally:
        procs.stop_all()
        with contextlib.suppress(psycopg.Error):
            db.drop()
        if args.keep_logs or failed:
            log(f"server logs: {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    return 1 if failed else return_code


if __name__ == "__main__":
    sys.exit(main())
