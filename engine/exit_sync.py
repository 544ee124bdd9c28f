"""Exits on a live exchange: the resting stop and take-profit orders kept in line with the book,
their fills learnt and recorded, and the exits the exchange cannot hold fired on its price.

Every call here goes to the exchange, outside any write transaction; what it learns is recorded
in short transactions of its own. A resting exit is placed under a client id claimed in the book
first (``tvgw-<installation>-x<exit id>-<n>``), so a second worker or a retry never places it twice;
a placement whose sender gave up waiting (``unknown``), or began longer than ``PENDING_GRACE_S``
ago (its sender died), is looked up by that id before anything else. One still in flight is left
to its sender: another worker's look-up would find nothing yet and place it a second time.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import TYPE_CHECKING, Any

from engine.brokers.base import OrderRequest, OrderResult, ProtectiveOrder, Side
from engine.exceptions import BrokerError, InvalidOrderError, OrderUncertainError, TemporaryError
from engine.exit_watch import bar_exits, exit_amount
from engine.exits import Bar
from engine.lifecycle import PENDING_GRACE_S, book
from storage import Connection
from storage import exits as exit_store
from storage import orders as order_store
from storage.orders import FLAT

if TYPE_CHECKING:
    from engine.desk import Desk

__all__ = ["send_exit", "sync_exits", "watch_live"]

log = logging.getLogger(__name__)


def watch_live(desk: Desk) -> int:
    """Every watched symbol of a live broker's book (:func:`watch_symbol`); how many exits filled."""
    return sum(watch_symbol(desk, s) for s in exit_store.watched_symbols(desk.storage, desk.broker.name))


def watch_symbol(desk: Desk, symbol: str) -> int:
    """A live broker's exits of ``symbol``: learn what the exchange's resting exits did (a
    fill is recorded once, with its consequences), move the trailing stops with the price,
    fire the exits the gateway holds itself when the price crossed them, then make the
    exchange's resting orders match (:func:`sync_exits`). Returns how many exits filled."""
    name = desk.broker.name
    polled = exit_store.exchange_exits(desk.storage, name, symbol, placing_grace_s=PENDING_GRACE_S)
    filled = sum(_poll_exit(desk, e) for e in polled)
    _decide_holders(desk, symbol)
    live = exit_store.open_exits(desk.storage, name, symbol)
    if any(e.held_by != "exchange" or e.kind == "trailing" for e in live):
        price = _live_price(desk, symbol)
        if price is not None:
            act = functools.partial(_price_exits, desk, symbol=symbol, price=price)
            fills = desk.storage.write_batched(act)
            filled += sum(send_exit(desk, f["request"]) for f in fills if "request" in f)
    sync_exits(desk, symbol)
    return filled


def _decide_holders(desk: Desk, symbol: str) -> None:
    """Exits armed while the exchange could not be asked who holds them (``undecided``: the
    gateway watches them meanwhile) are decided now, when it answers."""
    undecided = [
        e
        for e in exit_store.open_exits(desk.storage, desk.broker.name, symbol)
        if e.held_by == "undecided" and not e.firing_cid
    ]
    if not undecided:
        return
    holder = desk.exit_holder(symbol)
    if not holder.known:
        return
    for e in undecided:
        exit_store.set_held_by(desk.storage, e.id, holder.held_by)
    log.info("exits of %s: now held by %s (%s)", symbol, holder.held_by, holder.reason)


def send_exit(desk: Desk, request: OrderRequest) -> bool:
    """Send an exit the gateway fired (its order is on file, ``pending``, and the exit is in
    flight), once, and book what came of it; True when it filled. The exit is spent only by a
    confirmed fill (:func:`engine.lifecycle.book`): a refusal before the exchange took it (a 429,
    a 503) or any other failure frees it to fire again on the next pass; a lost answer leaves
    the order ``unknown`` for the lifecycle to settle, never re-sent."""
    cid = request.client_order_id
    try:
        result = desk.broker.execute(request)
    except OrderUncertainError as exc:
        with desk.storage.transaction() as conn:
            order_store.schedule_poll(conn, cid, desk.clock.now(), status="unknown", error=str(exc))
        log.warning(
            "exit order %s of %s unknown (%s): the order lifecycle settles it", cid, request.symbol, exc
        )
        return False
    except BrokerError as exc:
        with desk.storage.transaction() as conn:
            order_store.close_order(
                conn, cid, "rejected" if isinstance(exc, InvalidOrderError) else "failed", str(exc)
            )
            exit_store.end_firing(conn, cid)
        log.warning(
            "exit order %s of %s not filled (%s); fired again on the next pass", cid, request.symbol, exc
        )
        return False
    with desk.storage.transaction() as conn:
        book(desk, conn, result)
    log.info("exit order %s: %s %.10g %s at %s", cid, request.side, result.filled, request.symbol,
             result.average)  # fmt: skip
    return result.filled > 0


