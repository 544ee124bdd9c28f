"""The gunicorn worker the gateway ships with: gthread, except that a thread never waits for a
request to arrive.

Why: gunicorn's gthread worker hands a connection to a thread as soon as its socket is readable,
and the thread then blocks reading the rest of the request. Eight clients that send half a
request and stop (slowloris) therefore held all 2 × 4 threads, and every genuine alert waited
behind them until TradingView gave up. Here a thread takes only what has already arrived: a
whole request (the usual case) it serves at once, as gthread did; an unfinished one goes back to
the event loop, which gathers the rest (head and body, ``Content-Length`` or chunked) without
blocking, like nginx's request buffering, under a per-request deadline and a size cap, and hands
it to a thread once it is whole. A client that has not sent a whole request by the deadline is
closed (408). The connections a worker holds are bounded by ``worker_connections``; when they
are all taken, the oldest idle or unfinished one is closed to make room, so slow clients never
stop the worker accepting.

A thread reads only those buffered bytes, never waiting on the socket; its writes (a reply to a
client that does not read it) wait at most the same time per send; and closing a connection
lingers in the event loop rather than in a blocking drain.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import struct
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from typing import Any

from gunicorn import http
from gunicorn.errors import ConfigError
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import TConn, ThreadWorker

__all__ = ["BufferingWorker", "RequestState", "buffering_worker", "request_state"]

#: How long a closed connection may keep sending before it is cut (what gunicorn's blocking
#: ``close_graceful`` waited in the event loop, here without blocking it).
LINGER_SECONDS = 2.0
LINGER_MAX_BYTES = 64 * 1024
_RECV_BYTES = 64 * 1024
#: Request line and headers on top of a body (gunicorn's own limits allow about 400 KiB, but no
#: client of ours sends more than a few hundred bytes of head).
HEAD_ROOM = 16 * 1024
_TIMEOUT_REPLY = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_CONTINUE_REPLY = b"HTTP/1.1 100 Continue\r\n\r\n"


class RequestState(Enum):
    """How far a buffered request has arrived."""

    INCOMPLETE = "incomplete"
    #: Head and whole body are buffered: a thread can serve it without touching the socket.
    COMPLETE = "complete"
    #: Malformed, or larger than the cap: a thread's parser answers it (400, 413) and closes.
    HAND_OVER = "hand_over"


@dataclass(frozen=True)
class _Head:
    body_start: int
    content_length: int | None
    chunked: bool
    expect_continue: bool


def request_state(data: bytes | bytearray, limit: int) -> RequestState:
    """Whether ``data`` (the bytes of a connection so far) holds a whole HTTP/1.x request.

    Only framing is read here; gunicorn's parser still validates everything. Whatever this
    scan cannot make sense of is handed over, so the parser gives the client its error."""
    head = _parse_head(data, limit)
    if isinstance(head, RequestState):
        return head
    if head.chunked:
        return _chunked_state(data, head.body_start, limit)
    if head.content_length is None:
        return RequestState.COMPLETE
    if head.body_start + head.content_length > limit:
        return RequestState.HAND_OVER  # the app refuses it (413) from the header alone
    if len(data) - head.body_start >= head.content_length:
        return RequestState.COMPLETE
    return RequestState.INCOMPLETE


def _parse_head(data: bytes | bytearray, limit: int) -> _Head | RequestState:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return RequestState.HAND_OVER if len(data) >= limit else RequestState.INCOMPLETE
    lengths: set[bytes] = set()
    chunked = expect_continue = False
    for line in bytes(data[:end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip()
        if name == b"content-length":
            lengths.add(value)
        elif name == b"transfer-encoding":
            chunked = True  # chunked or not, an invalid mix is the parser's to refuse
        elif name == b"expect":
            expect_continue = value.lower() == b"100-continue"
    if (chunked and lengths) or len(lengths) > 1:
        return RequestState.HAND_OVER
    length = lengths.pop() if lengths else None
    if length is not None and not length.isdigit():
        return RequestState.HAND_OVER
    return _Head(end + 4, int(length) if length is not None else None, chunked, expect_continue)


def _chunked_state(data: bytes | bytearray, pos: int, limit: int) -> RequestState:
    """Walk the chunks from ``pos``: complete at the last chunk and the end of its trailers."""
    while True:
        line_end = data.find(b"\r\n", pos)
        if line_end < 0:
            break
        size_text = bytes(data[pos:line_end]).partition(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return RequestState.HAND_OVER
        if size == 0:
            trailers_end = line_end + 2
            if data[trailers_end : trailers_end + 2] == b"\r\n" or data.find(b"\r\n\r\n", line_end) >= 0:
                return RequestState.COMPLETE
            break
        pos = line_end + 2 + size + 2
        if pos > len(data):
            break
    return RequestState.HAND_OVER if len(data) >= limit else RequestState.INCOMPLETE


class _BufferOnlyUnreader(SocketUnreader):
    """gunicorn's socket reader for a thread that reads only what the event loop buffered:
    past it, end of data, which the parser treats as the client going away. So a thread never
    waits on a client, whatever made it read (a body the app reads past the cap, a drain)."""

    def chunk(self, size_hint: int | None = None) -> bytes:
        return b""


@dataclass(eq=False)
class _Reading:
    """A connection whose request is arriving in the event loop (or, ``lingering``, whose
    reply is sent and whose close waits for the client)."""

    conn: TConn
    deadline: float
    buf: bytearray = field(default_factory=bytearray)
    continue_sent: bool = False
    drained: int = 0


class BufferingWorker(ThreadWorker):
    """gthread with request buffering in the event loop (see the module docstring)."""

    #: Seconds a client has, from its connection (or its kept-alive connection waking), to
    #: send a whole request. TradingView sends one in milliseconds.
    request_timeout = 5.0
    #: Largest request buffered in the loop; a larger one goes to a thread, which refuses it.
    #: Raised at start-up to cover the app's own body limit (see ``load_wsgi``).
    max_request_bytes = 128 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reading: dict[TConn, _Reading] = {}
        self.lingering: dict[TConn, _Reading] = {}

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        """Raw bytes are buffered, so TLS and HTTP/2 belong in the reverse proxy in front."""
        if cfg.is_ssl or any(p != "h1" for p in cfg.http_protocols):
            raise ConfigError(f"{cls.__name__} serves plain HTTP/1.1: terminate TLS and HTTP/2 in the proxy")
        super().check_config(cfg, log)

    def load_wsgi(self) -> None:
        """A body the app accepts must fit in the buffer, since a thread reads nothing more:
        raise the cap to the app's ``MAX_CONTENT_LENGTH`` plus room for the head."""
        super().load_wsgi()
        body_limit = getattr(self.wsgi, "config", {}).get("MAX_CONTENT_LENGTH") or 0
        if body_limit + HEAD_ROOM > self.max_request_bytes:
            self.max_request_bytes = body_limit + HEAD_ROOM
            self.log.info("max_request_bytes raised to %d for the app's body limit", self.max_request_bytes)

    # -- reading a request in the event loop -------------------------------------------------

    def enqueue_req(self, conn: TConn) -> None:
        """Every path by which gthread hands a connection to a thread (accept, a kept-alive
        connection waking, pipelined bytes) comes here. A thread takes what has arrived without
        waiting: a whole request (the usual case) it serves at once, as gthread would; an
        unfinished one goes back to the event loop, which gathers the rest."""
        reading = _Reading(conn, time.monotonic() + self.request_timeout)
        if conn.parser is not None:
            reading.buf += conn.parser.unreader.take_buffered()
        conn.sock.setblocking(False)
        self._make_room()
        self._submit(conn, reading)

    def _submit(self, conn: TConn, reading: _Reading | None) -> None:
        """gthread's hand-over to the pool, with the request read so far (None: all of it is in
        the parser's buffer)."""
        fs = self.tpool.submit(self._serve, conn, reading)
        fs.add_done_callback(lambda fut: self.method_queue.defer(self.finish_request, conn, fut))

    def _serve(self, conn: TConn, reading: _Reading | None) -> bool | _Reading:
        """In a thread: complete the request from what has arrived, never waiting, and serve it;
        or give it back to the loop unfinished."""
        if reading is not None:
            data = _recv(conn.sock)
            if data == b"":
                return False  # the client left: close
            reading.buf += data or b""
            if request_state(reading.buf, self.max_request_bytes) is RequestState.INCOMPLETE:
                return reading
            self._load_parser(reading)
        return bool(self.handle(conn))

    def _watch(self, reading: _Reading) -> None:
        """In the loop: gather the rest of an unfinished request as it arrives."""
        self.reading[reading.conn] = reading
        self._maybe_continue(reading)
        self.poller.register(reading.conn.sock, selectors.EVENT_READ, partial(self._on_readable, reading))
        # Connections accepted while the threads had them were not yet evictable: if they
        # filled worker_connections, gthread stopped accepting; make room, so it starts again.
        self._make_room()

    def _on_readable(self, reading: _Reading, _sock: socket.socket) -> None:
        data = _recv(reading.conn.sock)
        if data == b"":  # the client left before finishing its request
            self._close(reading.conn, self.reading)
            return
        reading.buf += data or b""
        if request_state(reading.buf, self.max_request_bytes) is RequestState.INCOMPLETE:
            self._maybe_continue(reading)
            return
        del self.reading[reading.conn]
        self._unwatch(reading.conn)
        self._load_parser(reading)
        self._submit(reading.conn, None)

    def _maybe_continue(self, reading: _Reading) -> None:
        """A client that sent ``Expect: 100-continue`` waits for the go-ahead before its body."""
        if reading.continue_sent:
            return
        head = _parse_head(reading.buf, self.max_request_bytes)
        if isinstance(head, _Head) and head.expect_continue and len(reading.buf) == head.body_start:
            reading.continue_sent = True
            _send_quietly(reading.conn.sock, _CONTINUE_REPLY)

    def _load_parser(self, reading: _Reading) -> None:
        """Put the whole request where gthread's thread will parse it from."""
        conn = reading.conn
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
            conn.parser.unreader = _BufferOnlyUnreader(conn.sock)
            # Replies are bounded too: a client that stops reading cannot hold the thread. In
            # the kernel, not by Python's settimeout, which cut throughput by a third.
            seconds, fraction = divmod(self.request_timeout, 1)
            timeval = struct.pack("ll", int(seconds), int(fraction * 1_000_000))
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        conn.parser.unreader.unread(bytes(reading.buf))
        conn.data_ready = True  # gthread's thread then skips its own wait for data

    # -- closing ---------------------------------------------------------------------------

    def finish_request(self, conn: TConn, fs: Future[Any]) -> None:
        """Kept-alive connections go back to gthread's poller; closing ones linger in the loop
        (gthread's graceful close drained them for up to 2 s in the event loop, blocking it);
        unfinished requests are watched until they are whole."""
        result = fs.result() if not fs.cancelled() and fs.exception() is None else False
        if isinstance(result, _Reading) and self.alive:
            self._watch(result)
            return
        if result is True:
            super().finish_request(conn, fs)
            return
        try:
            conn.sock.shutdown(socket.SHUT_WR)
            conn.sock.setblocking(False)
        except OSError:
            self.nr_conns -= 1
            conn.close()
            return
        lingering = _Reading(conn, time.monotonic() + LINGER_SECONDS)
        self.lingering[conn] = lingering
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_linger_readable, lingering))

    def _on_linger_readable(self, lingering: _Reading, _sock: socket.socket) -> None:
        data = _recv(lingering.conn.sock)
        if data is None:
            return
        lingering.drained += len(data)
        if not data or lingering.drained > LINGER_MAX_BYTES:
            self._close(lingering.conn, self.lingering)

    def _close(self, conn: TConn, table: dict[TConn, _Reading], reply: bytes = b"") -> None:
        """Drop a connection we still watch (unregister, optional last words, close)."""
        self._unwatch(conn)
        if reply:
            _send_quietly(conn.sock, reply)
        del table[conn]
        self.nr_conns -= 1
        conn.close()

    def _unwatch(self, conn: TConn) -> None:
        with contextlib.suppress(KeyError, ValueError):  # not registered: done before its first wait
            self.poller.unregister(conn.sock)

    # -- deadlines and the connection bound --------------------------------------------------

    def murder_pending(self) -> None:
        """Called by gthread's loop about once a second: expire slow requests and lingerers."""
        super().murder_pending()
        now = time.monotonic()
        for table in (self.reading, self.lingering):
            for conn, entry in list(table.items()):
                if entry.deadline > now:
                    continue
                if table is self.reading:
                    self.log.info("closed %s: no whole request within %.1f s (%d bytes received)",
                                  _peer(conn), self.request_timeout, len(entry.buf))  # fmt: skip
                self._close(conn, table, _TIMEOUT_REPLY if table is self.reading and entry.buf else b"")

    def _make_room(self) -> None:
        """At ``worker_connections``, close the oldest connection nobody is being served on
        (finished and lingering, idle kept-alive, then still-incomplete), so that held
        connections bound the worker's file descriptors without ever stopping it accepting."""
        while self.nr_conns >= self.worker_connections:
            if self.lingering:
                self._close(next(iter(self.lingering)), self.lingering)
            elif self.keepalived_conns:
                conn = self.keepalived_conns.popleft()
                self.poller.unregister(conn.sock)
                self.nr_conns -= 1
                conn.close()
            elif self.reading:  # the newest connection is not here yet: it is being read
                conn = min(self.reading, key=lambda c: self.reading[c].deadline)
                self.log.info("closed %s: worker_connections reached, oldest incomplete request", _peer(conn))
                self._close(conn, self.reading, _TIMEOUT_REPLY)
            else:
                return


def _recv(sock: socket.socket) -> bytes | None:
    """One non-blocking read: the bytes, b"" at end of stream (or a reset), None if none yet."""
    try:
        return sock.recv(_RECV_BYTES)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
            return None
        return b""


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    """Best effort, never blocking: the client may already be gone."""
    with contextlib.suppress(OSError):
        sock.send(data)


def _peer(conn: TConn) -> str:
    client = conn.client
    return f"{client[0]}:{client[1]}" if isinstance(client, tuple) else str(client)


def buffering_worker(*, request_timeout: float, max_request_bytes: int) -> type[BufferingWorker]:
    """The worker class with these limits, for ``worker_class`` in gunicorn.conf.py."""
    if request_timeout <= 0 or max_request_bytes <= 0:
        raise ValueError("request_timeout and max_request_bytes must be positive")
    attrs = {"request_timeout": request_timeout, "max_request_bytes": max_request_bytes}
    return type("BufferingWorker", (BufferingWorker,), attrs)
