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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "ohlcv" / "binance" / "BTC_USDT-1h.json"
REFERENCE = "FreqAI on a quiet machine (the issue): 6.4-8.8 s for 13 LightGBM retrains"


def ours(out: Path, jobs: int, choose_every: int | None, repo: Path = REPO) -> dict[str, object]:
    report = out / "ours.html"
    argv = [sys.executable, "-m", "tvgw.cli", "backtest", "--symbol", "BTC/USDT", "--timeframe", "1h",
            "--data", str(DATA), "--start", "2021-10-11", "--end", "2022-10-11", "--train-window", "180d",
            "--test-window", "30d", "--no-lstm", "--no-progress", "--jobs", str(jobs),
            "--report", str(report)]  # fmt: skip
    if choose_every is not None:
        argv += ["--choose-every", str(choose_every)]
    env = {**os.environ, "TVGW_DATABASE": str(out / "unused.sqlite"), "PYTHONPATH": str(repo)}
    env.pop("TVGW_CONFIG", None)
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"tvgw backtest failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads(report.with_suffix(".json").read_text())
    timings = summary["timings_s"]
    return {"wall_s": wall, "training_s": timings["training"], "replay_s": timings["replay"],
            "prediction": summary["prediction"],
            "served": [w.get("served") for w in summary["windows"]]}  # fmt: skip


def freqai(python: str, threads: int) -> dict[str, object]:
    argv = [
        python,
        str(REPO / "bench" / "freqai_walkforward.py"),
        "--data",
        str(DATA),
        "--threads",
        str(threads),
    ]
    done = subprocess.run(argv, cwd=tempfile.gettempdir(), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"FreqAI run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _figure(metrics: dict[str, object] | None, key: str) -> str:
    if not metrics:
        return "n/a"
    value, (lo, hi) = metrics[key], metrics[f"{key}_ci"]  # type: ignore[misc]
    return f"{value:.4f} [{lo:.4f}, {hi:.4f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--choose-every", type=int, help="tournament every N windows (default: train / test)")
    parser.add_argument("--rounds", type=int, default=1)
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
            theirs = freqai(python, args.threads) if python else None
            mine = ours(Path(tmp), args.jobs, args.choose_every)
            line = (f"round {round_}: tvgw backtest {mine['wall_s']:.1f} s "
                    f"(training {mine['training_s']:.1f} s, replay {mine['replay_s']:.1f} s)")  # fmt: skip
            if theirs is not None:
                ratio = float(mine["wall_s"]) / float(theirs["wall_s"])  # type: ignore[arg-type]
                line += f"; FreqAI {theirs['wall_s']:.1f} s ({theirs['retrains']} retrains)"
                line += f"; ours / FreqAI {ratio:.2f}"
            print(line, flush=True)
            prediction = mine["prediction"]
            assert isinstance(prediction, dict)
            for arm in ("baseline", "ml"):
                print(
                    f"  {arm:<8} AUC {_figure(prediction.get(arm), 'auc')}  "
                    f"Brier {_figure(prediction.get(arm), 'brier')}"
                )
            print(f"  served per window: {', '.join(str(s) for s in mine['served'])}")
            if args.before is not None:
                old = ours(Path(tmp), args.jobs, None, args.before)
                print(
                    f"  before ({args.before}): {old['wall_s']:.1f} s (training {old['training_s']:.1f} s); "
                    f"ours / before {float(mine['wall_s']) / float(old['wall_s']):.2f}"
                )  # type: ignore[arg-type]
                previous = old["prediction"]
                assert isinstance(previous, dict)
                for arm in ("baseline", "ml"):
                    print(
                        f"  before {arm:<8} AUC {_figure(previous.get(arm), 'auc')}  Brier "
                        f"{_figure(previous.get(arm), 'brier')}"
                    )
    if python is None:
        print(f"FreqAI not installed here (no freqtrade); reference: {REFERENCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
