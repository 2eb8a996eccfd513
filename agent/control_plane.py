"""The agent's side of the node-registration API: register once, then sign every call."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from cic import nodeauth


class ControlPlaneError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class NodeGone(ControlPlaneError):
    """The control plane says this node was deregistered (410): register again."""


@dataclass
class Registration:
    node_id: str
    secret: str
    heartbeat_interval_s: float


class ControlPlaneClient:
    def __init__(self, base_url: str, *, timeout_s: float = 10.0) -> None:
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_s)
        self.registration: Registration | None = None

    async def close(self) -> None:
        await self._http.aclose()

    async def register(self, token: str, info: dict[str, Any]) -> Registration:
        r = await self._http.post("/internal/nodes/register", json=info, headers={"Authorization": f"Bearer {token}"})
        data = _check(r)
        self.registration = Registration(data["node_id"], data["secret"], float(data["heartbeat_interval_s"]))
        return self.registration

    async def _signed(self, action: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        reg = self.registration
        if reg is None:
            raise RuntimeError("not registered")
        path = f"/internal/nodes/{reg.node_id}/{action}"
        body = json.dumps(payload or {}).encode()
        headers = nodeauth.sign(reg.secret, "POST", path, body, node_id=reg.node_id)
        r = await self._http.post(path, content=body, headers={**headers, "content-type": "application/json"})
        return _check(r)

    async def heartbeat(self, load: dict[str, Any], *, engine_healthy: bool, draining: bool) -> dict[str, Any]:
        return await self._signed("heartbeat", {"load": load, "engine_healthy": engine_healthy, "draining": draining})

    async def drain(self) -> dict[str, Any]:
        return await self._signed("drain")

    async def deregister(self) -> dict[str, Any]:
        return await self._signed("deregister")


def _check(r: httpx.Response) -> dict[str, Any]:
    if r.status_code < 300:
        data: dict[str, Any] = r.json()
        return data
    try:
        message = r.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = r.text[:300]
    if r.status_code == 410:
        raise NodeGone(410, message)
    raise ControlPlaneError(r.status_code, message)
