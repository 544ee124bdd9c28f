"""The exits the gateway fires itself: every exit of the paper book, and on an exchange the exits
it cannot hold (a spot market's stop and targets, say).

Each worker's watcher thread, and every alert for the symbol on its way in, checks the open
exits against the bars stored since their last check (the paper book) or against the current
price (an exchange: :mod:`engine.exit_sync` hands it a price as a bar of one price). An exit is
claimed in the write transaction before its order is recorded, under a client id derived from
the exit's row, so several workers watching one bar fill it once.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from engine.arming import to_break_even
from engine.brokers.base import Side
from engine.decision import PlannedOrder
from engine.exceptions import BrokerError
from engine.exits import Bar, check_level
from engine.lifecycle import PENDING_GRACE_S, book
from storage import Connection
from storage import candles as candle_store
from storage import exits as exit_store
from storage import orders as order_store
from storage.orders import FLAT

if TYPE_CHECKING:
    from engine.desk import Desk

__all__ = ["bar_exits", "exit_amount", "watch", "watch_book"]

log = logging.getLogger(__name__)


def watch_book(desk: Desk) -> int:
    """Fill the paper book's exits that the bars stored since their last check crossed, each
    symbol in its own write transaction; returns how many filled."""
    filled = 0
    for symbol in exit_store.open_exit_symbols(desk.storage, desk.broker.name):
        check = functools.partial(watch, desk, symbol=symbol, seen=None)
        filled += len(desk.storage.write_batched(check))
    return filled


def watch(desk: Desk, conn: Connection, *, symbol: str, seen: Bar | None) -> list[dict[str, Any]]:
    """Inside a write transaction: fill the exits of ``symbol`` that the bars since their
    last check crossed, in time order; within a bar the stops before the targets (the
    cautious reading of a bar whose path is unknown), and a trailing stop follows the bar's
    best price only after its worst was checked. ``seen`` is a bar not yet stored (the
    alert's). Only a broker that settles instantly (the paper book) is watched on bars."""
    name = desk.broker.name
    exits = exit_store.open_exits(conn, name, symbol) if desk.broker.settles_instantly else []
    if not exits:
        return []
    first = exits[0]
    since = min(e.checked_ms for e in exits)
    bars = {ms: Bar(ms, o, h, lo) for ms, o, h, lo in candle_store.bars_since(
        conn, symbol, first.timeframe, since, after_ms=first.armed_ms)}  # fmt: skip
    if seen is not None and seen.ms > first.armed_ms and seen.ms >= since:
        stored = bars.get(seen.ms)
        bars[seen.ms] = seen if stored is None else Bar(
            seen.ms, stored.open, max(stored.high, seen.high), min(stored.low, seen.low)
        )  # fmt: skip
    fills: list[dict[str, Any]] = []
    for ms in sorted(bars):
        live = exit_store.open_exits(conn, name, symbol)
        if not live:
            break
        news = bars[ms]
        if ms == live[0].checked_ms:
            news = news.beyond(live[0].seen_high, live[0].seen_low)
        fills += bar_exits(desk, conn, live, news)
        for e in exit_store.open_exits(conn, name, symbol):
            exit_store.set_checked(conn, e.id, ms, bars[ms].high, bars[ms].low)
    return fills


def bar_exits(
    desk: Desk, conn: Connection, live: list[exit_store.ArmedExit], bar: Bar
) -> list[dict[str, Any]]:
    """One bar against the open exits of one position (see :func:`watch`)."""
    name = desk.broker.name
    symbol = live[0].symbol
    held = desk.held(conn, symbol)
    if abs(held) <= FLAT:
        exit_store.cancel_exits(conn, name, symbol, "no position left")
        return []
    instant = desk.broker.settles_instantly
    for e in (x for x in live if x.kind in ("stop", "trailing")):
        price = check_level(e.entry_side, e.trigger, bar, profit=False)
        if price is not None:
            if not instant:  # spent only once its order is confirmed (engine.lifecycle.book)
                fired = _fire_exit(desk, conn, e, abs(held), price)
                return [fired] if fired else []
            fill = _fill_exit(desk, conn, e, abs(held), price)
            exit_store.cancel_exits(conn, name, symbol, f"position closed by {e.kind}")
            return [fill] if fill else []
    for e in (x for x in live if x.kind == "trailing" and x.trail):
        best = bar.high - e.trail if e.entry_side == "buy" else bar.low + e.trail  # type: ignore[operator]
        if (best > e.trigger) if e.entry_side == "buy" else (best < e.trigger):
            exit_store.move_trigger(conn, e.id, best)
    fills = []
    for e in (x for x in live if x.kind.startswith("take_profit")):
        price = check_level(e.entry_side, e.trigger, bar, profit=True)
        if price is None:
            continue
        amount = exit_amount(e, abs(desk.held(conn, symbol)))
        if not instant:
            fired = _fire_exit(desk, conn, e, amount, price)
            if fired:
                fills.append(fired)
            continue
        fill = _fill_exit(desk, conn, e, amount, price)
        if fill:
            fills.append(fill)
        if e.break_even:
            to_break_even(conn, live, e)
    if abs(desk.held(conn, symbol)) <= FLAT:
        exit_store.cancel_exits(conn, name, symbol, "position closed by its targets")
    return fills


def exit_amount(e: exit_store.ArmedExit, held: float) -> float:
    """What exit ``e`` closes of the ``held`` position: all of it for a stop, a target's
    share of its entry (the whole rest when only dust would be left)."""
    if not e.kind.startswith("take_profit"):
        return held
    amount = min((e.share or 1.0) * e.entry_amount, held)
    # Shares of the entry add up to the position only up to rounding: a remainder of a millionth
    # (of a unit, or of a position over one unit) is that rounding, and goes with this target.
    return held if held - amount <= 1e-6 * max(1.0, held) else amount


def _fill_exit(
    desk: Desk, conn: Connection, e: exit_store.ArmedExit, amount: float, price: float
) -> dict[str, Any] | None:
    """Fill one exit of the paper book once: claim it (a second worker's claim finds it
    filled), record its order with its reason, fill it at ``price`` with the same fee and
    slippage model as any order, and book the fill. None when another pass claimed it."""
    cid = f"{desk.client_prefix(conn)}-e{e.id}-1"
    if not exit_store.claim_exit(conn, e.id, cid, e.kind):
        return None
    side: Side = "sell" if e.entry_side == "buy" else "buy"
    fitted, problem = desk.fit(e.symbol, amount, price, True)
    order_store.create_pending_order(
        conn, alert_id=e.alert_id, client_order_id=cid, broker=desk.broker.name, symbol=e.symbol,
        side=side, order_type="market", amount=fitted or amount, price=price, reason=e.kind,
    )  # fmt: skip
    out: dict[str, Any] = {"exit": e.kind, "trigger": e.trigger, "client_order_id": cid}
    if problem is not None:
        order_store.close_order(conn, cid, "rejected", problem)
        return {**out, "status": "rejected", "reason": problem}
    request = PlannedOrder(symbol=e.symbol, side=side, amount=fitted, price=price, reduce_only=True)
    try:
        result = desk.broker.execute(request.request(cid))
    except BrokerError as exc:
        order_store.close_order(conn, cid, "failed", str(exc))
        log.warning("exit %s of %s failed: %s", e.kind, e.symbol, exc)
        return {**out, "status": "failed", "reason": str(exc)}
    book(desk, conn, result)
    log.info("exit %s: %s %.10g %s at %.10g", e.kind, side, result.filled, e.symbol, result.average or 0)
    filled = {"side": side, "filled": result.filled, "average": result.average}
    return {**out, "status": result.status, **filled}


def _fire_exit(
    desk: Desk, conn: Connection, e: exit_store.ArmedExit, amount: float, price: float
) -> dict[str, Any] | None:
    """Claim the firing of a gateway-held exit on a remote broker and record its order,
    ``pending``: the caller sends it once this transaction committed
    (:func:`engine.exit_sync.send_exit`). The exit stays open until the order is confirmed
    filled; an order that fails or never reaches the exchange frees it to fire again. None when
    it is already in flight, or the market would refuse the amount (said in the log)."""
    cid = f"{desk.client_prefix(conn)}-e{e.id}-{e.firings + 1}"
    side: Side = "sell" if e.entry_side == "buy" else "buy"
    fitted, problem = desk.fit(e.symbol, amount, price, True)
    if problem is not None:
        log.warning("exit %s of %s not fired: %s", e.kind, e.symbol, problem)
        return None
    if not exit_store.begin_firing(conn, e.id, cid):
        return None
    order_store.create_pending_order(
        conn, alert_id=e.alert_id, client_order_id=cid, broker=desk.broker.name, symbol=e.symbol,
        side=side, order_type="market", amount=fitted, price=price, reason=e.kind,
        next_poll_at=desk.clock.now() + PENDING_GRACE_S,
    )  # fmt: skip
    request = PlannedOrder(symbol=e.symbol, side=side, amount=fitted, price=price, reduce_only=True)
    return {"exit": e.kind, "trigger": e.trigger, "client_order_id": cid, "status": "pending", "side": side,
            "request": request.request(cid)}  # fmt: skip
