"""Failover figures: two gateway hosts on one PostgreSQL behind nginx, one SIGKILLed mid-stream.

Usage: python -m bench.bench_failover [--alerts 200] [--kill-after 100] [--postgres URL]

The scenario of ``tests/e2e/test_failover.py`` (the paper book and a live account on the fake
Binance; real gunicorn masters, Debian's nginx, a throwaway PostgreSQL unless ``--postgres``),
with more alerts: how many got a 2xx, the answer times before and after the kill (p50, p99,
max), how many the survivor answered as duplicates of what the dead host had recorded, and
how many orders each account holds against how many the exchange saw.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections import Counter
from pathlib import Path

from tests import pg_server
from tests.conftest import PostgresSchemas, db_rows
from tests.e2e.test_failover import run_stream, start_hosts
from tests.fake_exchange import FakeBinance


def quantiles(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"p50 {statistics.median(ms):.0f} ms, p99 {p99:.0f} ms, max {ms[-1]:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=200)
    parser.add_argument("--kill-after", type=int, default=100)
    parser.add_argument("--postgres", help="a PostgreSQL server URL (default: start a throwaway one)")
    args = parser.parse_args()
    server = None if args.postgres else Path(tempfile.mkdtemp(prefix="tvgw-bench-pg-"))
    url = args.postgres or pg_server.start(server, durable=True)  # type: ignore[arg-type]
    schemas = PostgresSchemas(url)
    exchange = FakeBinance()
    exchange.start()
    with tempfile.TemporaryDirectory() as tmp:
        database = schemas.new("failover")
        hosts = start_hosts(Path(tmp), database, exchange)
        try:
            stream = run_stream(hosts, total=args.alerts, kill_after=args.kill_after)
        finally:
            hosts.stop()
            exchange.stop()
        before = [took for n, _, _, took in stream.sent if n < args.kill_after]
        after = [took for n, _, _, took in stream.sent if n >= args.kill_after]
        ok = sum(1 for _, status, _, _ in stream.sent if 200 <= status < 300)
        statuses = Counter(body.get("status") for _, _, body, _ in stream.sent)
        orders = Counter(r["broker"] for r in db_rows(database, "SELECT broker FROM orders"))
        print(f"{len(stream.sent)} alerts through nginx, host a SIGKILLed after {args.kill_after}")
        print(f"2xx: {ok}/{len(stream.sent)}; answers: {dict(statuses)}")
        print(f"before the kill: {quantiles(before)}")
        print(f"after the kill:  {quantiles(after)} (the first one: {after[0] * 1000:.0f} ms)")
        log = (hosts.folder / "error.log").read_text(errors="replace").splitlines()
        dropped = sum("upstream prematurely closed" in line or "reset by peer" in line for line in log)
        refused = sum("connect() failed" in line for line in log)
        print(f"nginx passed on to host b: {dropped} requests host a dropped mid-way, {refused} it refused")
        print(f"orders in the store: {dict(orders)}; orders the fake exchange saw: {len(exchange.orders)} "
              f"({len({o['clientOrderId'] for o in exchange.orders})} distinct client ids)")  # fmt: skip
    schemas.drop_all()
    if server is not None:
        pg_server.stop(server)


if __name__ == "__main__":
    main()
