"""The request framing the buffering worker reads in its event loop (webhook/worker.py), and the
logging set-up that must leave gunicorn's own log format working. The worker itself runs under
a real gunicorn in tests/e2e/test_slow_clients.py."""

from __future__ import annotations

import logging
import sys

import pytest

from webhook.worker import RequestState, buffering_worker, request_state

LIMIT = 1024
HEAD = b"POST /webhook HTTP/1.1\r\nHost: x\r\n"


def state(data: bytes, limit: int = LIMIT) -> RequestState:
    return request_state(data, limit)


def every_prefix(data: bytes) -> list[RequestState]:
    return [state(data[:n]) for n in range(len(data))]


def test_a_request_is_incomplete_until_its_last_byte_then_complete() -> None:
    body = b'{"ticker": "BTCUSDT"}'
    for request in (
        HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n10\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n",
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n",
    ):
        assert set(every_prefix(request)) == {RequestState.INCOMPLETE}, request
        assert state(request) is RequestState.COMPLETE, request


def test_pipelined_bytes_after_a_request_do_not_make_it_incomplete() -> None:
    request = HEAD + b"Content-Length: 2\r\n\r\n{}"
    assert state(request + b"GET /healthz HTTP/1.1\r\n") is RequestState.COMPLETE


def test_header_names_are_case_insensitive() -> None:
    assert state(HEAD + b"content-LENGTH: 3\r\n\r\nab") is RequestState.INCOMPLETE
    assert state(HEAD + b"content-LENGTH: 3\r\n\r\nabc") is RequestState.COMPLETE


@pytest.mark.parametrize(
    "request_bytes",
    [
        HEAD + b"Content-Length: 12abc\r\n\r\n",  # not a number
        HEAD + b"Content-Length: -1\r\n\r\n",
        HEAD + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n",  # conflicting lengths
        HEAD + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",  # smuggling shape
        HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",  # not a chunk size
    ],
)
def test_malformed_framing_goes_to_the_parser_at_once(request_bytes: bytes) -> None:
    """gunicorn's parser answers these with a 400 without waiting: holding them would only
    delay the client's error until the deadline."""
    assert state(request_bytes) is RequestState.HAND_OVER


def test_oversized_requests_go_to_the_parser_instead_of_growing_the_buffer() -> None:
    assert state(HEAD + b"Content-Length: %d\r\n\r\n" % LIMIT) is RequestState.HAND_OVER
    assert state(HEAD + b"X-Pad: " + b"a" * LIMIT) is RequestState.HAND_OVER  # a head without end
    chunk = b"10\r\n" + b"x" * 16 + b"\r\n"
    chunked = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
    assert state(chunked + chunk * 10) is RequestState.INCOMPLETE
    assert state(chunked + chunk * 60) is RequestState.HAND_OVER
    assert state(HEAD + b"Content-Length: 100\r\n\r\n") is RequestState.INCOMPLETE  # under the cap


def test_worker_limits_must_be_positive() -> None:
    worker = buffering_worker(request_timeout=2.5, max_request_bytes=4096)
    assert (worker.request_timeout, worker.max_request_bytes) == (2.5, 4096)
    with pytest.raises(ValueError, match="must be positive"):
        buffering_worker(request_timeout=0, max_request_bytes=4096)


def test_after_create_app_every_standard_record_field_still_formats(app: object) -> None:
    """The app tunes logging for speed; a format that uses any standard field with its type
    (gunicorn's is ``[%(process)d]``) must still work in the same process."""
    fmt = (
        "%(asctime)s %(created)f %(msecs)d %(relativeCreated)d %(levelno)d %(levelname)s %(name)s "
        "%(process)d %(processName)s %(thread)d %(threadName)s %(lineno)d %(funcName)s "
        "%(pathname)s %(filename)s %(module)s %(message)s"
    )
    record = logging.getLogger("gunicorn.error").makeRecord(
        "gunicorn.error", logging.INFO, "x.py", 1, "Worker exiting (pid: %s)", (1,), None
    )
    line = logging.Formatter(fmt).format(record)
    assert "Worker exiting (pid: 1)" in line
    if sys.version_info >= (3, 12):  # taskName is a record field from 3.12 on
        logging.Formatter("%(taskName)s").format(record)
