"""Arming an entry's protective exits on its fill, and keeping them fitted to the position.

An entry that planned exits (:class:`~engine.exits.ExitPlan`) arms them when it fills, sized on
the position it leaves: a stop, a trailing stop, take-profit levels. A fill that closes or
reverses the position cancels the old ones; a partial close scales them to what is left. Who
then acts on them (the exchange's resting orders, or the gateway's own watcher) is decided here
and recorded with each exit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.timeframes import seconds
from engine.decide import EPSILON
from engine.decision import Decision
from storage import Connection
from storage import exits as exit_store
from storage import orders as order_store

if TYPE_CHECKING:
    from engine.desk import Desk

__all__ = ["rearm"]


def rearm(
    desk: Desk, conn: Connection, decision: Decision, alert_id: int, position: order_store.Position
) -> None:
    """After an alert's own fill: an entry with exits replaces the symbol's open exits with
    its own, sized on the whole position; a fill that closed or reversed the position
    cancels them (a partial close keeps them: they act on what is left)."""
    order = decision.order
    assert order is not None
    name = desk.broker.name
    before = decision.current_position or 0.0
    closed = abs(position.amount) <= EPSILON
    flipped = not closed and abs(before) > EPSILON and (before > 0) != (position.amount > 0)
    plan = order.exits
    if closed or flipped or (plan is not None and not plan.empty):
        why = "closed" if closed else "reversed" if flipped else "replaced by a new entry"
        exit_store.cancel_exits(conn, name, order.symbol, f"{why} (alert {alert_id})")
    elif order.reduce_only and abs(before) > EPSILON:
        # A partial close: the exits keep protecting what is left, resized to it.
        exit_store.scale_exits(conn, name, order.symbol, abs(position.amount) / abs(before))
    if closed or plan is None or plan.empty or not position.avg_price:
        return
    holder = desk.exit_holder(order.symbol)
    armed_ms = _bar_open_ms(conn, order.symbol, order.timeframe, desk.clock.now())
    entry = position.avg_price
    common = dict(
        broker=name, symbol=order.symbol, timeframe=order.timeframe, alert_id=alert_id,
        entry_side="buy" if position.amount > 0 else "sell", entry_price=entry,
        entry_amount=abs(position.amount), armed_ms=armed_ms,
        held_by="exchange" if holder.on_exchange else "gateway",
    )  # fmt: skip
    if plan.stop is not None:
        exit_store.arm_exit(conn, kind="stop", trigger=plan.stop, **common)  # type: ignore[arg-type]
    if plan.trail is not None:
        first = entry - plan.trail if position.amount > 0 else entry + plan.trail
        exit_store.arm_exit(conn, kind="trailing", trigger=first, trail=plan.trail, **common)  # type: ignore[arg-type]
    for i, (price, share) in enumerate(plan.targets, start=1):
        exit_store.arm_exit(
            conn, kind=f"take_profit_{i}", trigger=price, share=share,
            break_even=plan.break_even, **common,  # type: ignore[arg-type]
        )  # fmt: skip


def _bar_open_ms(conn: Connection, symbol: str, timeframe: str, now: float) -> int:
    """The bar an entry filled in: the newest stored one, else the clock's current bar. Exits
    watch only the bars after it (its range may hold prices from before the entry)."""
    newest = exit_store.recent_bars(conn, symbol, timeframe, 1)
    if newest:
        return int(newest[0][0])
    step = seconds(timeframe)
    return int(now // step * step * 1000)
