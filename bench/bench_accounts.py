"""What a second account costs an alert: CPU per alert, in-process (the WSGI app through Flask's
test client, no gunicorn, no network), paper execute, one account against two paper accounts.

Usage: python -m bench.bench_accounts [--alerts 2000] [--rounds 3]

Both apps live in this one process and take interleaved batches of unique alerts, so a slow
spell on this shared machine hits both alike; medians of the per-batch CPU time are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_gateway import PASSPHRASE, gateway_env
from settings import load_settings
from tests.conftest import seed_market
from webhook import create_app


def app_for(tmp: Path, name: str, accounts: str | None) -> Any:
    """A test client of the gateway trading paper; ``accounts`` routes the default strategy."""
    extra = {"TVGW_ALLOWED_IPS": "any", "TVGW_EXIT_WATCH_INTERVAL_S": "0", "TVGW_RESOLVE_INTERVAL_S": "0"}
    if accounts is not None:
        config = tmp / f"{name}.toml"
        config.write_text(accounts)
        extra["TVGW_CONFIG"] = str(config)
    settings = load_settings(environ=gateway_env(tmp, name, **extra))
    seed_market(settings.database, {"BTC/USDT": 30000.0})
    return create_app(settings).test_client()


def batch(client: Any, start: int, count: int) -> float:
    """CPU seconds per alert for ``count`` unique alerts (alternating buy and sell)."""
    began = time.process_time()
    for i in range(start, start + count):
        body = {"passphrase": PASSPHRASE, "ticker": "BTCUSDT", "exchange": "BINANCE", "interval": "60",
                "action": "buy" if i % 2 else "sell", "contracts": 0.001, "price": 30000.0,
                "id": f"a{i}"}  # fmt: skip
        answer = client.post("/webhook", data=json.dumps(body))
        assert answer.status_code == 200 and answer.json["status"] == "executed", answer.json
    return (time.process_time() - began) / count


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alerts", type=int, default=2000, help="alerts per case and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tvgw-bench-accounts-"))
    two = '[accounts.shadow]\n[strategies.default]\naccounts = ["paper", "shadow"]\n'
    cases = {
        "one account (default)": app_for(tmp, "one", None),
        "two paper accounts": app_for(tmp, "two", two),
    }
    for client in cases.values():
        batch(client, -1_000_000, 200)  # warm-up
    per_alert: dict[str, list[float]] = {name: [] for name in cases}
    step = 200
    for round_no in range(args.rounds):
        for offset in range(0, args.alerts, step):
            for name, client in cases.items():
                per_alert[name].append(batch(client, round_no * args.alerts + offset, step))
    base = statistics.median(per_alert["one account (default)"])
    for name, values in per_alert.items():
        median = statistics.median(values)
        print(f"{name:24} CPU/alert {median * 1000:6.3f} ms   ratio to one account {median / base:4.2f}")
    print(f"({args.rounds} rounds x {args.alerts} alerts per case, interleaved batches of {step}; medians)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
