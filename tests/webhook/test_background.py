"""A gateway's background loops (exit watcher, outcome resolver, retention pruner; on an exchange
the order lifecycle and the reconciler too) stop with it:
none outlives its database to log "unable to open database file" every interval after the tests
(or a worker) end."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_settings, market_app, wait_until
from webhook import stop_background

LOOPS = {"tvgw-exits", "tvgw-outcome-resolver", "tvgw-retention"}


def _loops() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name in LOOPS and t.is_alive()]


def test_stop_background_ends_the_loops_of_an_app(tmp_path: Path) -> None:
    before = set(_loops())
    every = ("TVGW_EXIT_WATCH_INTERVAL_S", "TVGW_RESOLVE_INTERVAL_S", "TVGW_PRUNE_INTERVAL_S")
    settings = make_settings(tmp_path, **dict.fromkeys(every, "0.05"))
    app = market_app(settings)
    mine = [t for t in _loops() if t not in before]
    assert {t.name for t in mine} == LOOPS
    stop_background(app)
    wait_until(lambda: not any(t.is_alive() for t in mine), 10, "the loops did not stop")


def test_an_exchange_gateways_order_loops_stop_with_it(
    tmp_path: Path, fake_exchange: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order lifecycle and the reconciler run only for an account on an exchange."""
    from tests.fake_exchange import DEFAULT_API_KEY, DEFAULT_SECRET

    monkeypatch.setenv("TVGW_BINANCE_API_KEY", DEFAULT_API_KEY)
    monkeypatch.setenv("TVGW_BINANCE_SECRET", DEFAULT_SECRET)
    books = {"tvgw-orders", "tvgw-reconcile"}
    before = set(threading.enumerate())
    settings = make_settings(
        tmp_path, TVGW_BROKER="binance", TVGW_EXCHANGE_API_URL=fake_exchange.url,
        TVGW_ORDER_POLL_INTERVAL_S="0.05", TVGW_RECONCILE_INTERVAL_S="0.05",
    )  # fmt: skip
    app = market_app(settings, prices={})
    mine = [t for t in threading.enumerate() if t not in before and t.name in books and t.is_alive()]
    assert {t.name for t in mine} == books
    stop_background(app)
    wait_until(lambda: not any(t.is_alive() for t in mine), 10, "the order loops did not stop")
