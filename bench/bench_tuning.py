"""Benchmark of tuning and batch training on real candles: what each option costs here.

    .venv/bin/python bench/bench_tuning.py [--days 365] [--trials 8] [--skip-tuning] [--skip-batch]

1. One symbol-year of the shared Binance BTC/USDT 1h file; the direction forest's training rows
   (the ones ``tvgw train --tune`` searches on: never the calibration or test slices). Each
   tuning method (grid over a 2×2×2 corner of the forest space, random and Optuna with
   ``--trials`` points of the full space) by purged 4-fold time-series CV, gap = horizon 5:
   seconds, best log loss next to the base rate of the same folds and the default parameters'
   score, then the cost of the cached second call.
2. The batch (BTC/USDT and ETH/USDT, that year, forest + boosting, no LSTM) through joblib
   locally and on a ``distributed.LocalCluster`` of two worker processes: seconds each, and
   whether the two runs gave the same models (same hold-out figures).

Figures are printed, not asserted: this is not part of the test run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO / ".." / "shared" / "data" / "ohlcv" / "binance"
HORIZON = 5


def training_rows(path: Path, days: int) -> tuple[object, object]:
    from ml_integration import read_candle_file
    from ml_integration.prediction import MLPricePrediction, ModelConfig

    frame = read_candle_file(path).iloc[-days * 24 :]
    design = MLPricePrediction(ModelConfig(use_lstm=False)).design(frame, HORIZON)
    rows = design.rows[design.split.train]
    span = f"{frame.index[0]} .. {frame.index[-1]}"
    print(f"{path.name}: {len(frame)} candles {span}, {len(rows)} training rows")
    return design.matrix[rows], design.labels.direction[rows]


def bench_methods(x: object, y: object, trials: int) -> None:
    from ml_integration.labels import purged_folds
    from ml_integration.prediction import ModelConfig
    from ml_integration.training import forest_factory
    from ml_integration.tuning import SPACES, cv_score, tune

    model = ModelConfig(use_lstm=False)
    factory = forest_factory(model)
    folds = purged_folds(len(y), n_folds=4, gap=HORIZON)
    t0 = time.perf_counter()
    default = cv_score(factory, {}, x, y, folds)
    took = time.perf_counter() - t0
    print(f"default forest (200 trees, depth 8, leaf 30): log loss {default:.5f} in {took:.1f} s")
    corner = {k: v[1:3] if k == "max_depth" else v[:2] for k, v in SPACES["random_forest"].items()}
    with tempfile.TemporaryDirectory() as cache:
        for method, space in (("grid", corner), ("random", None), ("optuna", None)):
            result = tune("random_forest", x, y, method=method, factory=factory, space=space,
                          n_trials=trials, folds=folds, cache_dir=cache)  # fmt: skip
            t0 = time.perf_counter()
            again = tune("random_forest", x, y, method=method, factory=factory, space=space,
                         n_trials=trials, folds=folds, cache_dir=cache)  # fmt: skip
            cached_ms = (time.perf_counter() - t0) * 1000
            print(f"  {result.summary()}")
            print(f"    {result.seconds / result.n_trials:.1f} s per trial; cached call {cached_ms:.0f} ms "
                  f"(cached={again.cached}); default params {default:.5f}")  # fmt: skip


def bench_batch(days: int) -> None:
    from distributed import LocalCluster

    from ml_integration.training import create_ml_training_pipeline, create_training_config

    model = {"use_lstm": False}
    configs = [
        create_training_config(
            f"{base}/USDT", {"data_file": str(DATA / f"{base}_USDT-1h.json"), "days": days, "model": model}
        )
        for base in ("BTC", "ETH")
    ]
    with tempfile.TemporaryDirectory() as folder:
        pipeline = create_ml_training_pipeline(model_dir=Path(folder) / "local")
        t0 = time.perf_counter()
        local = pipeline.run_many(configs)
        local_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        workers = {"n_workers": 2, "threads_per_worker": 1, "processes": True, "dashboard_address": ":0"}
        with LocalCluster(**workers) as cluster:
            up_s = time.perf_counter() - t0
            pipeline = create_ml_training_pipeline(model_dir=Path(folder) / "dask")
            remote = pipeline.run_many(configs, cluster=cluster.scheduler_address)
        dask_s = time.perf_counter() - t0
    same = all(a.report["holdout"] == b.report["holdout"] for a, b in zip(local, remote, strict=True))
    print(f"batch BTC+ETH, {days} days each, forest+boosting: joblib local {local_s:.1f} s; "
          f"Dask LocalCluster(2 processes) {dask_s:.1f} s incl. {up_s:.1f} s start-up; "
          f"same models: {same}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--skip-batch", action="store_true")
    parser.add_argument("--skip-tuning", action="store_true")
    args = parser.parse_args()
    path = DATA / "BTC_USDT-1h.json"
    if not path.exists():
        print(f"skipped: {path} not found (the shared data folder sits beside the repo)")
        return
    if not args.skip_tuning:
        x, y = training_rows(path, args.days)
        bench_methods(x, y, args.trials)
    if not args.skip_batch:
        bench_batch(args.days)


if __name__ == "__main__":
    main()
