"""The gateway's gunicorn settings, shipped inside the package so that an installed wheel serves
the same way as a checkout: ``tvgw serve`` runs ``gunicorn -c python:tvgw.gunicorn_conf``, and the
checkout's ``gunicorn.conf.py`` (which ``gunicorn wsgi:app`` reads by itself) imports this module.
Nothing here depends on the working directory: the database and the model store are the
``TVGW_*`` paths, resolved against the directory the gateway was started in.

Threaded workers that buffer requests (``webhook.worker``): each worker's event loop reads a
request, head and body, without blocking, and hands it to one of its threads only once it is
whole. A client that sends half a request and stalls (or trickles it a byte at a time) holds a
socket, not a thread, and is closed (408) when it has not finished ``request_timeout`` seconds
after connecting. Connections per worker are bounded by ``worker_connections``; at the bound the
oldest idle or unfinished one is closed, so held connections never stop a worker accepting.
gunicorn's stock gthread worker instead gave a thread to every half-sent request: eight of them
stalled all alerts. Put a reverse proxy (nginx, Caddy) in front for TLS on 443 (this worker
speaks plain HTTP/1.1 only).
Override anything on the command line (``gunicorn -b 0.0.0.0:8000 wsgi:app``) or with
``GUNICORN_CMD_ARGS``.
"""

__all__ = [
    "accesslog", "bind", "child_exit", "control_socket_disable", "errorlog", "graceful_timeout",
    "keepalive", "limit_request_field_size", "limit_request_fields", "limit_request_line",
    "on_starting", "threads", "timeout", "worker_class", "worker_connections", "worker_exit", "workers",
]  # fmt: skip

from webhook.worker import buffering_worker

bind = "127.0.0.1:8000"
workers = 2  # one per core on the reference 2-core machine; SQLite serialises writes anyway
threads = 4
# A whole request must arrive within request_timeout seconds (TradingView sends one in
# milliseconds); one larger than max_request_bytes goes to a thread, which refuses it (413).
worker_class = buffering_worker(request_timeout=5.0, max_request_bytes=128 * 1024)
# Sockets per worker (idle, unfinished and being served): well under the usual 1024-file limit.
worker_connections = 512
timeout = 10  # a request stuck longer than this is far past TradingView's 3 s limit
graceful_timeout = 10
keepalive = 5
limit_request_line = 4096
limit_request_fields = 50
limit_request_field_size = 8190
accesslog = None  # the gateway logs one line per alert itself
errorlog = "-"
# gunicorn's control socket (for its ``gunicornc`` tool) would be created in $XDG_RUNTIME_DIR or
# ~/.gunicorn: the gateway is driven by signals (TERM, HUP, TTIN/TTOU) and writes nothing
# outside its own state, so it is off.
control_socket_disable = True


def on_starting(server):
    """Before any worker starts: migrate the schema and settle what a crash left half-done."""
    from settings import ConfigError
    from storage.database import SchemaTooNewError
    from webhook.recovery import recover

    try:
        lines = recover()
    except (ConfigError, SchemaTooNewError) as exc:  # a one-line reason, not a traceback; no worker starts
        server.log.error("tvgw: %s", exc)
        raise SystemExit(2) from None
    for line in lines:
        server.log.info("recovery: %s", line)


# --- operator surface: Prometheus multiprocess mode (webhook/metrics.py) ---
def _prometheus_multiproc_dir():
    """Each worker writes its counters to files in one directory that /metrics adds up. It must
    be set here, in the master, before any worker imports prometheus_client; a fresh directory
    per start, so counts from a previous run are never added in, removed when the master exits."""
    import atexit
    import os
    import shutil
    import tempfile

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        path = tempfile.mkdtemp(prefix="tvgw-prometheus-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        atexit.register(shutil.rmtree, path, True)


_prometheus_multiproc_dir()


def worker_exit(server, worker):
    """In the worker, as it exits: its background loops stop before its connections close."""
    from webhook import stop_background

    stop_background()


def child_exit(server, worker):
    """A dead worker's live gauges are dropped (its counters stay counted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
