"""What quickstart's first model costs to train: this checkout against a reference commit.

Usage: python -m bench.bench_first_model [--reference /path/to/other/checkout] [--rounds 3]
       [--extra-path DIR] [--omp-threads N]

Runs the offline quickstart's small model (``tvgw train --synthetic --seed 7 --quick --no-lstm``
on a year of BTC/USDT 1h candles, the same options quickstart uses) in a fresh directory, as a
child process, once per checkout per round, the two interleaved so that the machine's load falls
on both alike. Each run is timed in wall seconds and CPU seconds (the child's user + system: the
figure a busy machine disturbs least). The reference is another checkout of this repository (for
instance ``git worktree add --detach /tmp/ref 0989746``), run with this interpreter and this
virtualenv's libraries, so only the code differs; ``--extra-path`` adds a folder of packages the
reference still needs (an older dependency). ``--omp-threads N`` adds this checkout once more
per round with ``OMP_NUM_THREADS=N`` (the boosting's OpenMP threads: on a crowded machine,
threads that wait for each other cost wall time; since main fits every boosting model inside a
one-thread OpenMP limit, ``direction.one_openmp_thread``, the variable changes little on current
code). Prints each run and the ratios of the medians.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
ARGV = [
    "-m", "tvgw.cli", "train", "--symbol", "BTC/USDT", "--timeframe", "1h", "--days", "365",
    "--synthetic", "--seed", "7", "--quick", "--no-lstm", "--no-progress",
]  # fmt: skip


def run_once(checkout: Path, extra_path: str | None, omp_threads: int | None = None) -> tuple[float, float]:
    """(wall s, CPU s) of one training run of ``checkout``'s code in an empty directory."""
    with tempfile.TemporaryDirectory(prefix="tvgw-bench-first-") as folder:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TVGW_")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(checkout), extra_path) if p)
        env["TVGW_DATABASE"] = str(Path(folder) / "tvgw.sqlite")
        env["TVGW_MODEL_DIR"] = str(Path(folder) / "models")
        if omp_threads:
            env["OMP_NUM_THREADS"] = str(omp_threads)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run([sys.executable, *ARGV], cwd=folder, env=env, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, help="another checkout to compare with")
    parser.add_argument("--extra-path", help="a folder of packages only the reference needs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--omp-threads", type=int, help="also run this checkout with OMP_NUM_THREADS=N")
    args = parser.parse_args()
    # name -> (checkout, extra path, OpenMP threads)
    runs: dict[str, tuple[Path, str | None, int | None]] = {"this checkout": (HERE, None, None)}
    if args.reference:
        runs["reference"] = (args.reference.resolve(), args.extra_path, None)
    if args.omp_threads:
        runs[f"this, {args.omp_threads} thr"] = (HERE, None, args.omp_threads)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for round_no in range(1, args.rounds + 1):
        for name, (checkout, extra, threads) in runs.items():
            wall, cpu = run_once(checkout, extra, threads)
            times[name].append((wall, cpu))
            load = os.getloadavg()[0]
            line = f"round {round_no} {name:13s} wall {wall:6.1f} s  cpu {cpu:6.1f} s  load {load:.1f}"
            print(line, flush=True)
    medians = {
        name: (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
        for name, runs in times.items()
    }
    for name, (wall, cpu) in medians.items():
        print(f"median {name:13s} wall {wall:6.1f} s  cpu {cpu:6.1f} s")
    w1, c1 = medians["this checkout"]
    for name, (w0, c0) in medians.items():
        if name != "this checkout":
            print(f"ratio this checkout / {name}: wall {w1 / w0:.2f}, cpu {c1 / c0:.2f}")


if __name__ == "__main__":
    main()
