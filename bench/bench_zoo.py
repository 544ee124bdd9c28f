"""Benchmark of the model zoo on real candles: what each base model and combiner costs and scores.

    .venv/bin/python bench/bench_zoo.py [--days 365] [--symbol BTC_USDT] [--horizon 5]
        [--models rf,hgb,...] [--label binary] [--final-fit]

On one symbol-year of the shared Binance 1h file (skipped, saying so, when it is absent):
features and labels as ``tvgw train --ensemble`` builds them, then ``ensemble.train_ensemble``
with the default model sizes. Prints, per base model, the seconds of its out-of-fold fits
(3 purged, expanding folds over the training rows) and of its fit on all training rows; per
combiner, the seconds to fit and score it; and the comparison table on the held-out test
slice (each figure next to the majority-class accuracy and the base-rate Brier, 95% intervals).

Figures are printed, not asserted: this is not part of the test run. The machine is shared:
the load average is printed, and wall times include waiting for a core.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO / ".." / "shared" / "data" / "ohlcv" / "binance"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--symbol", default="BTC_USDT")
    parser.add_argument("--horizon", type=int, default=5, help="bars ahead (the strategy's default 5)")
    parser.add_argument("--models", default=None, help="comma-separated zoo models (default: all)")
    parser.add_argument("--label", default="binary")
    parser.add_argument("--final-fit", action="store_true", help="also time the refit on every row")
    parser.add_argument("--smote", action="store_true", help="SMOTE on each model's training rows")
    parser.add_argument("--class-weight", choices=("balanced",), default=None)
    parser.add_argument(
        "--threads", type=int, default=1,
        help="threads per model (default 1: on a loaded machine spinning threads cost more than they give)",
    )  # fmt: skip
    args = parser.parse_args()
    path = DATA / f"{args.symbol}-1h.json"
    if not path.exists():
        print(f"skipped: {path} not found (the shared data folder sits beside the repo)")
        return 0
    import numpy as np

    from ml_integration.candles import read_candle_file
    from ml_integration.ensemble import EnsembleConfig, EnsemblePricePrediction, format_table, train_ensemble
    from ml_integration.prediction import ModelConfig

    frame = read_candle_file(path).iloc[-args.days * 24 :]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"data: {path.name}, {len(frame)} candles {frame.index[0]} .. {frame.index[-1]}")
    options: dict[str, object] = {
        "label": args.label, "final_fit": args.final_fit, "smote": args.smote,
        "class_weight": args.class_weight,
        "params": {name: {"n_jobs": args.threads} for name in ("random_forest", "xgboost", "lightgbm")}
        | {"catboost": {"thread_count": args.threads}},
    }  # fmt: skip
    if args.models:
        options["models"] = args.models
    config = EnsembleConfig.from_mapping(options)
    predictor = EnsemblePricePrediction(ModelConfig(use_lstm=False), ensemble=config)
    t0 = time.perf_counter()
    x, y = predictor._ensemble_rows(frame, args.horizon, 3600)
    features_s = time.perf_counter() - t0
    print(f"rows: {len(y)} usable, up-rate {np.mean(y):.3f}, features+labels {features_s:.1f} s")
    from threadpoolctl import threadpool_limits

    print(f"threads per model: {args.threads}; load average at the start: {os.getloadavg()[0]:.1f}")
    t0, cpu0 = time.perf_counter(), time.process_time()
    with threadpool_limits(limits=args.threads):
        ensemble, report = train_ensemble(x, y, args.horizon, predictor._ensemble_config())
    total, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    window = predictor.sequence_length
    latencies = []
    for end in range(len(x) - 300, len(x)):  # one signal's scoring: the window ending at each row
        t = time.perf_counter()
        ensemble.predict_proba(x[end - window : end])
        latencies.append((time.perf_counter() - t) * 1000)
    secs = report["seconds"]
    print(
        f"\n== seconds per base model ({report['split']['oof_folds']} OOF folds, then all training rows) =="
    )
    print(f"  {'model':24s} {'oof':>8s} {'fit':>8s} {'final':>8s}")
    for name in report["models"]:
        final = secs["final_fit"].get(name, float("nan"))
        print(f"  {name:24s} {secs['oof'][name]:8.1f} {secs['fit'][name]:8.1f} {final:8.1f}")
    print("\n== seconds per combiner (fit on the OOF rows + score validation) ==")
    for name, value in secs["combiners"].items():
        print(f"  {name:24s} {value:8.3f}")
    print(f"\n  total train_ensemble: {total:.1f} s wall, {cpu:.1f} s CPU; split {report['split']}")
    print(f"  skipped models: {report['skipped_models'] or 'none'}")
    p50, p99 = np.percentile(latencies, [50, 99])
    print(
        f"  scoring one signal's window ({window} rows, all models + combiner): p50 {p50:.1f} ms"
        f", p99 {p99:.1f} ms"
    )
    for name, model in zip(ensemble.names, ensemble.models, strict=True):
        each = []
        for end in range(len(x) - 100, len(x)):
            t = time.perf_counter()
            model.predict_proba(x[end - window : end])
            each.append((time.perf_counter() - t) * 1000)
        print(f"    {name:22s} p50 {np.percentile(each, 50):6.1f} ms, p99 {np.percentile(each, 99):7.1f} ms")
    print("\n== validation (selection by log loss) ==")
    for name, v in report["validation"].items():
        print(f"  {name:24s} log loss {v['log_loss']:.4f}  Brier {v['brier']:.4f}")
    print(f"  chosen: {report['chosen_combiner']}; stacking weights {report['stacking_weights']}")
    print(f"  majority consensus (test mean): {report['majority_consensus_mean']:.3f}; lean {report['lean']}")
    print("\n== held-out test slice ==")
    print(format_table(report["table"]))
    load = os.getloadavg()
    print(f"\nload average during the run: {load[0]:.1f} (the machine is shared; wall times include waiting)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
