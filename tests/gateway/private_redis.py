"""A redis-server of a test's own, for what cannot be done to the shared one: stopping it, restarting it,
requiring a password. On a fixed port, so clients can find it again after a restart."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import redis

from tests.servers import free_port, wait_until

needs_redis_server = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs redis-server to run a private instance"
)


class PrivateRedis:
    def __init__(self, *extra: str) -> None:
        self.port = free_port()
        self.extra = extra
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen([*argv, *self.extra], stdout=subprocess.DEVNULL)
        password = self.extra[self.extra.index("--requirepass") + 1] if "--requirepass" in self.extra else None
        probe = redis.Redis(port=self.port, password=password)
        try:
            wait_until(lambda: _pings(probe), what="private redis-server up")
        finally:
            probe.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
