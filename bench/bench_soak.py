"""Database size under a steady alert stream, with and without retention pruning.

Usage: python -m bench.bench_soak [--alerts 20000] [--days 400] [--postgres URL | --start-postgres]

Each simulated alert writes what the gateway writes for an executed, ML-enriched alert, through
the storage functions it uses: the alert row (its raw body, decision and ML analysis), the order
and its fill (position and cash ledger), an equity snapshot, its candle, and a prediction whose
outcome is resolved an hour later; one drift notification key per day. The alerts are spread
evenly over ``--days`` of simulated time, and the store is pruned once a simulated day with the
default :class:`~storage.retention.RetentionPolicy` (or never). Sizes are printed at each fifth
of the run: the SQLite file (after a WAL checkpoint) or the PostgreSQL schema's relations.

Orders, positions, candles and the alert rows themselves are kept by design (the ledger, the
market data and the idempotency keys): they grow in both runs. What retention bounds is the
rest, so the growth per alert after the retention periods have passed is the figure to read.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from storage import Storage
from storage import alerts as alert_store
from storage import candles as candle_store
from storage import orders as order_store
from storage import predictions as prediction_store
from storage.database import query_one
from storage.retention import RetentionPolicy, prune
from storage.state import claim_notification

DAY = 86_400.0
BODY = {
    "passphrase": "[redacted]", "ticker": "BTCUSDT", "exchange": "BINANCE", "interval": "60",
    "action": "buy", "contracts": 0.001, "price": 30000.0, "order_id": "Long",
    "comment": "x" * 300,  # Pine strategies send a few hundred bytes of their own
}  # fmt: skip
ANALYSIS = {
    "direction_probability": 0.61, "confidence": 0.7, "model_version": "v1", "features": list(range(40))
}  # fmt: skip


def one_alert(storage: Storage, n: int, at: float) -> None:
    """What the gateway writes for alert ``n`` at simulated time ``at``."""
    side = "buy" if n % 2 == 0 else "sell"
    price = 30000.0 + (n % 100)
    with storage.transaction() as conn:
        alert_id = alert_store.claim_alert(
            conn, idempotency_key=f"soak-{n}", received_at=at, source_ip="52.89.214.238", payload=BODY,
            fields={"symbol": "BTC/USDT", "action": side, "price": price}, status="executed",
            outcome={"http_status": 200, "reason": "executed", "decision": {"action": side, "size": 0.001},
                     "ml_analysis": ANALYSIS},
        )  # fmt: skip
        assert alert_id is not None
        cid = f"tvgw-{alert_id}"
        order_store.create_pending_order(
            conn, alert_id=alert_id, client_order_id=cid, broker="paper", symbol="BTC/USDT", side=side,
            order_type="market", amount=0.001, price=None,
        )  # fmt: skip
        order_store.update_order(conn, cid, status="filled", filled=0.001, average=price, fee=0.03)
        order_store.apply_fill(
            conn, broker="paper", symbol="BTC/USDT", side=side, filled=0.001, price=price, fee=0.03,
            quote_currency="USDT", starting_cash=10_000.0, at=at,
        )  # fmt: skip
        order_store.record_equity(conn, "paper", 10_000.0 + (n % 50), at=at)
        candle_store.upsert_candles(conn, "BTC/USDT", "1h", [[int(at // 3600 * 3600_000), price, price, price,
                                                             price, 1.0]], "alert")  # fmt: skip
        prediction_store.insert_prediction(
            conn, timestamp=at, alert_id=alert_id, symbol="BTC/USDT", timeframe="1h", model_version="v1",
            direction_prob=0.61, magnitude_pred=0.002, confidence=0.7, horizon=1, target_time=at + 3600,
            price_at_prediction=price,
        )  # fmt: skip


def resolve_due(storage: Storage, now: float) -> None:
    for row in prediction_store.unresolved_due(storage, now, limit=100_000):
        prediction_store.resolve_prediction(
            storage, row["id"], actual_direction=1, actual_magnitude=0.001, prediction_accuracy=1.0
        )


def size_bytes(storage: Storage) -> int:
    if storage.dialect.postgres:
        row = query_one(
            storage,
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema()"
            " AND c.relkind IN ('r', 't', 'm')",
        )
        return int(row[0])
    storage.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return Path(storage.target).stat().st_size


def soak(storage: Storage, alerts: int, days: float, policy: RetentionPolicy | None) -> list[tuple[int, int]]:
    """Run the stream; (alerts so far, size in bytes) at each fifth."""
    start = time.time() - days * DAY
    step = days * DAY / alerts
    sizes, last_day = [], -1
    for n in range(alerts):
        at = start + n * step
        one_alert(storage, n, at)
        day = int((at - start) // DAY)
        if day != last_day:
            last_day = day
            key = f"drift:{day}"
            claim_notification(storage, key)
            storage.conn.execute("UPDATE notifications_sent SET sent_at = ? WHERE key = ?", (at, key))
            resolve_due(storage, at)
            if policy is not None:
                prune(storage, policy, now=at)
        if (n + 1) % (alerts // 5) == 0:
            if storage.dialect.postgres:
                storage.conn.execute("VACUUM")  # what autovacuum does in the background
            sizes.append((n + 1, size_bytes(storage)))
    return sizes


def fresh(kind: str, folder: Path, url: str | None, name: str) -> Storage:
    if kind == "sqlite":
        storage = Storage(folder / f"{name}.sqlite", synchronous="NORMAL")
    else:
        import psycopg

        assert url is not None
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
            conn.execute(f"CREATE SCHEMA {name}")
        storage = Storage(f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{name}")
    storage.migrate()
    return storage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=20_000)
    parser.add_argument("--days", type=float, default=400.0)
    parser.add_argument("--postgres", help="also run on this PostgreSQL server (a schema per run)")
    parser.add_argument("--start-postgres", action="store_true", help="start a throwaway server (Debian's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url = args.postgres
        server = Path(tempfile.mkdtemp(prefix="tvgw-bench-pg-"))  # the server user must reach it
        if args.start_postgres:
            from tests import pg_server

            url = pg_server.start(server, durable=True)
        try:
            stores = ["sqlite"] + (["postgresql"] if url else [])
            print(f"{args.alerts} alerts over {args.days:g} simulated days, default retention "
                  f"{RetentionPolicy()}")  # fmt: skip
            print("| store | pruning | " + " | ".join(f"after {args.alerts * i // 5}" for i in range(1, 6))
                  + " | bytes/alert, last 2/5 |")  # fmt: skip
            print("|---|---|" + "---:|" * 6)
            for kind in stores:
                for label, policy in (("none", None), ("daily", RetentionPolicy())):
                    storage = fresh(kind, folder, url, f"soak_{label}")
                    began = time.perf_counter()
                    sizes = soak(storage, args.alerts, args.days, policy)
                    rate = (sizes[-1][1] - sizes[2][1]) / (sizes[-1][0] - sizes[2][0])
                    cells = " | ".join(f"{b / 1e6:.2f} MB" for _, b in sizes)
                    print(f"| {kind} | {label} | {cells} | {rate:.0f} |"
                          f" <!-- {time.perf_counter() - began:.0f} s -->")  # fmt: skip
                    storage.close()
        finally:
            if args.start_postgres:
                from tests import pg_server

                pg_server.stop(server)


if __name__ == "__main__":
    main()
