"""Alert latency for other symbols while one symbol's ticker stalls: a real gunicorn gateway
(the shipped config: 2 workers x 4 threads) trading through real ccxt against the local fake
Binance, prices from the exchange's tickers (no candle store), the account holding BTC and ETH
(so its equity needs their prices).

Usage: python -m bench.bench_stalls [--alerts 80] [--interval 0.25] [--stall 10]

Two phases in one run, on one gateway: ``--alerts`` ETH/USDT and SOL/USDT alerts (buy and sell
by turns, one every ``--interval`` seconds, each on its own thread as TradingView sends them)
with no stall, then the same while every BTCUSDT ticker request answers after ``--stall``
seconds and a BTC alert arrives every second. Prints p50/p99/max of the other symbols' answers
per phase, the ratio of the stalled phase to the calm one, and the BTC alerts' own latency.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import requests

from tests.conftest import PASSPHRASE, LiveGateway, start_gateway
from tests.fake_exchange import DEFAULT_API_KEY, DEFAULT_SECRET, FakeBinance

#: The fake's own prices (an alert's price must lie within the gateway's band of the ticker).
PRICES = {"BTCUSDT": 50000.0, "ETHUSDT": 3000.0, "SOLUSDT": 150.0}
#: About 30 USDT per order: above the 5 USDT minimum, small beside the fake's balances.
CONTRACTS = {"BTCUSDT": 0.0006, "ETHUSDT": 0.01, "SOLUSDT": 0.2}
STALLED = "BTCUSDT"
OTHERS = ("ETHUSDT", "SOLUSDT")


def alert(ticker: str, n: int) -> dict[str, object]:
    return {
        "passphrase": PASSPHRASE, "ticker": ticker, "exchange": "BINANCE", "interval": "60",
        "action": "buy" if n % 2 == 0 else "sell", "contracts": CONTRACTS[ticker],
        "price": PRICES[ticker], "id": f"{ticker}-{n}-{time.time_ns()}",
        "timenow": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }  # fmt: skip


def timed_post(gateway: LiveGateway, body: dict[str, object]) -> tuple[float, int, str]:
    """Seconds until the answer, its HTTP status and the alert's status."""
    began = time.perf_counter()
    try:
        answer = requests.post(gateway.url + "/webhook", data=json.dumps(body), timeout=30)
    except requests.RequestException as exc:
        return time.perf_counter() - began, 0, type(exc).__name__
    elapsed = time.perf_counter() - began
    try:
        status = str(answer.json().get("status"))
    except ValueError:
        status = "not json"
    return elapsed, answer.status_code, status


def phase(
    gateway: LiveGateway, pool: ThreadPoolExecutor, count: int, interval: float, stalled_too: bool
) -> tuple[list[tuple[float, int, str]], list[tuple[float, int, str]]]:
    """``count`` alerts for the other symbols at a fixed rate (and, when ``stalled_too``, one
    for the stalled symbol every second); their (latency, http, status), others then stalled."""
    others: list[Future[tuple[float, int, str]]] = []
    stalled: list[Future[tuple[float, int, str]]] = []
    start = time.monotonic()
    for i in range(count):
        time.sleep(max(0.0, start + i * interval - time.monotonic()))
        others.append(pool.submit(timed_post, gateway, alert(OTHERS[i % len(OTHERS)], i // len(OTHERS))))
        if stalled_too and i % max(1, round(1 / interval)) == 0:
            stalled.append(pool.submit(timed_post, gateway, alert(STALLED, i)))
    return [f.result() for f in others], [f.result() for f in stalled]


def summary(name: str, results: list[tuple[float, int, str]]) -> float:
    """Print one row; returns the p99 in seconds."""
    times = sorted(r[0] for r in results)
    p50 = statistics.median(times)
    p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
    outcomes: dict[str, int] = {}
    for _, http, status in results:
        key = f"{http} {status}"
        outcomes[key] = outcomes.get(key, 0) + 1
    shown = ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items()))
    print(f"{name:44} n={len(times):3}  p50 {p50 * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms  "
          f"max {times[-1] * 1000:7.1f} ms  ({shown})")  # fmt: skip
    return p99


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alerts", type=int, default=80, help="other-symbol alerts per phase")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between alerts")
    parser.add_argument("--stall", type=float, default=10.0, help="seconds the stalled ticker holds")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tvgw-bench-stalls-"))
    with FakeBinance() as fake:
        gateway = start_gateway(
            tmp, prices=None, TVGW_BROKER="binance", TVGW_EXCHANGE_API_URL=fake.url,
            TVGW_BINANCE_API_KEY=DEFAULT_API_KEY, TVGW_BINANCE_SECRET=DEFAULT_SECRET,
            TVGW_EXIT_WATCH_INTERVAL_S="0", TVGW_RESOLVE_INTERVAL_S="0",
        )  # fmt: skip
        try:
            with ThreadPoolExecutor(64) as pool:
                warm = [timed_post(gateway, alert(t, i)) for i in range(2) for t in (*OTHERS, STALLED)]
                if any(http != 200 for _, http, _ in warm):
                    print(f"warm-up alerts failed: {warm}\n{gateway.log()[-3000:]}", file=sys.stderr)
                    return 1
                calm, _ = phase(gateway, pool, args.alerts, args.interval, stalled_too=False)
                fake.stalls.add(f"GET /api/v3/ticker/24hr?symbol={STALLED}", args.stall)
                stalled_others, stalled_own = phase(
                    gateway, pool, args.alerts, args.interval, stalled_too=True
                )
                fake.stalls.remove()
            held = [h for h in fake.stalls.held if h[2] == STALLED]
        finally:
            gateway.stop()
    print(
        f"gunicorn 2 workers x 4 threads, real ccxt against the fake Binance; {args.alerts} alerts "
        f"per phase, one every {args.interval:g} s; {STALLED} ticker held {args.stall:g} s in phase 2"
    )
    base = summary("other symbols, no stall", calm)
    slow = summary(f"other symbols, {STALLED} ticker stalled {args.stall:g} s", stalled_others)
    if stalled_own:
        summary(f"{STALLED} itself, while stalled", stalled_own)
    print(f"p99 ratio stalled / calm: {slow / base:.2f}   ({len(held)} {STALLED} ticker requests held)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
