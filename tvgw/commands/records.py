"""`tvgw alerts`, `tvgw orders`, `tvgw positions`: what the API shows, as a terminal table.

The rows come from the same storage functions as ``/api/alerts``, ``/api/orders`` and
``/api/positions`` and go through the same formatting (ISO 8601 UTC times, amounts rounded),
so the terminal and the API never disagree. ``--json`` prints the API's JSON instead.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from tvgw.commands import add_command
from tvgw.commands.data import cli_settings, open_storage

__all__ = ["format_table", "register"]

ALERT_COLUMNS = ("id", "received_at", "strategy_id", "symbol", "action", "status", "http_status", "reason")
ORDER_COLUMNS = (
    "id",
    "alert_id",
    "created_at",
    "symbol",
    "side",
    "amount",
    "filled",
    "average",
    "fee",
    "status",
)
POSITION_COLUMNS = ("symbol", "amount", "avg_price", "stop_loss", "realized_pnl", "opened_at", "prices")
#: A reason can be long (a refusal explains itself); the table cuts it, --json keeps it whole.
MAX_CELL = 60


def register(sub: argparse._SubParsersAction, name: str) -> None:
    """Register one of ``alerts``, ``orders``, ``positions`` (they share this module)."""
    func = {"alerts": run_alerts, "orders": run_orders, "positions": run_positions}[name]
    parser = add_command(sub, name)
    if name != "positions":
        parser.add_argument("--limit", type=int, default=20, help="rows (default 20, at most 1000)")
    if name == "alerts":
        parser.add_argument("--status", help="only alerts with this status (executed, refused, ...)")
        parser.add_argument(
            "--id", type=int, metavar="N", help="the timeline of alert N: every step, its time and latency"
        )
        parser.add_argument(
            "--daily", action="store_true",
            help="per strategy and day: alerts expected, received, missed, repaired; median latencies",
        )  # fmt: skip
        parser.add_argument("--days", type=float, default=7.0, help="days of --daily (default 7)")
    parser.add_argument("--json", action="store_true", help="print the JSON the API answers")
    parser.set_defaults(func=func)


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Left-aligned columns sized to their widest cell, a header and a rule."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _print(value: Any, columns: Sequence[str], as_json: bool, empty: str) -> int:
    from webhook.api_json import to_api

    shown = to_api(value)
    if as_json:
        print(json.dumps(shown, indent=2))
    elif not shown:
        print(empty)
    else:
        print(format_table(shown, columns))
    return 0


def _limit(args: argparse.Namespace) -> int | None:
    if not 1 <= args.limit <= 1000:
        print(f"tvgw {args.command}: --limit must be from 1 to 1000, got {args.limit}")
        return None
    return int(args.limit)


TIMELINE_COLUMNS = ("step", "at", "step_ms", "since_received_ms", "detail")
DAILY_COLUMNS = (
    "day", "strategy_id", "expected", "received", "missed", "repaired", "fired_to_received_ms",
    "received_to_filled_ms",
)  # fmt: skip


def _timeline(args: argparse.Namespace) -> int:
    """``tvgw alerts --id N``: the same timeline ``/api/alerts/N/timeline`` answers."""
    import dataclasses

    from storage.timeline import alert_timeline
    from webhook.api_json import to_api

    found = alert_timeline(open_storage(cli_settings()), args.id)
    if found is None:
        print(f"tvgw alerts: no alert {args.id}")
        return 1
    shown = to_api(dataclasses.asdict(found))
    if args.json:
        print(json.dumps(shown, indent=2))
        return 0
    price = "" if found.alert_price is None else f", alert price {found.alert_price:g}"
    print(f"alert {found.alert_id}: {found.strategy_id} {found.symbol} {found.action} {found.status}{price}")
    for step in shown["steps"]:
        step["detail"] = " ".join(f"{k}={v}" for k, v in step["detail"].items() if v is not None)
    print(format_table(shown["steps"], TIMELINE_COLUMNS))
    return 0


def _daily(args: argparse.Namespace) -> int:
    import dataclasses
    import time

    from storage.timeline import daily_summary

    if not 0 < args.days <= 3650:
        print(f"tvgw alerts: --days must be above 0 and at most 3650, got {args.days:g}")
        return 2
    rows = daily_summary(open_storage(cli_settings()), since=time.time() - args.days * 86_400)
    return _print([dataclasses.asdict(r) for r in rows], DAILY_COLUMNS, args.json, "no alerts in that window")


def run_alerts(args: argparse.Namespace) -> int:
    from storage.alerts import list_alerts

    if args.id is not None:
        return _timeline(args)
    if args.daily:
        return _daily(args)
    limit = _limit(args)
    if limit is None:
        return 2
    rows = list_alerts(open_storage(cli_settings()), limit=limit, status=args.status)
    for row in rows:
        row["symbol"] = row["symbol"] or row["ticker"]
    return _print(rows, ALERT_COLUMNS, args.json, "no alerts recorded yet")


def run_orders(args: argparse.Namespace) -> int:
    from storage.orders import list_orders

    limit = _limit(args)
    if limit is None:
        return 2
    rows = list_orders(open_storage(cli_settings()), limit=limit)
    return _print(rows, ORDER_COLUMNS, args.json, "no orders recorded yet")


def run_positions(args: argparse.Namespace) -> int:
    from storage.orders import list_positions
    from webhook.api_json import with_synthetic

    settings = cli_settings()
    storage = open_storage(settings)
    rows = with_synthetic(storage, list_positions(storage, settings.broker))
    for row in rows:  # the table says it in words; --json keeps the API's boolean
        row["prices"] = "SYNTHETIC" if row["synthetic"] else "market"
    shown = [{k: v for k, v in row.items() if k != "prices"} for row in rows] if args.json else rows
    return _print(shown, POSITION_COLUMNS, args.json, f"no open positions on the {settings.broker} book")
