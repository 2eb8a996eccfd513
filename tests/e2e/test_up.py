"""``cic up`` from nothing, as a newcomer runs it: a temp directory, the SQLite default, no Redis. The
dashboard loads, the API answers, one simulated node per demo model registers and turns healthy, a key
makes a chat completion; Ctrl-C stops everything, simulated nodes included."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import httpx
import openai
import pytest

from cic.cli.up import DEMO_MODELS
from tests.conftest import CIC
from tests.e2e.conftest import platform_env
from tests.servers import free_port, wait_until


def test_cic_up_runs_the_whole_platform(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://localhost:{port}"
    log = tmp_path / "cic-up.log"
    env = platform_env(REFLEX_WEB_WORKDIR=str(tmp_path / "web"), CIC_LOG_JSON="false")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [CIC, "up", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def started() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"cic up exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            return "CrossLogic is up" in log.read_text(errors="replace")

        wait_until(started, timeout=300, interval=0.5, what="cic up")
        text = log.read_text()
        assert (tmp_path / ".cic" / "cic.db").is_file(), "the SQLite default under ./.cic"
        creds = json.loads((tmp_path / ".cic" / "demo-login.json").read_text())
        assert re.search(rf"Demo login:\s+{re.escape(creds['email'])}\s+/\s+{re.escape(creds['password'])}", text)
        assert oct((tmp_path / ".cic" / "demo-login.json").stat().st_mode & 0o777) == "0o600"

        page = httpx.get(f"{base}/login", follow_redirects=True, timeout=10)
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert httpx.get(f"{base}/health", timeout=10).json() == {"status": "ok"}
        assert {m["id"] for m in httpx.get(f"{base}/api/v1/models", timeout=10).json()} >= set(DEMO_MODELS)

        login = httpx.post(f"{base}/api/v1/auth/login", json=creds, timeout=10)
        assert login.status_code == 200, login.text
        auth = {"authorization": f"Bearer {login.json()['token']}"}

        def healthy() -> bool:
            nodes = httpx.get(f"{base}/api/v1/admin/nodes", headers=auth, timeout=10).json()
            return {n["model"] for n in nodes if n["status"] == "healthy" and n["provider"] == "simulator"} == set(
                DEMO_MODELS
            )

        wait_until(healthy, timeout=60, interval=0.5, what="a healthy simulated node per demo model")

        key = httpx.post(
            f"{base}/api/v1/orgs/demo/keys", json={"name": "up-test", "environment": "dev"}, headers=auth, timeout=10
        )
        assert key.status_code == 201, key.text
        client = openai.OpenAI(base_url=f"{base}/demo/dev/v1", api_key=key.json()["key"], max_retries=0, timeout=30)

        def complete() -> str | None:
            try:
                reply = client.chat.completions.create(
                    model="llama-3-8b", messages=[{"role": "user", "content": "Hi!"}]
                )
            except openai.APIStatusError as exc:
                if exc.status_code == 503:  # healthy in the database; the gateway's view refreshes every second
                    return None
                raise
            return reply.choices[0].message.content

        assert wait_until(complete, timeout=15, interval=0.3, what="a completion from a simulated node")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert code == 0, log.read_text()[-3000:]
    # Nothing of it is left running: the simulated nodes shared its process group.
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)
