"""What exchange-held exits cost an alert's answer, and how soon they rest on the exchange.

Usage: python -m bench.bench_exchange_exits [--rounds 30]

In-process Flask client, real ccxt, the fake Binance on loopback (``tests.fake_exchange``),
trading the perpetual BTCUSDT.P. Each round: an entry of 0.04 (with a stop and two targets, or
with none), then a close. Reports the entry's answer time (p50, p99) for both kinds, and for the
entries with exits the time from the answer until the exchange holds all three orders. The
exits are placed by the engine's exit thread after the answer, so the first two should match.
The machine is shared and noisy: compare the rows of one run, not absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.conftest import make_settings, sample_alert, seed_market
from tests.fake_exchange import DEFAULT_API_KEY, DEFAULT_SECRET, FakeBinance
from webhook import create_app


def _p99(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.99 * len(values)) - 1)]


def run(rounds: int) -> dict[str, list[float]]:
    os.environ["TVGW_BINANCE_API_KEY"], os.environ["TVGW_BINANCE_SECRET"] = DEFAULT_API_KEY, DEFAULT_SECRET
    times: dict[str, list[float]] = {"answer, no exits": [], "answer, 3 exits": [], "answer to 3 resting": []}
    with tempfile.TemporaryDirectory() as folder, FakeBinance() as fake:
        fake.set_price("BTCUSDT", 30000)
        settings = make_settings(
            Path(folder),
            TVGW_BROKER="binance",
            TVGW_EXCHANGE_API_URL=fake.url,
            TVGW_EXIT_WATCH_INTERVAL_S="0",
        )
        seed_market(settings.database, {"BTC/USDT:USDT": 30000.0})
        client = create_app(settings).test_client()

        def post(**fields: Any) -> None:
            answer = client.post("/webhook", data=json.dumps(sample_alert(ticker="BTCUSDT.P", **fields)))
            assert answer.status_code == 200 and answer.json["status"] == "executed", answer.json

        for n in range(2 * rounds):
            with_exits = n % 2 == 1
            exits = {"stop_loss": "29000", "take_profit": "31000@50, 32000@50"} if with_exits else {}
            start = time.perf_counter()
            post(contracts=0.04, order_id=f"in{n}", **exits)
            answered = time.perf_counter()
            times["answer, 3 exits" if with_exits else "answer, no exits"].append(answered - start)
            if with_exits:
                while len(fake.exit_orders()) < 3:
                    time.sleep(0.0005)
                times["answer to 3 resting"].append(time.perf_counter() - answered)
            post(action="close_all", contracts=None, order_id=f"out{n}")
            while fake.exit_orders():  # the close cancels them: the next round starts clean
                time.sleep(0.0005)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    times = run(args.rounds)
    print(f"{'case':<22} {'n':>4} {'p50 ms':>8} {'p99 ms':>8}")
    for case, values in times.items():
        ms = [v * 1000 for v in values]
        print(f"{case:<22} {len(ms):>4} {statistics.median(ms):>8.1f} {_p99(ms):>8.1f}")


if __name__ == "__main__":
    main()