def _live_price(desk: Desk, symbol: str) -> float | None:
    try:
        return desk.broker.last_price(symbol)
    except BrokerError as exc:
        log.warning("exits of %s: no price from %s (%s); checked again later", symbol, desk.broker.name, exc)
        return None


def _poll_exit(desk: Desk, e: exit_store.ArmedExit) -> int:
    """What the exchange did with the resting exit ``e``: a fill is recorded (1), a
    placement it never saw is marked ``gone`` (placed again by :func:`sync_exits`)."""
    cid = e.exchange_cid
    assert cid is not None
    try:
        result = desk.broker.fetch_exit(cid, e.symbol)
    except BrokerError as exc:
        log.warning("exit %s of %s: cannot read %s (%s); asked again later", e.kind, e.symbol, cid, exc)
        return 0
    if result is None:
        exit_store.set_exchange_state(desk.storage, e.id, cid, "gone")
        return 0
    if result.filled > 0:
        act = functools.partial(_exchange_fill, desk, e=e, result=result)
        return 1 if desk.storage.write_batched(act) else 0
    state = {"open": "open", "canceled": "canceled", "rejected": "canceled"}.get(result.status)
    if state is not None and (state, result.exchange_order_id) != (e.exchange_status, e.exchange_order_id):
        exit_store.set_exchange_state(desk.storage, e.id, cid, state, result.exchange_order_id)
    return 0


def _exchange_fill(
    desk: Desk, conn: Connection, *, e: exit_store.ArmedExit, result: OrderResult
) -> dict[str, Any] | None:
    """Record, once, an exit the exchange filled: its order (client id of the placement,
    reason the exit's kind) and its fill, booked with what follows from it
    (:func:`engine.lifecycle.book`: a stop closes the position and cancels its other exits, a
    target may move the stop to break-even). None when another worker recorded it first (the
    order's client id is UNIQUE)."""
    cid = str(e.exchange_cid)
    exit_store.set_exchange_state(conn, e.id, cid, "filled", result.exchange_order_id)
    if order_store.order_record(conn, cid) is not None:
        return None
    side: Side = "sell" if e.entry_side == "buy" else "buy"
    order_store.create_pending_order(
        conn, alert_id=e.alert_id, client_order_id=cid, broker=desk.broker.name, symbol=e.symbol,
        side=side, order_type="market", amount=result.filled, price=e.trigger, reason=e.kind,
    )  # fmt: skip
    book(desk, conn, dataclasses.replace(result, client_order_id=cid))
    log.info("exit %s filled on %s: %s %.10g %s at %s", e.kind, desk.broker.name, side,
             result.filled, e.symbol, result.average)  # fmt: skip
    return {"exit": e.kind, "trigger": e.trigger, "client_order_id": cid, "status": result.status,
            "side": side, "filled": result.filled, "average": result.average}  # fmt: skip


def _price_exits(desk: Desk, conn: Connection, *, symbol: str, price: float) -> list[dict[str, Any]]:
    """Inside a write transaction: trailing stops the exchange holds follow ``price``; the
    exits the gateway holds itself fire when ``price`` crossed them (as a bar of one price)."""
    live = exit_store.open_exits(conn, desk.broker.name, symbol)
    for e in live:
        if e.held_by == "exchange" and e.kind == "trailing" and e.trail:
            best = price - e.trail if e.entry_side == "buy" else price + e.trail
            if (best > e.trigger) if e.entry_side == "buy" else (best < e.trigger):
                exit_store.move_trigger(conn, e.id, best)
    mine = [e for e in live if e.held_by != "exchange"]  # the gateway's, and those not decided yet
    if not mine or any(e.firing_cid for e in mine):
        return []  # an exit in flight is settled first (by its order's answer or the lifecycle)
    return bar_exits(desk, conn, mine, Bar(int(desk.clock.now() * 1000), None, price, price))


