"""A bar-close burst: 200 alerts across 50 markets fired within one second, each answered within
TradingView's 3 s?

Usage: python -m bench.bench_burst [--markets 50] [--per-market 4] [--spread 1.0] [--rounds 3]

At a bar close every chart a trader watches fires at once. This starts, one at a time on
loopback with the shipped gunicorn settings: the bare Flask app (bench/bare_app.py, the
reference: parse JSON and answer) and the gateway executing on the paper book (ML off), and
sends each the same burst: per market a heartbeat and order alerts that carry the continuity
fields (sequence number, bar time, the position after and before), all markets interleaved,
each alert on its own connection at its own moment spread evenly over ``--spread`` seconds (as
TradingView's servers send them). An alert's latency runs from the moment it was due to go out
until its answer arrived, so a client thread that started late counts against the gateway.
Prints, per case, the medians over rounds of p50, p99 and the slowest answer, how many took 3 s
or more, how many were not 200, and the gateway's slowest answer over the reference's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from bench.bench_gateway import gateway_env, start, stop
from tests.conftest import free_port, seed_market

TRADINGVIEW_TIMEOUT_S = 3.0
PRICE = 100.0


def markets(count: int) -> list[str]:
    """``count`` spot tickers (AAAUSDT, AABUSDT, ...): the paper book trades any of them."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return [f"Q{letters[i // 26]}{letters[i % 26]}USDT" for i in range(count)]


def burst(tickers: list[str], per_market: int, passphrase: str, run: str) -> list[dict[str, Any]]:
    """The alerts of one bar close: per market a heartbeat, then entries adding to a long, each
    saying the position after and before it; markets interleaved."""
    now = time.time()
    bar = now - now % 60 - 60  # the bar that just closed, on a 1-minute chart
    alerts: list[dict[str, Any]] = []
    for step in range(per_market):
        for ticker in tickers:
            common = {
                "passphrase": passphrase, "ticker": ticker, "exchange": "BINANCE", "interval": "1",
                "time": int(bar * 1000), "timenow": int(now * 1000), "sequence": 1000 + step,
            }  # fmt: skip
            if step == 0:
                alerts.append({**common, "action": "heartbeat", "heartbeat_bars": 1, "close": PRICE,
                               "market_position": "flat", "market_position_size": 0})  # fmt: skip
                continue
            alerts.append({
                **common, "action": "buy", "contracts": 0.1, "price": PRICE, "order_id": f"{run}-{step}",
                "market_position": "long", "market_position_size": round(0.1 * step, 6),
                "prev_market_position": "long" if step > 1 else "flat",
                "prev_market_position_size": round(0.1 * (step - 1), 6),
            })  # fmt: skip
    return alerts


def fire(url: str, alerts: list[dict[str, Any]], spread: float) -> list[tuple[float, int]]:
    """(seconds from due to answer, HTTP status) per alert, each on its own connection."""
    results: list[tuple[float, int]] = [(float("nan"), 0)] * len(alerts)
    refusals: list[str] = []
    start_at = time.monotonic() + 0.5
    gap = spread / max(1, len(alerts) - 1)

    def send(i: int) -> None:
        due = start_at + i * gap
        time.sleep(max(0.0, due - time.monotonic()))
        try:
            response = requests.post(url, json=alerts[i], timeout=30)
            status = response.status_code
            if status != 200 and not refusals:
                refusals.append(response.text[:300])
                print(f"first answer that is not 200: HTTP {status} {refusals[0]}", file=sys.stderr)
        except requests.RequestException:
            status = 0
        results[i] = (time.monotonic() - due, status)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(alerts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def summary(results: list[tuple[float, int]]) -> dict[str, float]:
    seconds = sorted(r[0] for r in results)
    return {
        "p50": statistics.median(seconds) * 1000,
        "p99": seconds[min(len(seconds) - 1, int(0.99 * len(seconds)))] * 1000,
        "max": seconds[-1] * 1000,
        "late": sum(1 for s in seconds if s >= TRADINGVIEW_TIMEOUT_S),
        "non200": sum(1 for r in results if r[1] != 200),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--markets", type=int, default=50)
    parser.add_argument(
        "--per-market", type=int, default=4, help="alerts per market (a heartbeat, then buys)"
    )
    parser.add_argument("--spread", type=float, default=1.0, help="seconds the burst is spread over")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tvgw-burst-"))
    tickers = markets(args.markets)
    config = tmp / "burst.toml"
    # Risk limits wide enough for 50 open positions: the burst measures answers, not refusals.
    config.write_text("[risk]\nmax_open_positions = 1000\nmax_portfolio_risk = 1.0\n")
    cases = [("bare Flask (parse only)", "bench.bare_app:app"), ("gateway paper execute", "wsgi:app")]
    rounds: list[list[dict[str, float]]] = []
    for round_no in range(args.rounds):
        row = []
        for name, app in cases:
            port = free_port()  # never a fixed port: a server left on one would answer instead
            env = gateway_env(tmp, f"burst-{round_no}-{port}", TVGW_CONFIG=str(config))
            proc = start(app, env, port)
            try:
                if app == "wsgi:app":  # the markets' current 1-minute bar, fresh when the burst fires
                    prices = {t.removesuffix("USDT") + "/USDT": PRICE for t in tickers}
                    seed_market(env["TVGW_DATABASE"], prices, timeframe="1m")
                url = f"http://127.0.0.1:{port}/webhook"
                requests.post(url, json={"passphrase": "warm-up"}, timeout=10)  # connect once
                alerts = burst(tickers, args.per_market, env["TVGW_PASSPHRASE"], f"r{round_no}")
                row.append(summary(fire(url, alerts, args.spread)))
            finally:
                stop(proc)
            print(f"round {round_no + 1} {name}: {row[-1]}", file=sys.stderr)
        rounds.append(row)
    count = args.markets * args.per_market
    print(f"{count} alerts across {args.markets} markets in {args.spread:g} s, one connection each "
          f"(medians of {args.rounds} rounds; {os.cpu_count()} cores)")  # fmt: skip
    print(f"{'case':26} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'>=3 s':>6} {'non-200':>8} {'max/ref':>8}")
    for i, (name, _app) in enumerate(cases):
        runs = [row[i] for row in rounds]
        ratio = statistics.median(row[i]["max"] / row[0]["max"] for row in rounds)
        p50, p99, slowest = (statistics.median(r[k] for r in runs) for k in ("p50", "p99", "max"))
        late, refused = sum(int(r["late"]) for r in runs), sum(int(r["non200"]) for r in runs)
        print(f"{name:26} {p50:8.1f} {p99:8.1f} {slowest:8.1f} {late:6d} {refused:8d} {ratio:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
