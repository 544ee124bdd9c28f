"""Local stand-ins for Telegram's Bot API and a Discord webhook: they record what they are
sent and can be told to fail (HTTP 500) or to hang (hold every request until the test releases
them)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

__all__ = ["FakeChat", "fake_chat"]


class FakeChat:
    """One loopback HTTP server; ``received`` holds ``(path, json body)`` per POST."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._arrived = threading.Condition()
        self.mode = "ok"  # "ok" | "fail" | "hang"
        #: In "hang" mode every request is held until this is set (by the test, or by close()).
        self.released = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with fake._arrived:
                    fake.received.append((self.path, body))
                    fake._arrived.notify_all()
                if fake.mode == "hang":
                    fake.released.wait(timeout=120)
                status = 500 if fake.mode == "fail" else 200
                payload = b'{"ok": true, "result": {}}' if status == 200 else b'{"ok": false}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                with contextlib.suppress(OSError):  # the client gave up (its timeout)
                    self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 15) -> list[tuple[str, dict[str, Any]]]:
        """What has arrived once ``count`` requests have (or ``timeout`` seconds have passed)."""
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.received) >= count, timeout)
            return list(self.received)

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_chat() -> Iterator[FakeChat]:
    chat = FakeChat()
    yield chat
    chat.close()
