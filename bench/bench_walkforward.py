"""The year walk-forward beside FreqAI's, in the same run: wall time, and our out-of-sample figures.

    .venv/bin/python bench/bench_walkforward.py [--jobs 1] [--choose-every N] [--rounds 1]
        [--freqtrade-python PATH] [--before PATH]

Ours: ``tvgw backtest --symbol BTC/USDT --timeframe 1h --data <shared BTC_USDT-1h.json> --start
2021-10-11 --end 2022-10-11 --train-window 180d --test-window 30d --no-lstm`` (13 windows, every
arm), in a fresh process. FreqAI's: ``bench/freqai_walkforward.py`` (a freqtrade backtest with
FreqAI retraining LightGBM every 30 days on 180 days, 13 retrains, same candles), run by
``--freqtrade-python`` or by this interpreter when it imports freqtrade; otherwise only our
figure is printed beside the issue's reference (6.4-8.8 s for FreqAI on a quiet machine). The two
alternate round by round, so both see the same load; the ratio is what to read on a shared
machine. ``--before PATH`` also runs ``tvgw backtest`` from another checkout (e.g. the commit
before a change: ``git worktree add /tmp/before <commit>``) in the same rounds.
"""

from __future__ import annotations

import argparse
import importlib.util
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
REFERENCE = "FreqAI on a quiet machine (the issue): 6.4-8.8 s for 13 LightGBM retrains"


def _cpu() -> float:
    """User + system CPU seconds of every finished child so far (less load-sensitive than wall)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ours(
    out: Path, jobs: int, choose_every: int | None, period: tuple[str, str], repo: Path = REPO
) -> dict[str, object]:
    report = out / "ours.html"
    argv = [sys.executable, "-m", "tvgw.cli", "backtest", "--symbol", "BTC/USDT", "--timeframe", "1h",
            "--data", str(DATA), "--start", period[0], "--end", period[1], "--train-window", "180d",
            "--test-window", "30d", "--no-lstm", "--no-progress", "--jobs", str(jobs),
            "--report", str(report)]  # fmt: skip
    if choose_every is not None:
        argv += ["--choose-every", str(choose_every)]
    env = {**os.environ, "TVGW_DATABASE": str(out / "unused.sqlite"), "PYTHONPATH": str(repo)}
    env.pop("TVGW_CONFIG", None)
    started, cpu = time.perf_counter(), _cpu()
    done = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, check=False)
    wall, cpu = time.perf_counter() - started, _cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"tvgw backtest failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads(report.with_suffix(".json").read_text())
    timings = summary["timings_s"]
    return {"wall_s": wall, "cpu_s": cpu, "training_s": timings["training"], "replay_s": timings["replay"],
            "prediction": summary["prediction"],
            "served": [w.get("served") for w in summary["windows"]]}  # fmt: skip


def freqai(python: str, threads: int, period: tuple[str, str]) -> dict[str, object]:
    timerange = f"{period[0].replace('-', '')}-{period[1].replace('-', '')}"
    argv = [
        python,
        str(REPO / "bench" / "freqai_walkforward.py"),
        "--data",
        str(DATA),
        "--threads",
        str(threads),
        "--timerange",
        timerange,
    ]
    cpu = _cpu()
    done = subprocess.run(argv, cwd=tempfile.gettempdir(), capture_output=True, text=True, check=False)
    cpu = _cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"FreqAI run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "cpu_s": cpu}


def _figure(metrics: dict[str, object] | None, key: str) -> str:
    if not metrics:
        return "n/a"
    value, (lo, hi) = metrics[key], metrics[f"{key}_ci"]  # type: ignore[misc]
    return f"{value:.4f} [{lo:.4f}, {hi:.4f}]"


def _print_arms(label: str, prediction: object) -> None:
    """Both arms' pooled out-of-sample AUC and Brier with their intervals."""
    assert isinstance(prediction, dict)
    for arm in ("baseline", "ml"):
        metrics = prediction.get(arm)
        print(f"  {label}{arm:<8} AUC {_figure(metrics, 'auc')}  Brier {_figure(metrics, 'brier')}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--choose-every", type=int, help="tournament every N windows (default: train / test)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--start", default="2021-10-11", help="first traded day (default: the issue's year)")
    parser.add_argument("--end", default="2022-10-11")
    parser.add_argument(
        "--freqtrade-python", help="an interpreter with freqtrade (default: this one, if it has it)"
    )
    parser.add_argument("--threads", type=int, default=1, help="FreqAI's LightGBM threads (ours use one)")
    parser.add_argument(
        "--before", type=Path, help="another checkout whose tvgw backtest runs in the same rounds"
    )
    args = parser.parse_args()
    if not DATA.is_file():
        print(f"skipped: {DATA} is absent (the shared folder sits beside the checkout)")
        return 0
    python = args.freqtrade_python or (sys.executable if importlib.util.find_spec("freqtrade") else None)
    with open("/proc/loadavg") as handle:
        print(f"machine: {os.cpu_count()} cores, load average {handle.read().split()[:3]}")
    with tempfile.TemporaryDirectory(prefix="bench-walkforward-") as tmp:
        for round_ in range(1, args.rounds + 1):
            period = (args.start, args.end)
            theirs = freqai(python, args.threads, period) if python else None
            mine = ours(Path(tmp), args.jobs, args.choose_every, period)
            line = (f"round {round_}: tvgw backtest {mine['wall_s']:.1f} s wall, {mine['cpu_s']:.1f} s CPU "
                    f"(training {mine['training_s']:.1f} s, replay {mine['replay_s']:.1f} s)")  # fmt: skip
            if theirs is not None:
                ratio = float(mine["wall_s"]) / float(theirs["wall_s"])  # type: ignore[arg-type]
                cpu_ratio = float(mine["cpu_s"]) / float(theirs["cpu_s"])  # type: ignore[arg-type]
                line += f"; FreqAI {theirs['wall_s']:.1f} s wall, {theirs['cpu_s']:.1f} s CPU"
                line += f" ({theirs['retrains']} retrains)"
                line += f"; ours / FreqAI: wall {ratio:.2f}, CPU {cpu_ratio:.2f}"
            print(line, flush=True)
            _print_arms("", mine["prediction"])
            print(f"  served per window: {', '.join(str(s) for s in mine['served'])}")
            if args.before is not None:
                old = ours(Path(tmp), args.jobs, None, period, args.before)
                print(
                    f"  before ({args.before}): {old['wall_s']:.1f} s (training {old['training_s']:.1f} s); "
                    f"ours / before {float(mine['wall_s']) / float(old['wall_s']):.2f}"
                )  # type: ignore[arg-type]
                _print_arms("before ", old["prediction"])
    if python is None:
        print(f"FreqAI not installed here (no freqtrade); reference: {REFERENCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
