"""Build the dashboard's frontend and serve it with the API on one port, in this process.

``reflex run --env prod`` does the same through granian with several workers; the all-in-one run wants
one process it controls (the in-process limiter and jobs, the simulated nodes it supervises, a clean
stop on Ctrl-C), so it builds with ``reflex export`` and serves Reflex's ASGI app under uvicorn itself.
The compiled frontend has the backend's address built in (``api_url``), so a build is made per port and
reused while neither the dashboard's sources nor the port change.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import web

ROOT = Path(web.__file__).resolve().parent.parent
STAMP = "cic-build.stamp"


class BuildError(RuntimeError):
    pass


def web_dir() -> Path:
    """Reflex's build directory: ``REFLEX_WEB_WORKDIR``, or ``.web`` in the project root."""
    configured = os.environ.get("REFLEX_WEB_WORKDIR")
    return Path(configured).resolve() if configured else ROOT / ".web"


def frontend_api_url(port: int) -> str:
    # "localhost" is swapped for the host the browser used, so any address of this machine works.
    return os.environ.get("REFLEX_API_URL") or f"http://localhost:{port}"


def _fingerprint(api_url: str) -> str:
    h = hashlib.sha256(api_url.encode())
    for path in sorted([ROOT / "rxconfig.py", *(ROOT / "web").rglob("*.py")]):
        h.update(str(path.relative_to(ROOT)).encode())
        h.update(path.read_bytes())
    h.update(sys.version.encode())
    return h.hexdigest()


def _reflex_env(api_url: str, out: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        REFLEX_API_URL=api_url,
        REFLEX_WEB_WORKDIR=str(out),
        REFLEX_TELEMETRY_ENABLED="false",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
    )
    if "NPM_CONFIG_REGISTRY" not in env and (npm := shutil.which("npm")):
        # Reflex probes npm mirrors unless told which registry to use: use the one npm is set up with.
        registry = subprocess.run(  # noqa: S603 - npm itself, fixed arguments
            [npm, "config", "get", "registry"], capture_output=True, text=True, check=False
        )
        if registry.returncode == 0 and registry.stdout.strip():
            env["NPM_CONFIG_REGISTRY"] = registry.stdout.strip()
    return env


def build_frontend(port: int, *, force: bool = False, log: Any = None) -> Path:
    """Compile and bundle the frontend for a backend on ``port``; skipped when an identical build exists."""
    out = web_dir()
    api_url = frontend_api_url(port)
    fingerprint = _fingerprint(api_url)
    stamp = out / STAMP
    if not force and stamp.is_file() and stamp.read_text() == fingerprint and (out / "build" / "client").is_dir():
        return out
    if shutil.which("bun") is None and shutil.which("npm") is None:
        raise BuildError("the dashboard needs bun (or npm) to build: `npm install -g bun@1.4.4`")
    reflex = Path(sys.executable).with_name("reflex")
    cmd = [str(reflex), "export", "--frontend-only", "--no-zip", "--env", "prod", "--loglevel", "warning"]
    proc = subprocess.run(  # noqa: S603 - our own tool, fixed arguments
        cmd, cwd=ROOT, env=_reflex_env(api_url, out), capture_output=True, text=True, check=False
    )
    if proc.returncode != 0 or not (out / "build" / "client").is_dir():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        raise BuildError(f"building the dashboard failed (reflex export, exit {proc.returncode}):\n{tail}")
    stamp.write_text(fingerprint)
    return out


def asgi_app() -> Any:
    """Reflex's ASGI app serving the built frontend, with the platform app in front (``web.mount``)."""
    out = web_dir()
    os.environ.update(REFLEX_ENV_MODE="prod", REFLEX_WEB_WORKDIR=str(out), REFLEX_TELEMETRY_ENABLED="false")
    from reflex.environment import environment

    environment.REFLEX_SKIP_COMPILE.set(True)  # built already (build_frontend)
    environment.REFLEX_MOUNT_FRONTEND_COMPILED_APP.set(True)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # rxconfig.py
    cwd = Path.cwd()
    os.chdir(ROOT)  # Reflex reads rxconfig.py and its state directories relative to the working directory
    try:
        from web.web import app

        return app()
    finally:
        os.chdir(cwd)
