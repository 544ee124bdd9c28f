"""Benchmark of the walk-forward backtest: wall time and peak memory of one year.

    .venv/bin/python bench/bench_backtest.py [--case no-lstm] [--case quick] [--case lstm] [--jobs 1]

Runs ``tvgw backtest`` on the shared Binance BTC/USDT 1h file, trading 2021-10-11 → 2022-10-11
with 180-day training windows retrained every 30 days (13 windows; every arm: buy and hold, the
Pine rules alone, rules + baseline forest, rules + full ML strategy), each case in a fresh
process. Peak memory is the largest resident set of that process or any of its children
(joblib workers), from ``getrusage(RUSAGE_CHILDREN)``; the run's own split (training / replay)
comes from the JSON summary. Cases:

* ``no-lstm``: the full strategy at its default sizes (forest 200 trees, boosting 200
  iterations), without the LSTM;
* ``quick``: ``--quick`` sizes (50 trees, 50 iterations), without the LSTM;
* ``lstm``: default sizes with the LSTM (needs TensorFlow).

Reference (from the issue, same kind of machine): freqtrade's FreqAI does this year with 13
LightGBM retrains in 10.7-12.5 s wall and 418 MB peak. Figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "ohlcv" / "binance" / "BTC_USDT-1h.json"
CASES = {"no-lstm": ["--no-lstm"], "quick": ["--no-lstm", "--quick"], "lstm": []}


def run_case(name: str, jobs: int, out: Path) -> dict[str, float | str]:
    """One backtest in a child process; its wall time, peak RSS and the summary's split."""
    report = out / f"{name}.html"
    argv = [sys.executable, "-m", "tvgw.cli", "backtest", "--symbol", "BTC/USDT", "--timeframe", "1h",
            "--data", str(DATA), "--start", "2021-10-11", "--end", "2022-10-11", "--train-window", "180d",
            "--test-window", "30d", "--jobs", str(jobs), "--no-progress", "--report", str(report),
            *CASES[name]]  # fmt: skip
    env = {**os.environ, "TVGW_DATABASE": str(out / "unused.sqlite"), "PYTHONPATH": str(REPO)}
    env.pop("TVGW_CONFIG", None)
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name}: tvgw backtest failed ({done.returncode}):\n{done.stderr[-3000:]}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    summary = json.loads(report.with_suffix(".json").read_text())
    timings = summary["timings_s"]
    return {"case": name, "wall_s": wall, "peak_mb": peak_mb, "training_s": timings["training"],
            "replay_s": timings["replay"], "windows": len(summary["windows"]),
            "alerts": summary["alerts"]}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="default: no-lstm and quick")
    parser.add_argument("--jobs", type=int, default=1, help="windows trained in parallel")
    args = parser.parse_args()
    if not DATA.is_file():
        print(f"skipped: {DATA} is absent (the shared folder sits beside the checkout)")
        return 0
    with open("/proc/loadavg") as handle:
        print(f"machine: {os.cpu_count()} cores, load average {handle.read().split()[:3]}")
    header = ("case", "windows", "alerts", "wall s", "training s", "replay s", "peak MB")
    print(f"{header[0]:<9} " + " ".join(f"{h:>10}" for h in header[1:]))
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as tmp:
        for name in args.case or ["no-lstm", "quick"]:
            # each case in its own child: RUSAGE_CHILDREN's peak then belongs to that case alone
            if os.fork() == 0:
                r = run_case(name, args.jobs, Path(tmp))
                cells = (r["windows"], r["alerts"], f"{r['wall_s']:.1f}", f"{r['training_s']:.1f}",
                         f"{r['replay_s']:.1f}", f"{r['peak_mb']:.0f}")  # fmt: skip
                print(f"{r['case']:<9} " + " ".join(f"{c:>10}" for c in cells), flush=True)
                os._exit(0)
            _, status = os.wait()
            if status != 0:
                return 1
    print("reference: FreqAI, 13 LightGBM retrains, 10.7-12.5 s wall, 418 MB peak")
    return 0


if __name__ == "__main__":
    sys.exit(main())
