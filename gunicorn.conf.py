"""gunicorn defaults for the gateway: ``gunicorn wsgi:app`` picks this file up by itself.

Threaded workers (gthread): a worker parks idle keep-alive connections in its event loop and
hands a request to one of its threads only once it arrives, so one slow or stalled client ties
up at most one thread for at most ``timeout`` seconds, never the whole worker. Put a reverse proxy
(nginx, Caddy) in front for TLS on 443; it also buffers slow uploads.
Override anything on the command line (``gunicorn -b 0.0.0.0:8000 wsgi:app``) or with
``GUNICORN_CMD_ARGS``.
"""

bind = "127.0.0.1:8000"
workers = 2  # one per core on the reference 2-core machine; SQLite serialises writes anyway
worker_class = "gthread"
threads = 4
timeout = 10  # a request stuck longer than this is far past TradingView's 3 s limit
graceful_timeout = 10
keepalive = 5
limit_request_line = 4096
limit_request_fields = 50
limit_request_field_size = 8190
accesslog = None  # the gateway logs one line per alert itself
errorlog = "-"


def on_starting(server):
    """Before any worker starts: migrate the schema and settle what a crash left half-done."""
    from tvgw.config import ConfigError
    from webhook.recovery import recover

    try:
        lines = recover()
    except ConfigError as exc:  # a one-line reason, not a traceback, and no worker starts
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


def child_exit(server, worker):
    """A dead worker's live gauges are dropped (its counters stay counted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
