"""Serving latency on a warm model: the ML part of the webhook path, in-process.

Usage: python -m bench.bench_enrichment [--calls 2000] [--full]

Trains a strategy on seeded synthetic candles ending now (``--full``: the default model sizes,
else the small ``tvgw train --quick`` sizes), saves it, fills a temporary candle store, then
calls ``SignalService.serve`` for an alert's market and prints p50/p99 wall time, next to
``MLTradingStrategy.generate_signal`` alone (the model without the gateway's plumbing).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.ml_fixture import candles_until_now, seed_candles, train_model
from ml_integration.serving import SignalService
from settings import load_settings
from storage import Storage


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--full", action="store_true", help="default model sizes (slower to train)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tvgw-enrich-"))
    candles = candles_until_now()
    train_model(tmp / "models", candles, full=args.full)
    settings = load_settings(
        environ={"TVGW_DATABASE": str(tmp / "db.sqlite"), "TVGW_MODEL_DIR": str(tmp / "models"),
                 "TVGW_PASSPHRASE": "bench-secret", "TVGW_RESOLVE_INTERVAL_S": "0"}
    )  # fmt: skip
    seed_candles(settings.database, candles)
    service = SignalService(settings, Storage(settings.database))
    for _ in range(50):
        service.serve("BTC/USDT", "1h")  # warm-up (loads the model once)
    first = service.serve("BTC/USDT", "1h")
    assert first.signal is not None, first.analysis()
    model = service._markets[("BTC/USDT", "1h")].strategy
    frame = candles.iloc[-320:]
    enrich_ms, model_ms = [], []
    for _ in range(args.calls):
        t0 = time.perf_counter()
        service.serve("BTC/USDT", "1h")
        t1 = time.perf_counter()
        model.generate_signal(frame, "BTC/USDT")
        t2 = time.perf_counter()
        enrich_ms.append((t1 - t0) * 1000)
        model_ms.append((t2 - t1) * 1000)
    sizes = "default sizes" if args.full else "--quick sizes"
    print(f"{args.calls} calls, warm model ({sizes}), 2-core machine")
    for name, values in (
        ("SignalService.serve (gateway ML path)", enrich_ms),
        ("generate_signal (model alone)", model_ms),
    ):
        print(f"{name:36} p50 {statistics.median(values):6.2f} ms   p99 {percentile(values, 0.99):6.2f} ms")


if __name__ == "__main__":
    main()
