"""A local HTTP server on 127.0.0.1 that replays recorded feed and API responses.

Sentiment tests point every source's base URL at it, so the real ``requests`` + parsing code
runs end to end without the internet, and the request log lets a test prove that a cached
call did not touch the network.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

DATA = Path(__file__).resolve().parent / "data"


@dataclass
class Route:
    body: bytes
    status: int = 200
    content_type: str = "application/json"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class ReplayServer:
    """Routes are keyed by (method, path); unknown paths answer 404."""

    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    url: str = ""

    def serve(
        self, method: str, path: str, body: bytes | str, *, status: int = 200, content_type: str = ""
    ) -> None:
        data = body.encode() if isinstance(body, str) else body
        kind = content_type or (
            "application/rss+xml" if path.endswith((".xml", "/rss", "/feed")) else "application/json"
        )
        self.routes[(method, path)] = Route(data, status, kind)

    def serve_file(self, method: str, path: str, name: str, *, status: int = 200) -> None:
        self.serve(method, path, (DATA / name).read_bytes(), status=status)

    def hits(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]


def _handler(server: ReplayServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, method: str) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            server.requests.append(
                Request(
                    method, parts.path, parse_qs(parts.query), dict(self.headers), self.rfile.read(length)
                )
            )
            route = server.routes.get((method, parts.path))
            if route is None:
                route = Route(b'{"error": "not found"}', 404)
            self.send_response(route.status)
            self.send_header("Content-Type", route.content_type)
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            self.wfile.write(route.body)

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            return

    return Handler


@contextmanager
def running_server() -> Iterator[ReplayServer]:
    """A ReplayServer on an ephemeral loopback port, shut down on exit."""
    replay = ReplayServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(replay))
    replay.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield replay
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def rss_document(headlines: list[str], *, pub_date: str = "Tue, 14 May 2024 12:00:00 +0000") -> str:
    """A minimal valid RSS 2.0 document carrying ``headlines`` (for trend tests)."""
    items = "".join(
        f"<item><title><![CDATA[{h}]]></title><link>https://example.test/{i}</link>"
        f"<pubDate>{pub_date}</pubDate></item>"
        for i, h in enumerate(headlines)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>test</title>'
        f"<link>https://example.test</link><description>test</description>{items}</channel></rss>"
    )
