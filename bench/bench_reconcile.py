"""What one reconciler pass costs: an exchange account with booked positions in three spot
markets and one perpetual, compared with the exchange.

Usage: python -m bench.bench_reconcile [--passes 40]

In-process, real ccxt, the fake Binance on loopback (``tests.fake_exchange``). Reports per pass:
wall time (p50, p99), the exchange requests it made, and as the reference measured in the same
run one balance read (``fetch_balance``, one request): the pass costs about its number of
requests times that, since ccxt's rate limiter spaces binance requests 50 ms apart. The machine
is shared and noisy: compare the rows of one run, not absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from engine.reconciler import reconcile
from tests.conftest import make_settings, sample_alert, seed_market
from tests.fake_exchange import DEFAULT_API_KEY, DEFAULT_SECRET, FakeBinance
from webhook import create_app, get_gateway

PRICES = {"BTCUSDT": 30000.0, "ETHUSDT": 1800.0, "SOLUSDT": 20.5}


def _p99(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.99 * len(values)) - 1)]


def run(passes: int) -> dict[str, list[float]]:
    os.environ["TVGW_BINANCE_API_KEY"], os.environ["TVGW_BINANCE_SECRET"] = DEFAULT_API_KEY, DEFAULT_SECRET
    out: dict[str, list[float]] = {"pass": [], "requests per pass": [], "balance read (1 request)": []}
    with tempfile.TemporaryDirectory() as folder, FakeBinance() as fake:
        for symbol, price in PRICES.items():
            fake.set_price(symbol, price)
        settings = make_settings(
            Path(folder), TVGW_BROKER="binance", TVGW_EXCHANGE_API_URL=fake.url,
            TVGW_EXIT_WATCH_INTERVAL_S="0", TVGW_ORDER_POLL_INTERVAL_S="0", TVGW_RECONCILE_INTERVAL_S="0",
        )  # fmt: skip
        seed_market(settings.database, {"BTC/USDT": 30000.0, "ETH/USDT": 1800.0, "SOL/USDT": 20.5,
                                        "BTC/USDT:USDT": 30000.0})  # fmt: skip
        app = create_app(settings)
        client = app.test_client()
        for n, (ticker, price, amount) in enumerate(
            [
                ("BTCUSDT", 30000.0, 0.01),
                ("ETHUSDT", 1800.0, 0.1),
                ("SOLUSDT", 20.5, 10),
                ("BTCUSDT.P", 30000.0, 0.01),
            ]
        ):
            alert = sample_alert(ticker=ticker, price=price, contracts=amount, order_id=f"b{n}")
            body = client.post("/webhook", data=json.dumps(alert)).json
            assert body["status"] == "executed", body
        desk = get_gateway(app).engine.desk
        reconcile(desk, now=time.time())  # the first look (the account's own coins) is not timed
        for _ in range(passes):
            before = len(fake.requests)
            start = time.perf_counter()
            checks = reconcile(desk, now=time.time())
            out["pass"].append(time.perf_counter() - start)
            out["requests per pass"].append(float(len(fake.requests) - before))
            assert len(checks) == 4 and all(c.status == "ok" for c in checks), checks
            start = time.perf_counter()
            desk.broker.balances()
            out["balance read (1 request)"].append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--passes", type=int, default=40)
    args = parser.parse_args()
    out = run(args.passes)
    print(f"{'measured':<26} {'n':>4} {'p50':>9} {'p99':>9}")
    for name in ("pass", "balance read (1 request)"):
        ms = [v * 1000 for v in out[name]]
        print(f"{name:<26} {len(ms):>4} {statistics.median(ms):>7.1f}ms {_p99(ms):>7.1f}ms")
    requests = out["requests per pass"]
    print(f"{'requests per pass':<26} {len(requests):>4} {statistics.median(requests):>9.0f}")
    ratio = statistics.median(out["pass"]) / statistics.median(out["balance read (1 request)"])
    print(f"pass / balance read (p50): {ratio:.1f}x")


if __name__ == "__main__":
    main()
