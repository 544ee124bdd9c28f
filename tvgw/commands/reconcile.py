"""`tvgw reconcile`: the gateway's books against the exchange, now, for every exchange account;
``--adopt`` makes the books say what the exchange holds, for the markets that differ.

The comparison is the reconciler's own (:mod:`engine.reconciler`), taken at once rather than
confirmed over two passes, and recorded like any pass (``/healthz`` and the dashboard show it).
Adopting asks before it changes anything, unless ``--yes``. Run it with the gateway stopped, or
between alerts: an order in flight is shown as such and never adopted.
"""

from __future__ import annotations

import argparse
import sys
import time

from tvgw.commands import add_command
from tvgw.commands.data import cli_settings, open_storage
from tvgw.commands.records import format_table

__all__ = ["register"]

COLUMNS = ("account", "market", "kind", "booked", "own", "exchange", "difference", "step", "status")


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(sub, "reconcile")
    parser.add_argument("--adopt", action="store_true", help="make the books say what the exchange holds")
    parser.add_argument("--yes", action="store_true", help="with --adopt: do not ask first")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.brokers.factory import create_account_brokers, create_broker
    from engine.engine import TradingEngine
    from engine.exceptions import BrokerError
    from engine.reconciler import adopt, reconcile
    from tvgw.config import account_credentials, exchange_credentials

    settings = cli_settings()
    storage = open_storage(settings)
    broker = create_broker(settings, storage, exchange_credentials(settings.broker))
    accounts = create_account_brokers(settings, storage, account_credentials)
    engine = TradingEngine(settings, storage, broker, accounts=accounts)
    desks = [d for d in engine.desks() if not d.broker.settles_instantly]
    if not desks:
        print("no exchange account is configured: the paper book is its own account, nothing to reconcile")
        return 0
    rows, off, failed = [], [], False
    for desk in desks:
        try:
            checks = reconcile(desk, now=time.time(), confirm=1)
        except BrokerError as exc:
            print(f"{desk.broker.name}: cannot read the account: {exc}", file=sys.stderr)
            failed = True
            continue
        for check in checks:
            rows.append({
                "account": check.broker, "market": check.symbol, "kind": check.kind,
                "booked": f"{check.booked:.10g}", "own": f"{check.outside:.10g}",
                "exchange": f"{check.exchange:.10g}",
                "difference": f"{check.difference:+.10g}", "step": f"{check.step:g}", "status": check.status,
            })  # fmt: skip
            if check.status == "off":
                off.append((desk, check))
                print(check.detail)
    print(format_table(rows, COLUMNS) if rows else "no booked positions on any exchange account")
    if not off:
        print("the books agree with the exchange" if rows and not failed else "")
        return 1 if failed else 0
    if not args.adopt:
        print(
            f"{len(off)} market(s) differ: `tvgw reconcile --adopt` makes the books say what the "
            "exchange holds"
        )
        return 1
    if not args.yes:
        answer = input(f"adopt the exchange's view for {len(off)} market(s)? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            print("nothing changed")
            return 1
    for desk, check in off:
        print(adopt(desk, check))
    return 0
