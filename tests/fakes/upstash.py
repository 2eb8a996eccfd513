"""A local stand-in for Upstash Redis's REST API, speaking its wire protocol onto a real redis-server.

``POST /`` with a JSON command array (``["SET", "k", "v", "NX", "PX", 1000]``), ``POST /pipeline``
or ``/multi-exec`` with an array of them; ``Authorization: Bearer TOKEN``; replies ``{"result": ...}``
or ``{"error": "..."}`` (HTTP 400), and with ``Upstash-Encoding: base64`` every string in a result
is base64 except ``"OK"`` — what the ``upstash-redis`` client expects.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis


def _encode(value: Any, b64: bool) -> Any:
    if isinstance(value, bytes):
        if b64:
            return "OK" if value == b"OK" else base64.b64encode(value).decode()
        return value.decode(errors="replace")
    if isinstance(value, list):
        return [_encode(v, b64) for v in value]
    return value  # int or None


@dataclass
class FakeUpstash:
    redis_url: str
    token: str
    commands: list[list[Any]] = field(default_factory=list)
    """Every command received, in order (for assertions)."""
    down: bool = False
    """While True, every request gets a 503 (an outage)."""

    def __post_init__(self) -> None:
        self._pool = redis.ConnectionPool.from_url(self.redis_url)
        self._guard = threading.Lock()

    def execute(self, command: list[Any]) -> Any:
        """One command on the real server, its raw reply (no redis-py response callbacks)."""
        with self._guard:
            self.commands.append(command)
        conn = self._pool.get_connection()
        try:
            conn.send_command(*command)
            return conn.read_response()
        finally:
            self._pool.release(conn)

    def handle(self, path: str, body: Any, b64: bool) -> tuple[int, Any]:
        if path == "/":
            if not isinstance(body, list) or not body:
                return 400, {"error": "ERR the request body must be a JSON array of a command and its arguments"}
            try:
                return 200, {"result": _encode(self.execute(body), b64)}
            except redis.ResponseError as exc:
                return 400, {"error": str(exc)}
        if path in ("/pipeline", "/multi-exec"):
            if not isinstance(body, list) or not all(isinstance(c, list) and c for c in body):
                return 400, {"error": "ERR the request body must be a JSON array of commands"}
            out = []
            for command in body:
                try:
                    out.append({"result": _encode(self.execute(command), b64)})
                except redis.ResponseError as exc:
                    out.append({"error": str(exc)})
            return 200, out
        return 404, {"error": f"ERR unknown endpoint {path}"}

    def close(self) -> None:
        self._pool.disconnect()


def _handler(fake: FakeUpstash) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if fake.down:
                self._reply(503, {"error": "service unavailable"})
                return
            if self.headers.get("Authorization") != f"Bearer {fake.token}":
                self._reply(401, {"error": "Unauthorized"})
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._reply(400, {"error": "ERR failed to parse the request body"})
                return
            status, payload = fake.handle(self.path, body, self.headers.get("Upstash-Encoding") == "base64")
            self._reply(status, payload)

        def _reply(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def upstash_server(redis_url: str, token: str) -> Iterator[tuple[str, FakeUpstash]]:
    """Serve the fake on a loopback port; yields its base URL and the fake (for ``commands``, ``down``)."""
    fake = FakeUpstash(redis_url, token)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fake-upstash", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        fake.close()
