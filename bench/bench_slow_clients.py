"""A genuine alert's latency while slow clients hold connections open (slowloris).

Usage: python -m bench.bench_slow_clients [--held 64] [--alerts 20] [--worker gthread]

Starts the gateway (paper execute, the shipped gunicorn.conf.py) and posts ``--alerts`` alerts one
after another, each on a new connection: first with no other client, then while ``--held``
connections sit on half-sent requests (a third stop inside the head, a third after the headers
inside a body, a third trickle a byte every 0.5 s). ``--worker`` repeats both with another
gunicorn worker class in the same run (gunicorn's stock ``gthread``, what shipped before), for
comparison. An alert not answered within ``--give-up`` seconds counts as timed out and ends
that case. Prints p50 and max latency and the ratio of p50 with and without held connections.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import requests

from bench.bench_gateway import PASSPHRASE, gateway_env, start, stop

HEAD = b"POST /webhook HTTP/1.1\r\nHost: x\r\n"
BODY = b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 400\r\n\r\n" + b'{"ticker": "BTC'
TRICKLE = b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 100


@contextlib.contextmanager
def held_connections(port: int, count: int) -> Iterator[None]:
    """``count`` half-sent requests held open (a third of them trickling) until the block ends."""
    socks = []
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall((HEAD, BODY, TRICKLE[:1])[i % 3])
        socks.append(sock)
    trickling = socks[2::3]
    stop_event = threading.Event()

    def trickle() -> None:
        for offset in range(1, len(TRICKLE)):
            for sock in trickling:
                with contextlib.suppress(OSError):  # closed by the server: its deadline
                    sock.send(TRICKLE[offset : offset + 1])
            if stop_event.wait(0.5):
                return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    time.sleep(0.5)  # let the server accept them all before the first alert
    try:
        yield
    finally:
        stop_event.set()
        thread.join()
        for sock in socks:
            sock.close()


def alert_latencies(port: int, alerts: int, give_up: float, tag: str) -> tuple[list[float], int]:
    """Seconds per alert (each on a new connection), and how many timed out (then it stops)."""
    latencies = []
    for n in range(alerts):
        body = {
            "passphrase": PASSPHRASE,
            "ticker": "BTCUSDT",
            "action": "buy" if n % 2 else "sell",
            "contracts": 0.001,
            "price": 30000.0,
            "id": f"slow-{tag}-{n}-{time.time_ns()}",
            "timenow": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        started = time.monotonic()
        try:
            response = requests.post(
                f"http://127.0.0.1:{port}/webhook", data=json.dumps(body), timeout=give_up
            )
        except requests.Timeout:
            return latencies, 1
        latencies.append(time.monotonic() - started)
        if response.status_code != 200:
            raise SystemExit(f"alert answered {response.status_code}: {response.text}")
    return latencies, 0


def measure(
    worker: str | None, port: int, args: argparse.Namespace, tmp: Path
) -> list[tuple[int, list[float], int]]:
    env = gateway_env(tmp, f"slow-{worker or 'shipped'}")
    if worker:
        env["GUNICORN_CMD_ARGS"] = f"-k {worker}"
    proc = start("wsgi:app", env, port)
    try:
        alert_latencies(port, 4, args.give_up, "warm")
        rows = [(0, *alert_latencies(port, args.alerts, args.give_up, "idle"))]
        with held_connections(port, args.held):
            rows.append((args.held, *alert_latencies(port, args.alerts, args.give_up, "held")))
        return rows
    finally:
        stop(proc)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--held", type=int, default=64)
    parser.add_argument("--alerts", type=int, default=20)
    parser.add_argument("--give-up", type=float, default=10.0, help="seconds before an alert counts as lost")
    parser.add_argument("--worker", action="append", default=[], help="also measure this worker class")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tvgw-bench-slow-"))
    print(
        f"{'worker':16} {'held':>5} {'alerts':>6} {'p50 ms':>8} {'max ms':>8} {'timeouts':>8} "
        f"{'p50 ratio':>9}"
    )
    for i, worker in enumerate([None, *args.worker]):
        rows = measure(worker, 18_400 + i, args, tmp)
        idle_p50 = statistics.median(rows[0][1])
        for held, latencies, timeouts in rows:
            p50 = statistics.median(latencies) if latencies else float("inf")
            worst = max(latencies) if latencies else float("inf")
            print(
                f"{worker or 'shipped':16} {held:5d} {len(latencies):6d} {p50 * 1000:8.1f} "
                f"{worst * 1000:8.1f} {timeouts:8d} {p50 / idle_p50:9.2f}"
            )
    print(f"(each alert on a new connection; give up after {args.give_up:.0f} s; {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
