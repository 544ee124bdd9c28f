"""Benchmark of the ML library on real candles: training time, hold-out metrics, latency.

    .venv/bin/python bench/bench_ml.py [--days 365] [--symbol BTC_USDT] [--calls 2000]

1. Trains the full-size strategy (RandomForest 200 trees, HistGradientBoosting 200 iterations,
   LSTM 50/30 over 24 bars) on the last ``--days`` of the shared Binance 1h file and prints the
   wall time of each model.
2. Prints the hold-out (test slice, after a purge gap) metrics next to the naive baselines,
   with 95% intervals (Wilson for accuracies, moving-block bootstrap for AUC/Brier/log loss).
3. Saves the strategy, then in a *fresh process* (as a gunicorn worker would) loads it and
   times ``generate_signal`` on ``--calls`` successive windows of the test period; prints
   p50/p99, whether TensorFlow was imported, and the process RSS.

Figures are printed, not asserted: this is not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO / ".." / "shared" / "data" / "ohlcv" / "binance"

_LATENCY_SCRIPT = r"""
import json, sys, time
import numpy as np
t0 = time.perf_counter()
from ml_integration import MLTradingStrategy, read_candle_file
strategy = MLTradingStrategy().load_strategy(sys.argv[1])
load_s = time.perf_counter() - t0
frame = read_candle_file(sys.argv[2])
start, calls = int(sys.argv[3]), int(sys.argv[4])
need = strategy.predictor.rows_needed + 50
latencies, cpu, actions = [], [], {}
for i in range(calls):
    end = start + i
    window = frame.iloc[end - need : end]
    t, c = time.perf_counter(), time.thread_time()
    signal = strategy.generate_signal(window, "BTC/USDT", now=window.index[-1].timestamp() + 3600)
    latencies.append(time.perf_counter() - t)
    cpu.append(time.thread_time() - c)
    actions[signal.action] = actions.get(signal.action, 0) + 1
ms = np.array(latencies) * 1000
cpu_ms = np.array(cpu) * 1000
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({
    "load_s": load_s,
    "p50_ms": float(np.percentile(ms, 50)),
    "p90_ms": float(np.percentile(ms, 90)),
    "p99_ms": float(np.percentile(ms, 99)),
    "max_ms": float(ms.max()),
    "cpu_p50_ms": float(np.percentile(cpu_ms, 50)),
    "cpu_p99_ms": float(np.percentile(cpu_ms, 99)),
    "calls": calls,
    "actions": actions,
    "tensorflow_imported": "tensorflow" in sys.modules,
    "sklearn_imported": "sklearn" in sys.modules,
    "peak_rss_mb": int(status["VmHWM"].split()[0]) / 1024,
}))
"""


def _ci(pair: list[float]) -> str:
    return f"[{pair[0]:.3f}, {pair[1]:.3f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--symbol", default="BTC_USDT")
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    path = DATA / f"{args.symbol}-1h.json"
    if not path.exists():
        print(f"skipped: {path} not found (the shared data folder sits beside the repo)")
        return 0
    from ml_integration import MLTradingStrategy, read_candle_file
    from ml_integration.candles import find_gaps

    frame = read_candle_file(path)
    data = frame.iloc[-args.days * 24 :]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    print(
        f"data: {path.name}, {len(data)} candles {data.index[0]} .. {data.index[-1]}, "
        f"{len(find_gaps(data.index, 3600))} gaps"
    )
    strategy = MLTradingStrategy()
    t0 = time.perf_counter()
    report = strategy.train_strategy(data, symbol="BTC/USDT", timeframe="1h")
    wall = time.perf_counter() - t0
    timings = report["timings_s"]
    print("\n== training wall time (s) ==")
    for name in ("direction_s", "gradient_boosting_s", "lstm_s", "final_fit_s", "total_s"):
        print(f"  {name:22s} {timings.get(name, float('nan')):7.2f}")
    print(f"  {'end-to-end':22s} {wall:7.2f}   (features, 3 models, evaluation; includes TF import)")
    print(f"  split: {report['split']}")
    print(f"  test window: {report['test_window'][0]} .. {report['test_window'][1]}")
    print(f"  direction blend weights {report['direction_weights']}, magnitude weights "
          f"{report['magnitude_weights']}, {len(report['selected_features'])} columns selected")  # fmt: skip

    d = report["holdout"]["direction"]
    print("\n== hold-out direction (horizon 5 bars), model vs naive baseline ==")
    acc, maj = d["accuracy"], d["majority_accuracy"]
    print(
        f"  accuracy   {acc:.3f} {_ci(d['accuracy_ci'])}   "
        f"majority class {maj:.3f} {_ci(d['majority_accuracy_ci'])}"
    )
    print(f"  AUC        {d['auc']:.3f} {_ci(d['auc_ci'])}   no-skill 0.500")
    print(
        f"  Brier      {d['brier']:.4f} {_ci(d['brier_ci'])}   base rate {d['base_rate_brier']:.4f} "
        f"(uncalibrated blend {report['holdout']['direction_uncalibrated_brier']:.4f})"
    )
    print(
        f"  log loss   {d['log_loss']:.4f} {_ci(d['log_loss_ci'])}   base rate {d['base_rate_log_loss']:.4f}"
    )
    print(f"  up rate    train {d['train_up_rate']:.3f}, test {d['test_up_rate']:.3f}, n = {d['n']}")
    print("\n== hold-out magnitude (forward log return) vs predicting 0 ==")
    for key in ("magnitude_gb", "magnitude_lstm", "magnitude_ensemble"):
        m = report["holdout"].get(key)
        if m:
            print(
                f"  {key:20s} MAE {m['mae']:.5f} vs zero {m['zero_mae']:.5f}  corr {m['correlation']:+.3f}  "
                f"sign acc {m['sign_accuracy']:.3f}"
            )

    with tempfile.TemporaryDirectory() as tmp:
        saved = strategy.save_strategy(Path(tmp) / "model", version="bench")
        size_kb = sum(p.stat().st_size for p in saved.iterdir()) / 1024
        start = len(frame) - args.calls
        out = subprocess.run(
            [sys.executable, "-c", _LATENCY_SCRIPT, str(saved), str(path), str(start), str(args.calls)],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )
        latency = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\n== generate_signal latency, warm strategy in a fresh process ({latency['calls']} calls) ==")
    lat = latency
    print(
        f"  wall  p50 {lat['p50_ms']:.2f} ms  p90 {lat['p90_ms']:.2f} ms  p99 {lat['p99_ms']:.2f} ms  "
        f"max {lat['max_ms']:.2f} ms"
    )
    print(
        f"  CPU   p50 {lat['cpu_p50_ms']:.2f} ms  p99 {lat['cpu_p99_ms']:.2f} ms "
        "(thread time: what the call itself costs, without waiting for a core)"
    )
    print(
        f"  load + warm-up {lat['load_s']:.2f} s, artifacts {size_kb:.0f} kB, "
        f"peak RSS {lat['peak_rss_mb']:.0f} MB"
    )
    print(f"  tensorflow imported: {lat['tensorflow_imported']}, sklearn imported: {lat['sklearn_imported']}")
    print(f"  actions over those windows: {lat['actions']}")
    load = os.getloadavg()
    print(f"  load average during the run: {load[0]:.1f} (the machine is shared; wall times include waiting)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
