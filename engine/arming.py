"""Arming an entry's protective exits on what actually filled, and keeping them fitted to the
position as fills grow, shrink or reverse it.

An alert's order keeps its terms with it (:func:`terms_json`: the exit plan, the timeframe its
exits watch, the stop the risk limits count), so whoever books one of its fills, the alert's own
request, the order lifecycle seconds later or start-up recovery after a crash, arms the same
exits (:func:`on_fill`): the first fill of an entry with exits replaces the symbol's open exits
with its own, sized on the whole position; a later fill of the same entry resizes them; a fill
that closes or reverses the position cancels them; a partial close scales them to what is left.
Who then acts on them (the exchange's resting orders, or the gateway's own watcher) is decided
here and recorded with each exit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from common.timeframes import seconds
from engine.decision import PlannedOrder
from engine.exits import ExitPlan
from storage import Connection
from storage import candles as candle_store
from storage import exits as exit_store
from storage import orders as order_store
from storage.orders import FLAT

if TYPE_CHECKING:
    from engine.desk import Desk

__all__ = ["EntryTerms", "on_exit_fill", "on_fill", "terms_json", "to_break_even"]


@dataclass(frozen=True)
class EntryTerms:
    """What an alert's order keeps for whoever books its fills."""

    timeframe: str
    stop_loss: float | None
    plan: ExitPlan | None
    #: The reduce-only close that opens a flip: the position it closes is being reversed.
    flip_close: bool = False

    @classmethod
    def of(cls, order: order_store.Order) -> EntryTerms | None:
        """The terms kept with ``order`` (None for an order that kept none: an exit's)."""
        if not order.exits:
            return None
        data = json.loads(order.exits)
        plan = data.get("exits")
        entry = float(order.price or 0.0)
        return cls(
            timeframe=str(data["timeframe"]), stop_loss=data.get("stop_loss"),
            plan=None if plan is None else ExitPlan.from_dict(order.side, entry, plan),
            flip_close=bool(data.get("flip_close", False)),
        )  # fmt: skip


def terms_json(order: PlannedOrder, *, flip_close: bool = False) -> str:
    """The terms of a planned order as its row keeps them (``flip_close``: the order is a
    flip's reduce-only close, whose fill reverses rather than closes)."""
    plan = None if order.exits is None or order.exits.empty else order.exits.to_dict()
    terms = {"timeframe": order.timeframe, "stop_loss": order.stop_loss, "exits": plan}
    return json.dumps({**terms, "flip_close": True} if flip_close else terms)


def on_fill(
    desk: Desk,
    conn: Connection,
    order: order_store.Order,
    before: float,
    position: order_store.Position,
    *,
    first: bool,
) -> None:
    """After a fill of an alert's ``order`` moved the position from ``before`` to ``position``
    (``first``: its first booked fill): arm, resize, scale or cancel the symbol's exits."""
    terms = EntryTerms.of(order)
    plan = None if terms is None else terms.plan
    name, symbol = desk.broker.name, order.symbol
    closed = abs(position.amount) <= FLAT
    flipped = not closed and abs(before) > FLAT and (before > 0) != (position.amount > 0)
    grew = abs(position.amount) > abs(before) and not flipped
    if closed or flipped or (plan is not None and first):
        reversing = flipped or (closed and terms is not None and terms.flip_close)
        why = "reversed" if reversing else "closed" if closed else "replaced by a new entry"
        exit_store.cancel_exits(conn, name, symbol, f"{why} (alert {order.alert_id})")
    elif plan is not None and grew:
        # A later fill of the same entry: its exits protect the whole position it has become.
        exit_store.resize_exits(conn, name, symbol, order.alert_id, abs(position.amount))
        return
    elif not grew and abs(before) > FLAT:
        # A partial close: the exits keep protecting what is left, resized to it.
        exit_store.scale_exits(conn, name, symbol, abs(position.amount) / abs(before))
    if closed or plan is None or not first or not position.avg_price or terms is None:
        return
    holder = desk.exit_holder(symbol)
    armed_ms = _bar_open_ms(conn, symbol, terms.timeframe, desk.clock.now())
    entry = position.avg_price
    common = dict(
        broker=name, symbol=symbol, timeframe=terms.timeframe, alert_id=order.alert_id,
        entry_side="buy" if position.amount > 0 else "sell", entry_price=entry,
        entry_amount=abs(position.amount), armed_ms=armed_ms,
        held_by=holder.held_by,
    )  # fmt: skip
    if plan.stop is not None:
        exit_store.arm_exit(conn, kind="stop", trigger=plan.stop, **common)  # type: ignore[arg-type]
    if plan.trail is not None:
        first_trigger = entry - plan.trail if position.amount > 0 else entry + plan.trail
        exit_store.arm_exit(conn, kind="trailing", trigger=first_trigger, trail=plan.trail, **common)  # type: ignore[arg-type]
    for i, (price, share) in enumerate(plan.targets, start=1):
        exit_store.arm_exit(
            conn, kind=f"take_profit_{i}", trigger=price, share=share,
            break_even=plan.break_even, **common,  # type: ignore[arg-type]
        )  # fmt: skip


def on_exit_fill(
    desk: Desk, conn: Connection, e: exit_store.ArmedExit, position: order_store.Position
) -> None:
    """After exit ``e``'s order filled (confirmed, and ``e`` claimed): a stop, or any exit that
    left nothing, closes the position (its other exits are cancelled); a target may move the
    stop to break-even."""
    name = desk.broker.name
    if e.kind in ("stop", "trailing") or abs(position.amount) <= FLAT:
        exit_store.cancel_exits(conn, name, e.symbol, f"position closed by {e.kind}")
    elif e.break_even:
        to_break_even(conn, exit_store.open_exits(conn, name, e.symbol), e)


def to_break_even(conn: Connection, live: list[exit_store.ArmedExit], target: exit_store.ArmedExit) -> None:
    """After a target filled: the stop moves to the entry price, never backwards."""
    for e in live:
        if e.kind != "stop":
            continue
        entry = target.entry_price
        if entry > e.trigger if e.entry_side == "buy" else entry < e.trigger:
            exit_store.move_trigger(conn, e.id, target.entry_price)


def _bar_open_ms(conn: Connection, symbol: str, timeframe: str, now: float) -> int:
    """The bar an entry filled in: the newest stored one, else the clock's current bar. Exits
    watch only the bars after it (its range may hold prices from before the entry)."""
    newest = candle_store.recent_bars(conn, symbol, timeframe, 1)
    if newest:
        return int(newest[0][0])
    step = seconds(timeframe)
    return int(now // step * step * 1000)
