"""A gateway's background loops (exit watcher, outcome resolver, retention pruner) stop with it:
none outlives its database to log "unable to open database file" every interval after the tests
(or a worker) end."""

from __future__ import annotations

import threading
from pathlib import Path

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
