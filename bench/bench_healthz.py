"""What one /healthz costs as the prediction log grows: it must cost the same on day 300.

Usage: python -m bench.bench_healthz [--sizes 1000,10000,100000] [--calls 200]

For each size, a fresh SQLite file gets that many resolved predictions (one per minute, the
newest now), then, in-process through the Flask test client: the drift report computed from
scratch (what a worker pays once per TTL), and /healthz called ``--calls`` times (p50 and p99;
the first call computes the report, the rest read the per-worker cache). Also times the metrics
module's rank AUC against the pairwise count the gateway used before, at 6,000 outcomes.
The machine is shared and noisy: compare the rows of one run, not absolute numbers.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ml_integration.evaluation import rank_auc
from ml_integration.tracking import DriftThresholds, drift_report
from settings import load_settings
from storage import Storage


def fill(storage: Storage, n: int, now: float) -> None:
    """``n`` resolved predictions, one a minute up to ``now``, 55% right."""
    rng = np.random.default_rng(0)
    probs = rng.random(n)
    moves = rng.normal(0, 0.01, n)
    rows = [
        (now - (n - i) * 60, "BTC/USDT", "1h", float(p), 5, now, 100.0, int(m > 0), float(m),
         float((p >= 0.5) == (m > 0)), now)
        for i, (p, m) in enumerate(zip(probs, moves, strict=True))
    ]  # fmt: skip
    with storage.transaction() as conn:
        conn.executemany(
            "INSERT INTO ml_predictions (timestamp, symbol, timeframe, direction_prob, horizon, target_time,"
            " price_at_prediction, actual_direction, actual_magnitude, prediction_accuracy, resolved_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def pairwise_auc(labels: list[int], probs: list[float]) -> float:
    """The O(n²) count the gateway ran on every /healthz before (kept here for the comparison)."""
    pos = [p for p, y in zip(probs, labels, strict=True) if y == 1]
    neg = [p for p, y in zip(probs, labels, strict=True) if y == 0]
    return sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (len(pos) * len(neg))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


def bench_size(n: int, calls: int) -> None:
    from webhook import create_app

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        environ = {"TVGW_DATABASE": str(folder / "tvgw.sqlite"), "TVGW_MODEL_DIR": str(folder / "models"),
                   "TVGW_PASSPHRASE": "bench-secret", "TVGW_ML_ENABLED": "false",
                   "TVGW_RESOLVE_INTERVAL_S": "0", "TVGW_LOG_LEVEL": "ERROR"}  # fmt: skip
        settings = load_settings(environ=environ)
        storage = Storage(settings.database)
        storage.migrate()
        now = time.time()
        fill(storage, n, now)
        thresholds = DriftThresholds.from_settings(settings)
        started = time.perf_counter()
        report = drift_report(storage, **asdict(thresholds), now=now)
        uncached = time.perf_counter() - started
        client = create_app(settings).test_client()
        timings = []
        for _ in range(calls):
            started = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            timings.append(time.perf_counter() - started)
        cuts = statistics.quantiles(timings[1:], n=100)
        print(
            f"{n:>9,} resolved | drift report {ms(uncached)} ({report['samples']:,} read) | /healthz first "
            f"{ms(timings[0])}, cached p50 {ms(cuts[49])} p99 {ms(cuts[98])}"
        )


def bench_auc(n: int = 6_000) -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, n).tolist()
    probs = np.round(rng.random(n), 2).tolist()
    started = time.perf_counter()
    fast = rank_auc(labels, probs)
    rank_s = time.perf_counter() - started
    started = time.perf_counter()
    slow = pairwise_auc(labels, probs)
    pair_s = time.perf_counter() - started
    assert fast is not None and abs(fast - slow) < 1e-12
    print(f"AUC of {n:,} outcomes: rank {ms(rank_s)}, pairwise (before) {ms(pair_s)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        bench_size(size, args.calls)
    bench_auc()


if __name__ == "__main__":
    main()
