"""End-to-end fixtures: the whole platform as a real ``cic up`` process (dashboard + API on one port, on
the session's PostgreSQL database and Redis), a local OpenID provider, simulated vLLM nodes, and
Chromium driven by Playwright (the Debian package, never ``playwright install``).

Every page a test visits is saved as a screenshot under ``test-artifacts/e2e/``.

The fixtures live as long as this package's tests: Playwright's sync API keeps an event loop running in
the main thread while it is open, which later tests' ``asyncio.run`` would trip over.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright
from sqlalchemy.engine import Engine

from cic import migrations
from cic.db import make_engine, session_scope
from cic.services import catalog
from cic.settings import Settings
from tests.conftest import CIC, REDIS_URL, create_database, drop_database
from tests.fakes.oidc_provider import OidcProvider
from tests.servers import LoopThread, Sims, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "e2e"
CHROMIUM = os.environ.get("CIC_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "Correct-Horse-42!"
# Waits for the page to show something: generous, as a loaded 2-core machine can take seconds per page.
TIMEOUT_MS = 30_000
expect.set_options(timeout=TIMEOUT_MS)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    missing = [what for what, ok in (("chromium", Path(CHROMIUM).exists()), ("bun", shutil.which("bun"))) if not ok]
    if not missing:
        return
    # ./scripts/test installs both (scripts/install-web --browser); a bare `pytest` may lack them.
    skip = pytest.mark.skip(
        reason=f"end-to-end tests need {' and '.join(missing)}: run ./scripts/install-web --browser"
    )
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(skip)


@dataclass
class Platform:
    url: str
    oidc: OidcProvider
    log: Path


@pytest.fixture(scope="package")
def e2e_oidc() -> Iterator[OidcProvider]:
    with OidcProvider().running() as provider:
        yield provider


def platform_env(**overrides: str) -> dict[str, str]:
    """The test process's environment without any CIC_* or REFLEX_* setting of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CIC_", "REFLEX_"))}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", PATH=f"{Path(CIC).parent}:{env.get('PATH', '')}", **overrides)
    return env


@pytest.fixture(scope="package")
def e2e_database() -> Iterator[str]:
    """A database of its own: the platform process works in it while tests run, so the suite's
    per-test TRUNCATE of the shared test database never races it. Every test makes its own users."""
    url = create_database("cic_e2e")
    try:
        migrations.upgrade(url)
        yield url
    finally:
        drop_database(url)


@pytest.fixture(scope="package")
def e2e_engine(e2e_database: str) -> Iterator[Engine]:
    """The e2e database, for what a test arranges behind the dashboard's back (nodes, roll-ups)."""
    eng = make_engine(Settings(env="local", database_url=e2e_database, redis_url=REDIS_URL))
    with session_scope(eng) as s:
        catalog.seed(s)
    yield eng
    eng.dispose()


@pytest.fixture(scope="package")
def platform(
    e2e_database: str, e2e_engine: Engine, e2e_oidc: OidcProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """``cic up`` on the test database: the dashboard built once for this session, no demo tenant, no
    simulated nodes (tests add their own), jobs run by the tests when they need them."""
    home = tmp_path_factory.mktemp("platform")
    port = free_port()
    url = f"http://localhost:{port}"
    env = platform_env(
        CIC_DATABASE_URL=e2e_database,
        CIC_REDIS_URL=REDIS_URL,
        CIC_SPOOL_DIR=str(home / "spool"),
        CIC_NODE_REFRESH_S="0.2",
        CIC_LOG_JSON="true",
        CIC_OAUTH_GOOGLE_CLIENT_ID=e2e_oidc.client_id,
        CIC_OAUTH_GOOGLE_CLIENT_SECRET=e2e_oidc.client_secret,
        CIC_OAUTH_GOOGLE_DISCOVERY_URL=e2e_oidc.discovery_url,
        REFLEX_WEB_WORKDIR=str(home / "web"),
    )
    log = home / "cic-up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [CIC, "up", "--port", str(port), "--no-demo", "--no-sims", "--no-jobs"],
            cwd=home,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def ready() -> bool:
            assert proc.poll() is None, f"cic up exited with {proc.returncode}:\n{log.read_text()[-4000:]}"
            return (
                httpx.get(f"{url}/health", timeout=2).status_code == 200
                and httpx.get(f"{url}/login", timeout=2, follow_redirects=True).status_code == 200
            )

        wait_until(ready, timeout=300, interval=0.5, what="cic up (dashboard build + start)")
        yield Platform(url, e2e_oidc, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="package")
def e2e_loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture
def e2e_sims(e2e_loop: LoopThread) -> Iterator[Sims]:
    s = Sims(e2e_loop)
    yield s
    s.stop_all()


@pytest.fixture(scope="package")
def playwright_() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="package")
def browser(playwright_: Playwright) -> Iterator[Browser]:
    b = playwright_.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield b
    b.close()


class Shots:
    """Screenshots of the pages a test walks through, in order, under test-artifacts/e2e/<test>/."""

    def __init__(self, test_name: str) -> None:
        self.dir = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.n = 0

    def __call__(self, page: Page, name: str, *, full_page: bool = True) -> Path:
        self.n += 1
        path = self.dir / f"{self.n:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Shots:
    return Shots(request.node.name)


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Any]:
    """``new_page()`` opens a page in a fresh browser context (its own cookies and storage: one user)."""
    contexts = []

    def _new() -> Page:
        ctx = browser.new_context(viewport={"width": 1360, "height": 900}, locale="en-US", timezone_id="UTC")
        ctx.set_default_timeout(TIMEOUT_MS)
        contexts.append(ctx)
        return ctx.new_page()

    yield _new
    for ctx in contexts:
        ctx.close()
