"""Gateway throughput and latency against a bare Flask app, under the same gunicorn settings.

Usage: python -m bench.bench_gateway [--seconds 10] [--connections 8] [--worker gthread] [--accounts]
       [--postgres URL | --start-postgres]

Starts, one at a time, on loopback: the bare app (bench/bare_app.py: parse JSON, answer), the
gateway in annotate mode (durable SQLite write, no ML), the gateway executing on the paper book,
with ``--accounts`` the paper case routed to two paper accounts, and (when a model is in
TVGW_MODEL_DIR or --ml) the gateway with ML enrichment. Each is driven by
wrk with unique alerts. Prints requests/s, p50 and p99 for each and the ratio to the bare app
measured in the same run (this machine is shared and noisy: absolute numbers mean little).
``--worker CLASS`` repeats every case with that gunicorn worker class (``-k CLASS``) in the same
rounds, to compare worker classes under the same load. ``--postgres URL`` (or
``--start-postgres``: a throwaway server from Debian's package, fsync on) adds the annotate and
paper cases on PostgreSQL (a fresh schema each round), beside SQLite in the same rounds.
Needs wrk (Debian package ``wrk``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from tests import pg_server
from tests.conftest import PostgresSchemas, seed_market  # the tests' helpers: one of each
from tvgw.commands.serve import gunicorn_argv

ROOT = Path(__file__).resolve().parents[1]
PASSPHRASE = "bench-secret"


def start(app: str, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    cmd = gunicorn_argv(bind=f"127.0.0.1:{port}", app=app)
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                return proc
        except requests.RequestException:  # not up yet, or a busy machine answered slowly
            time.sleep(0.2)
    stop(proc)
    raise SystemExit(f"{app} did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def drive(port: int, seconds: int, connections: int) -> dict[str, float]:
    env = {**os.environ, "BENCH_PASSPHRASE": PASSPHRASE, "BENCH_RUN": f"{time.time_ns()}"}
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(ROOT / "bench" / "alerts.lua"),
            f"http://127.0.0.1:{port}/webhook",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    result["rps"] = result["requests"] / result["seconds"]
    return result


def gateway_env(tmp: Path, name: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TVGW_")}
    env.update(
        {
            "TVGW_DATABASE": str(tmp / f"{name}.sqlite"),
            "TVGW_PASSPHRASE": PASSPHRASE,
            "TVGW_ALLOWED_IPS": "loopback",
            # Deep enough that fees never trip the daily-loss limit: the bench measures fills.
            "TVGW_PAPER_BALANCE": "100000000",
            "TVGW_LOG_LEVEL": "WARNING",
            "TVGW_ML_ENABLED": "false",
        }
    )
    env.update(extra)
    return env


def ml_env(tmp: Path, sync: dict[str, str]) -> dict[str, str]:
    """A quick model on synthetic candles ending now, and a candle store holding them. Every
    round starts from this store (copied), so the rounds see the same state."""
    from bench.ml_fixture import candles_until_now, seed_candles, train_model

    candles = candles_until_now()
    # At the price the alerts carry (alerts.lua): the gateway refuses prices far off its market.
    candles[["open", "high", "low", "close"]] *= 30000.0 / candles["close"].iloc[-1]
    train_model(tmp / "models", candles)
    seed_candles(tmp / "ml-seed.sqlite", candles)
    return gateway_env(tmp, "ml", TVGW_ML_ENABLED="true", TVGW_MODEL_DIR=str(tmp / "models"), **sync)


def accounts_env(tmp: Path, sync: dict[str, str]) -> dict[str, str]:
    """Every alert routed to the default paper account and a second paper account (issue 13):
    one alert row, two decisions, two orders and fills in the alert's one transaction."""
    config = tmp / "accounts.toml"
    config.write_text('[accounts.shadow]\n\n[strategies.default]\naccounts = ["paper", "shadow"]\n')
    return gateway_env(tmp, "accounts", TVGW_CONFIG=str(config), **sync)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--ml", action="store_true", help="add the paper case with ML enrichment (trains a quick model)"
    )
    parser.add_argument(
        "--accounts", action="store_true", help="add the paper case routed to two paper accounts"
    )
    parser.add_argument("--synchronous", default=None, help="TVGW_SQLITE_SYNCHRONOUS for the gateway runs")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of all cases; medians are printed")
    parser.add_argument(
        "--worker", action="append", default=[], help="also run every case with this worker class"
    )
    parser.add_argument("--postgres", help="add the gateway cases on this PostgreSQL server")
    parser.add_argument("--start-postgres", action="store_true", help="start a throwaway PostgreSQL server")
    args = parser.parse_args()
    server = Path(tempfile.mkdtemp(prefix="tvgw-bench-pg-")) if args.start_postgres else None
    postgres = pg_server.start(server, durable=True) if server is not None else args.postgres
    try:
        return run(args, postgres)
    finally:
        if server is not None:
            pg_server.stop(server)


