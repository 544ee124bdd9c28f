"""What the operator surface costs: the per-alert side channels and the read endpoints.

Usage: python -m bench.bench_operator [--alerts 2000]

Builds the real app on a temporary SQLite file (paper broker, ML off), posts ``--alerts``
alerts through the Flask test client, and prints p50/p99 of: the webhook answer; the side
channels alone (the answer parsed into an ``AlertEvent`` and counted for Prometheus, the
notifier's hand-off with no channel set); ``GET /metrics``; ``GET /dashboard/data`` (the
dashboard's 10-second refresh) and ``GET /api/ml/strategies`` with that many alerts on file.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from settings import load_settings
from webhook import create_app
from webhook.events import AlertEvent
from webhook.metrics import observe_alert

TOKEN = "bench-operator-token"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def report(label: str, ms: list[float]) -> None:
    p50, p99 = percentile(ms, 0.5), percentile(ms, 0.99)
    print(f"{label:<42} p50 {p50:8.3f} ms   p99 {p99:8.3f} ms   (n={len(ms)})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=2000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tvgw-bench-operator-"))
    environ = {
        "TVGW_DATABASE": str(folder / "tvgw.sqlite"), "TVGW_PASSPHRASE": "bench-passphrase",
        "TVGW_ALLOWED_IPS": "any", "TVGW_ML_ENABLED": "false", "TVGW_LOG_LEVEL": "WARNING",
        "TVGW_API_TOKEN": TOKEN, "TVGW_RESOLVE_INTERVAL_S": "0", "TVGW_MAX_LAG_SECONDS": "100000",
    }  # fmt: skip
    client = create_app(load_settings(environ=environ)).test_client()
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    answers: list[float] = []
    last: dict[str, Any] = {}
    for i in range(args.alerts):
        side = "buy" if i % 2 == 0 else "sell"
        body = json.dumps({"passphrase": "bench-passphrase", "ticker": "BTCUSDT", "exchange": "BINANCE",
                           "interval": "60", "action": side, "contracts": 0.001, "price": 30000.0 + i,
                           "timenow": now, "order_id": f"o{i}"})  # fmt: skip
        started = time.perf_counter()
        response = client.post("/webhook", data=body)
        answers.append((time.perf_counter() - started) * 1000)
        last = response.json
    report("POST /webhook (whole answer)", answers)
    report("side channels per alert (event + metrics)", timed(lambda: observe_alert(
        AlertEvent.from_answer(200, last, 0.001)), 20_000))  # fmt: skip
    report("GET /metrics", timed(lambda: client.get("/metrics"), 200))
    page = client.get("/").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf is not None
    client.post("/login", data={"token": TOKEN, "csrf": csrf.group(1)})
    dashboard = timed(lambda: client.get("/dashboard/data"), 100)
    report(f"GET /dashboard/data ({args.alerts} alerts on file)", dashboard)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    report("GET /api/ml/strategies", timed(lambda: client.get("/api/ml/strategies", headers=auth), 100))


if __name__ == "__main__":
    main()
