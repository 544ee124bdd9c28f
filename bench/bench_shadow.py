"""What the shadow costs an alert: the ML part of the webhook path with a champion alone, and
with a challenger served in shadow beside it, in-process.

Usage: python -m bench.bench_shadow [--calls 300] [--full]

Trains two strategies on seeded synthetic candles ending now (``--full``: the default model
sizes, else the ``tvgw train --quick`` sizes; no LSTM) and fills a temporary candle store. Two
markets hold the same candles: one served by the champion alone, the other by the same champion
with a challenger beside it. Calls alternate between the two, each with an alert bar of its own
(so no answer is reused: every call runs the models), and the p50/p99 wall time of
``SignalService.serve`` is printed for both, with the difference: the latency the shadow adds to
an alert, to set against TradingView's 3 s and the gateway's ML budget (``TVGW_ML_BUDGET_MS``).
Last, the cost of the per-alert read of the market's roles (how every worker agrees on the
champion).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.bench_enrichment import percentile
from bench.ml_fixture import candles_until_now, quick_config
from ml_integration import MLTradingStrategy, save_version
from ml_integration.champions import enroll_latest
from ml_integration.prediction import ModelConfig
from ml_integration.serving import SignalService
from settings import load_settings
from storage import Storage
from storage.candles import upsert_candles
from storage.champions import get_roles

ALONE, SHADOWED = "BTC/USDT", "ETH/USDT"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=300, help="calls per market (default 300)")
    parser.add_argument("--full", action="store_true", help="default model sizes (slower to train)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tvgw-shadow-"))
    candles = candles_until_now()
    config = replace(ModelConfig() if args.full else quick_config(), use_lstm=False)
    trained = []
    for rows in (candles.iloc[:-600], candles):
        strategy = MLTradingStrategy(model_config=config)
        strategy.train_strategy(rows, synthetic=True, symbol=ALONE, timeframe="1h")
        trained.append(strategy)
    settings = load_settings(
        environ={"TVGW_DATABASE": str(tmp / "db.sqlite"), "TVGW_MODEL_DIR": str(tmp / "models"),
                 "TVGW_PASSPHRASE": "bench-secret", "TVGW_RESOLVE_INTERVAL_S": "0"}
    )  # fmt: skip
    storage = Storage(settings.database)
    storage.migrate()
    bars = [[int(t.timestamp() * 1000), *v] for t, v in zip(candles.index, candles.itertuples(index=False),
                                                            strict=True)]  # fmt: skip
    for symbol in (ALONE, SHADOWED):
        upsert_candles(storage, symbol, "1h", bars, "synthetic")
        save_version(trained[0], settings.model_dir, symbol, "1h", version="champion")
        enroll_latest(storage, settings.model_dir, symbol, "1h")
    save_version(trained[1], settings.model_dir, SHADOWED, "1h", version="challenger")
    enroll_latest(storage, settings.model_dir, SHADOWED, "1h")
    service = SignalService(settings, storage)
    last = bars[-1]
    timings: dict[str, list[float]] = {ALONE: [], SHADOWED: []}
    for i in range(args.calls + 20):
        bar = [
            last[0],
            last[1],
            last[2],
            last[3],
            last[4] * (1 + 1e-6 * (i + 1)),
            last[5],
        ]  # a bar of its own
        for symbol in (ALONE, SHADOWED):
            t0 = time.perf_counter()
            served = service.serve(symbol, "1h", bar)
            elapsed = (time.perf_counter() - t0) * 1000
            assert served.signal is not None and not served.reused, served.analysis()
            if symbol == SHADOWED:
                assert served.shadow is not None and served.shadow.signal is not None, served.analysis()
            if i >= 20:  # the first calls load the models and warm caches
                timings[symbol].append(elapsed)
    sizes = "default sizes" if args.full else "--quick sizes"
    print(f"{args.calls} alerts per market, every call runs the models ({sizes}, no LSTM), budget "
          f"{settings.ml_budget_ms:.0f} ms")  # fmt: skip
    for label, symbol in (("champion alone", ALONE), ("champion + challenger in shadow", SHADOWED)):
        values = timings[symbol]
        print(f"{label:34} p50 {statistics.median(values):7.2f} ms   p99 {percentile(values, 0.99):7.2f} ms")
    alone, shadowed = timings[ALONE], timings[SHADOWED]
    added50 = statistics.median(shadowed) - statistics.median(alone)
    added99 = percentile(shadowed, 0.99) - percentile(alone, 0.99)
    reads = []
    for _ in range(2000):  # the per-alert look at which version is champion (every worker, every alert)
        t0 = time.perf_counter()
        get_roles(storage, SHADOWED, "1h")
        reads.append((time.perf_counter() - t0) * 1e6)
    print(f"{'roles read from SQLite per alert':34} p50 {statistics.median(reads):7.1f} us   "
          f"p99 {percentile(reads, 0.99):7.1f} us")  # fmt: skip
    ratio = statistics.median(shadowed) / statistics.median(alone)
    print(f"{'added by the shadow':34} p50 {added50:+7.2f} ms   p99 {added99:+7.2f} ms   "
          f"(x{ratio:.2f} at p50; TradingView allows 3000 ms)")  # fmt: skip


if __name__ == "__main__":
    main()