def run(args: argparse.Namespace, postgres: str | None) -> int:
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    tmp = Path(tempfile.mkdtemp(prefix="tvgw-bench-"))
    sync = {"TVGW_SQLITE_SYNCHRONOUS": args.synchronous} if args.synchronous else {}
    cases = [
        ("bare Flask (parse only)", "bench.bare_app:app", gateway_env(tmp, "bare")),
        ("gateway annotate", "wsgi:app", gateway_env(tmp, "annotate", TVGW_STRATEGY_MODE="annotate", **sync)),
        ("gateway paper execute", "wsgi:app", gateway_env(tmp, "paper", **sync)),
    ]
    if args.accounts:
        cases.append(("gateway paper, two accounts", "wsgi:app", accounts_env(tmp, sync)))
    if args.ml:
        cases.append(("gateway paper + ML", "wsgi:app", ml_env(tmp, sync)))
    schemas = PostgresSchemas(postgres) if postgres else None
    if schemas is not None:
        annotate = gateway_env(tmp, "pg-annotate", TVGW_STRATEGY_MODE="annotate")
        cases += [
            ("gateway annotate [PostgreSQL]", "wsgi:app", annotate),
            ("gateway paper execute [PostgreSQL]", "wsgi:app", gateway_env(tmp, "pg-paper")),
        ]
    cases += [
        (f"{name} [{worker}]", app, {**env, "GUNICORN_CMD_ARGS": f"-k {worker}"})
        for worker in args.worker
        for name, app, env in list(cases)
    ]
    rounds: list[list[dict[str, float]]] = []
    for round_no in range(args.rounds):  # interleaved rounds: a slow spell hits every case alike
        row = []
        for port, (_name, app, env) in enumerate(cases, start=18_300 + 10 * round_no):
            if "TVGW_MODEL_DIR" in env:  # the ML case: start from the seeded candle store
                database = Path(env["TVGW_DATABASE"])
                for leftover in database.parent.glob(database.name + "*"):
                    leftover.unlink()
                shutil.copy(tmp / "ml-seed.sqlite", database)
            elif app == "wsgi:app":  # the market the alerts trade in, at their price
                if schemas is not None and _name.endswith("[PostgreSQL]"):  # a fresh store per run
                    env["TVGW_DATABASE"] = schemas.new("bench")
                seed_market(env["TVGW_DATABASE"], {"BTC/USDT": 30000.0})
            proc = start(app, env, port)
            try:
                drive(port, 2, args.connections)  # warm-up
                row.append(drive(port, args.seconds, args.connections))
            finally:
                stop(proc)
        rounds.append(row)
    print(
        f"{'case':38} {'req/s':>9} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>7}   (medians of "
        f"{args.rounds} rounds; ratio = median of per-round ratios to the bare app)"
    )
    for i, (name, _app, _env) in enumerate(cases):
        runs = [row[i] for row in rounds]
        ratio = statistics.median(row[i]["rps"] / row[0]["rps"] for row in rounds)
        print(
            f"{name:38} {statistics.median(r['rps'] for r in runs):9.0f} {ratio:6.2f} "
            f"{statistics.median(r['p50_us'] for r in runs) / 1000:7.2f} "
            f"{statistics.median(r['p99_us'] for r in runs) / 1000:7.2f} {sum(r['non2xx'] for r in runs):7d}"
        )
    print(
        f"(wrk -t2 -c{args.connections} -d{args.seconds}s, unique alerts; gunicorn.conf.py settings; "
        f"{os.cpu_count()} cores; synchronous={args.synchronous or 'default'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