def sync_exits(desk: Desk, symbol: str) -> None:
    """Make the exchange's resting exits of ``symbol`` match the book: cancel those whose
    exit is no longer open (the position closed, reversed, or a stop filled); place those
    not placed yet; cancel and replace those whose trigger moved (break-even, trailing) or
    whose amount changed (a target filled, a partial close). Network calls, outside any
    transaction; a failure is logged and the watcher's next pass tries again."""
    if desk.broker.settles_instantly:
        return
    name = desk.broker.name
    held = abs(order_store.position_amount(desk.storage, name, symbol))
    for e in exit_store.exchange_exits(desk.storage, name, symbol):
        if (e.status != "open" or held <= FLAT) and e.exchange_status == "open":
            _cancel_exit(desk, e)
    for e in exit_store.open_exits(desk.storage, name, symbol):
        if e.held_by != "exchange" or e.exchange_status in ("placing", "unknown") or held <= FLAT:
            continue  # a placement whose answer was lost is looked up first, never placed twice
        amount, problem = desk.fit(symbol, exit_amount(e, held), e.trigger, True)
        if problem is not None:
            log.warning("exit %s of %s not placed: %s", e.kind, symbol, problem)
            continue
        if e.exchange_status == "open":
            if _same(e.placed_amount, amount) and _same(e.placed_trigger, e.trigger):
                continue
            if not _cancel_exit(desk, e):
                continue
        _place_exit(desk, e, amount)


def _cancel_exit(desk: Desk, e: exit_store.ArmedExit) -> bool:
    """Cancel the resting order of ``e``; True when it no longer rests. One that filled
    meanwhile is recorded instead (False: nothing to replace)."""
    cid = str(e.exchange_cid)
    try:
        result = desk.broker.cancel_exit(cid, e.symbol)
    except BrokerError as exc:
        log.warning("exit %s of %s: cancel of %s failed (%s); tried again later", e.kind, e.symbol, cid, exc)
        return False
    if result is not None and result.filled > 0:
        desk.storage.write_batched(functools.partial(_exchange_fill, desk, e=e, result=result))
        return False
    if result is not None and result.status in ("open", "partially_filled"):
        return False
    exit_store.set_exchange_state(desk.storage, e.id, cid, "gone" if result is None else "canceled")
    return True


def _place_exit(desk: Desk, e: exit_store.ArmedExit, amount: float) -> None:
    """Place exit ``e`` on the exchange under a fresh client id ``tvgw-<installation>-x<exit id>-<n>``,
    claimed in the book first: a second worker, or a retry, never places it twice."""
    cid = f"{desk.client_prefix(desk.storage)}-x{e.id}-{e.placements + 1}"
    if not exit_store.begin_placement(desk.storage, e, cid, e.trigger, amount):
        return
    order = ProtectiveOrder(
        client_order_id=cid, symbol=e.symbol, side="sell" if e.entry_side == "buy" else "buy",
        amount=amount, trigger=e.trigger,
        kind="stop" if e.kind in ("stop", "trailing") else "take_profit",
    )  # fmt: skip
    try:
        result = desk.broker.place_exit(order)
    except OrderUncertainError as exc:
        # Its sender has given up waiting: the next pass looks it up (a ``placing`` one is left
        # to its sender for PENDING_GRACE_S, which may still be waiting on the exchange).
        exit_store.set_exchange_state(desk.storage, e.id, cid, "unknown")
        log.warning("exit %s of %s: %s", e.kind, e.symbol, exc)
        return
    except TemporaryError as exc:
        exit_store.set_exchange_state(desk.storage, e.id, cid, "failed")
        log.warning("exit %s of %s not placed (%s); tried again later", e.kind, e.symbol, exc)
        return
    except BrokerError as exc:
        # Refused as it stands (the price already past it: "would immediately trigger", say),
        # and asking again would be refused again: the gateway acts on it itself.
        exit_store.set_exchange_state(desk.storage, e.id, cid, "failed")
        exit_store.set_held_by(desk.storage, e.id, "gateway")
        log.warning("exit %s of %s refused by %s (%s); the gateway watches it", e.kind, e.symbol,
                    desk.broker.name, exc)  # fmt: skip
        return
    exit_store.set_exchange_state(desk.storage, e.id, cid, "open", result.exchange_order_id)
    log.info("exit %s of %s rests on %s: %s %.10g at %.10g (%s)", e.kind, e.symbol, desk.broker.name,
             order.side, amount, e.trigger, cid)  # fmt: skip


def _same(placed: float | None, wanted: float) -> bool:
    """Whether a resting exit's amount (or trigger) is what the book wants: equal but for float
    noise (both are read back as stored; amounts are rounded to the market's step first)."""
    return placed is not None and abs(placed - wanted) <= FLAT
