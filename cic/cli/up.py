"""``cic up``: the whole platform in one command, on the embedded defaults.

Migrations, the catalog, a demo account with an org and an environment, the dashboard and the API on
one port, the jobs in this process, and one simulated vLLM node per demo model, registered through
the node agent like a real node. Ctrl-C / SIGTERM stops everything cleanly: the nodes drain and
deregister, the jobs finish, the server closes.

The demo password is generated on the first run and kept in ``<data dir>/demo-login.json`` (never a
fixed default); later runs reuse it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from cic import migrations
from cic.db import make_engine, session_scope
from cic.models import Plan, User
from cic.models.environments import EnvironmentCreate
from cic.services import catalog, environments, nodes, orgs, users
from cic.services.authz import Actor
from cic.settings import Settings, get_settings

log = logging.getLogger("cic.up")

DEMO_EMAIL = "demo@example.com"
DEMO_ORG = "demo"
DEMO_ENV = "dev"
DEMO_REGION = "us-east"
# model id -> simulator kind
DEMO_MODELS = {"llama-3-8b": "chat", "mistral-7b": "chat", "all-minilm-l6-v2": "embedding"}
# What the simulated nodes report, so the operator's page and cost routing look like a real fleet.
DEMO_HARDWARE = {"llama-3-8b": ("A10G", 0.38), "mistral-7b": ("A10G", 0.38), "all-minilm-l6-v2": ("T4", 0.16)}
DEFAULT_HARDWARE = ("A10G", 0.38)
SYSTEM = Actor.system("cic-up")


def data_dir(settings: Settings) -> Path:
    """Where ``cic up`` keeps its files: beside the SQLite database, or ``./.cic``."""
    if settings.is_sqlite and ":memory:" not in settings.database_url:
        return Path(settings.database_url.split(":///", 1)[-1]).resolve().parent
    return Path(".cic").resolve()


def generate_password() -> str:
    # 20 characters from letters, digits and symbols: passes the password policy, typed from a terminal.
    alphabet = string.ascii_letters + string.digits
    body = "".join(secrets.choice(alphabet) for _ in range(16))
    return f"{body[:8]}-{body[8:]}-{secrets.choice(string.digits)}{secrets.choice('!#%+')}"


@dataclass
class Demo:
    email: str
    password: str
    org: str
    env: str
    node_token: str = field(repr=False, default="")


def prepare(settings: Settings, *, demo: bool, sims: int) -> Demo | None:
    """Migrate, seed the catalog, and make sure the demo tenant exists (idempotent)."""
    settings.ensure_local_dirs()
    migrations.upgrade(settings.database_url)
    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            catalog.seed(s)
        if not demo:
            return None
        home = data_dir(settings)
        home.mkdir(parents=True, exist_ok=True)
        creds_file = home / "demo-login.json"
        saved: dict[str, str] = {}
        if creds_file.is_file():
            with contextlib.suppress(ValueError):
                saved = json.loads(creds_file.read_text())
        pepper = settings.key_pepper.get_secret_value()
        with session_scope(engine) as s:
            user = users.get_by_email(s, DEMO_EMAIL)
            password = saved.get("password", "")
            if user is None:
                password = password or generate_password()
                user = users.create_user(
                    s, email=DEMO_EMAIL, password=password, name="Demo Operator", is_platform_admin=True, actor=SYSTEM
                )
            elif not password or saved.get("email") != DEMO_EMAIL:
                # The account exists but its password was not kept here: issue a new one.
                password = generate_password()
                users.set_password(s, DEMO_EMAIL, password, SYSTEM)
            assert isinstance(user, User)
            actor = Actor.user(user.id, is_platform_admin=True)
            if not any(o.slug == DEMO_ORG for o, _ in orgs.list_orgs(s, actor)):
                orgs.create_org(s, SYSTEM, name="Demo", owner=user, slug=DEMO_ORG, plan=Plan.developer)
                s.flush()
                environments.create_env(
                    s,
                    actor,
                    DEMO_ORG,
                    EnvironmentCreate(name=DEMO_ENV, region=DEMO_REGION, models=list(DEMO_MODELS)),
                )
            token = ""
            if sims:
                token, _ = nodes.create_node_token(
                    s, SYSTEM, region=DEMO_REGION, expires_in_hours=1, max_uses=sims * 20, pepper=pepper
                )
        creds_file.write_text(json.dumps({"email": DEMO_EMAIL, "password": password}))
        creds_file.chmod(0o600)
        return Demo(DEMO_EMAIL, password, DEMO_ORG, DEMO_ENV, token)
    finally:
        engine.dispose()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class SimSupervisor:
    """One ``cic node sim`` process per model, registered with the control plane; restarted if it dies."""

    def __init__(self, control_plane: str, token: str, region: str, models: dict[str, str]) -> None:
        self.control_plane = control_plane
        self.token = token
        self.region = region
        self.models = models
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def _spawn(self, model: str, kind: str) -> asyncio.subprocess.Process:
        cic = str(Path(sys.executable).with_name("cic"))
        env = {**os.environ, "CIC_NODE_TOKEN": self.token}
        gpu, price_per_hour = DEMO_HARDWARE.get(model, DEFAULT_HARDWARE)
        return await asyncio.create_subprocess_exec(
            cic,
            "node",
            "sim",
            "--model",
            model,
            "--kind",
            kind,
            "--port",
            str(free_port()),
            "--ttft-ms",
            "40",
            "--itl-ms",
            "8",
            "--region",
            self.region,
            "--control-plane",
            self.control_plane,
            "--gpu",
            f"{gpu} (simulated)",
            "--spot",
            "--price-per-hour",
            str(price_per_hour),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
        )

    async def _keep(self, model: str, kind: str) -> None:
        backoff = 1.0
        while not self._stopping:
            proc = await self._spawn(model, kind)
            self.procs[model] = proc
            code = await proc.wait()
            if self._stopping:
                return
            log.warning("simulated node %s exited with %s; restarting in %.0f s", model, code, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._keep(m, k), name=f"sim {m}") for m, k in self.models.items()]

    async def stop(self, grace_s: float = 15) -> None:
        """SIGTERM: each agent drains, deregisters and stops its simulator."""
        self._stopping = True
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                await asyncio.wait_for(proc.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _display_host(host: str) -> str:
    return "localhost" if host in ("127.0.0.1", "0.0.0.0", "::", "") else host  # noqa: S104


def configure_environment(host: str, port: int) -> None:
    """Settings the one-port run implies, unless the operator set them."""
    url = f"http://{_display_host(host)}:{port}"
    os.environ.setdefault("CIC_PUBLIC_BASE_URL", url)
    os.environ.setdefault("CIC_DASHBOARD_URL", url)
    os.environ["CIC_DASHBOARD_API_URL"] = f"http://127.0.0.1:{port}"
    os.environ["CIC_DASHBOARD_MOUNT_API"] = "true"
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    get_settings.cache_clear()


async def serve(settings: Settings, host: str, port: int, demo: Demo | None, *, run_jobs: bool) -> None:
    import uvicorn

    from api.server import HTTP_PROTOCOL
    from web import serve as web_serve

    app = web_serve.asgi_app()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=host, port=port, http=HTTP_PROTOCOL, log_config=None, access_log=False, lifespan="on", workers=1
        )
    )
    scheduler = None
    if run_jobs:
        from jobs.scheduler import start_background

        jobs_engine = make_engine(settings)
        scheduler = start_background(settings, jobs_engine)
    sims: SimSupervisor | None = None
    # uvicorn turns SIGINT/SIGTERM into a graceful exit and then raises the signal again with the handler
    # it found installed: make that handler a no-op, so the clean-up below runs (nodes drain, jobs stop).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    serving = asyncio.create_task(server.serve(), name="server")
    try:
        while not server.started:
            if serving.done():
                await serving  # raises what stopped it (port in use, ...)
                raise typer.Exit(1)
            await asyncio.sleep(0.05)
        if demo is not None and demo.node_token:
            sims = SimSupervisor(f"http://127.0.0.1:{port}", demo.node_token, DEMO_REGION, DEMO_MODELS)
            sims.start()
        url = settings.dashboard_url
        lines = [
            "",
            f"  CrossLogic is up:  {url}",
            f"  API:               {settings.public_base_url}/api/v1   (docs: {settings.public_base_url}/docs)",
            f"  OpenAI endpoint:   {settings.public_base_url}/v1",
        ]
        if demo is not None:
            lines += [
                f"  Demo login:        {demo.email}  /  {demo.password}",
                f"                     (kept in {data_dir(settings) / 'demo-login.json'})",
                f"  Demo environment:  {demo.org}/{demo.env} in {DEMO_REGION}, models {', '.join(DEMO_MODELS)}",
            ]
        lines.append("  Ctrl-C stops everything.\n")
        typer.echo("\n".join(lines), err=True)
        await serving
    finally:
        if sims is not None:
            await sims.stop()
        if not serving.done():
            server.should_exit = True
            with contextlib.suppress(Exception):
                await serving
        if scheduler is not None:
            await asyncio.to_thread(scheduler.shutdown)


def up_command(
    host: Annotated[str, typer.Option(envvar="CIC_HOST", help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="CIC_PORT", help="port of the dashboard and the API")] = 8000,
    demo: Annotated[bool, typer.Option(help="create the demo account, org and environment")] = True,
    sims: Annotated[bool, typer.Option(help="one simulated vLLM node per demo model")] = True,
    jobs: Annotated[bool, typer.Option(help="run the jobs (roll-ups, billing, health) in this process")] = True,
    rebuild: Annotated[bool, typer.Option(help="rebuild the dashboard's frontend even if unchanged")] = False,
) -> None:
    """Run the whole platform: migrations, catalog, dashboard + API on one port, jobs, simulated nodes."""
    from web import serve as web_serve

    configure_environment(host, port)
    settings = get_settings()
    typer.echo("==> database and catalog", err=True)
    prepared = prepare(settings, demo=demo, sims=len(DEMO_MODELS) if (sims and demo) else 0)
    typer.echo("==> dashboard (building the frontend when it changed; the first build takes a minute)", err=True)
    try:
        web_serve.build_frontend(port, force=rebuild)
    except web_serve.BuildError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    asyncio.run(serve(settings, host, port, prepared, run_jobs=jobs))
