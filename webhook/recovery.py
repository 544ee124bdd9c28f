"""Start-up recovery: settle what a crash (SIGKILL, power loss) left half-done.

Runs once in the gunicorn master before any worker exists, so on a store of its own every
``processing`` alert and ``pending`` order it finds is an orphan (and every order not yet
terminal is asked about: :func:`engine.lifecycle.recover`). On a store several hosts share
(PostgreSQL) another host may be in the middle of one: only rows untouched for
:data:`IN_FLIGHT_S` are orphans (no request lives that long). Orders are reconciled with the
broker by client order id, never re-sent.
"""

from __future__ import annotations

import time

from engine.brokers.factory import create_account_brokers, create_broker
from engine.brokers.paper import PaperBroker
from engine.engine import TradingEngine
from engine.reconciler import Reconciler
from settings import ConfigError, Settings, account_credentials, exchange_credentials, load_settings
from storage import Storage
from storage import alerts as alert_store
from storage import orders as order_store
from storage.models import mark_interrupted_jobs

__all__ = ["IN_FLIGHT_S", "recover"]

#: Longer than any alert can be in flight on a live host (the exchange timeout is at most 60 s,
#: an alert's accounts are sent side by side).
IN_FLIGHT_S = 300.0


def recover(settings: Settings | None = None) -> list[str]:
    """Migrate, reconcile pending orders, and close orphaned alerts; returns log lines."""
    settings = settings or load_settings()
    storage = Storage(settings.database, synchronous=settings.sqlite_synchronous)
    storage.migrate()
    broker = create_broker(settings, storage, exchange_credentials(settings.broker))
    accounts = create_account_brokers(settings, storage, account_credentials)
    for book in (broker, *accounts.values()):
        if isinstance(book, PaperBroker):
            try:
                book.check_starting_balance(storage.describe())
            except ConfigError:
                storage.close()
                raise
    before = time.time() - IN_FLIGHT_S if storage.shared else None
    engine = TradingEngine(settings, storage, broker, accounts=accounts)
    lines = engine.reconcile(updated_before=before)
    # The books against the exchange once, before any worker: coins first seen are counted as the
    # account's own, and drift a crash left is on file (and said) from the first request.
    lines += Reconciler(storage, engine.accounts).run_once(time.time())
    for book in (broker, *accounts.values()):
        notice = book.exit_notice()  # where exits are held: said once, before any worker starts
        if notice:
            lines.append(notice)
    for alert_id in alert_store.orphaned_alerts(storage, updated_before=before):
        orders = order_store.list_orders(storage, alert_id=alert_id)
        filled = [o for o in orders if o["filled"] > 0]
        status = "executed" if filled else "failed"
        reason = (
            "interrupted by a restart after its order filled"
            if filled
            else "interrupted by a restart before its order was placed; not executed"
        )
        with storage.transaction() as conn:
            alert_store.finish_alert(
                conn,
                alert_id,
                status=status,
                http_status=None,
                reason=reason,
                decision=None,
                ml_analysis=None,
            )
        lines.append(f"alert {alert_id}: {status} ({reason})")
    if not storage.shared:  # a shared store's running jobs may be another host's (hours long)
        lines += [f"training job {job_id}: interrupted" for job_id in mark_interrupted_jobs(storage)]
    for book in (broker, *accounts.values()):
        book.close()
    storage.close()
    return lines
