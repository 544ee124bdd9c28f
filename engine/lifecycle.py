"""The order lifecycle: every order followed from its intent to the exchange's last word, and
every fill booked once, as the exchange books it.

An order's states (``orders.status``):

==================  ===========================================================================
``pending``         intent recorded; being sent (or the sender died before recording the answer)
``open``            on the exchange, nothing filled yet
``partially_filled`` on the exchange, part filled (that part is booked)
``unknown``         sent, the answer was lost and the look-ups by client order id failed
``filled``          terminal: all of it filled and booked
``canceled``        terminal: the exchange canceled or expired the rest (what filled is booked)
``rejected``        terminal: the exchange refused it
``failed``          terminal: refused before it reached the exchange (rate limit, credentials)
``not_placed``      terminal: the exchange has no order under its client id (it never got there)
==================  ===========================================================================

Every order not terminal is asked about by client order id (:func:`follow`), first after
``POLL_FIRST_S`` and then backing off to ``POLL_MAX_S``, by one owner across all workers and
hosts: the holder of the ``orders`` lease (:class:`OrderKeeper`, run by
:func:`storage.leases.start_owned_job`). A ``pending`` order is left
alone for ``PENDING_GRACE_S`` (its sender may still be waiting on the exchange); one the
exchange does not know after the grace period is closed ``not_placed`` and stops counting as
exposure.

:func:`book` is the one way a fill reaches the ledger, whoever learnt of it (the alert's own
request, this lifecycle, an exit watcher, start-up recovery): the exchange's cumulative figures
are compared with what the order row says is booked, and only the increment is booked, so a
fill reported twice is booked once. The position moves by what the account received (net of a
fee taken in the base coin, rounded down to the market's step; the dust is counted as the
account's own), fees are kept per currency, valued in quote where the broker could, and said
unvalued where not. An entry's exits are armed on what filled and resized as it grows
(:mod:`engine.arming`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from engine import arming
from engine.brokers.base import OrderResult
from engine.exceptions import BrokerError
from engine.symbols import base_currency
from storage import Connection, Storage
from storage import alerts as alert_store
from storage import exits as exit_store
from storage import orders as order_store
from storage import reconciliation as book_store
from storage.orders import FLAT

if TYPE_CHECKING:
    from engine.desk import Desk

__all__ = [
    "PENDING_GRACE_S",
    "POLL_FIRST_S",
    "POLL_MAX_S",
    "OrderKeeper",
    "book",
    "follow",
    "next_poll",
    "recover",
]

log = logging.getLogger(__name__)

#: Seconds before the first look at an order the exchange has not closed; doubled per look.
POLL_FIRST_S = 0.5
#: The longest wait between two looks at one order.
POLL_MAX_S = 30.0
#: Seconds a ``pending`` order is left to its sender before the lifecycle asks about it: the
#: send's own budget (timeout, then look-ups by client id with back-off) is well under this.
PENDING_GRACE_S = 30.0


def next_poll(polls: int, now: float) -> float:
    """When to ask again about an order already asked about ``polls`` times."""
    return now + min(POLL_FIRST_S * 2.0 ** max(polls, 0), POLL_MAX_S)


# --- booking ------------------------------------------------------------------------------------
def book(desk: Desk, conn: Connection, result: OrderResult) -> order_store.Position | None:
    """Book what ``result`` (the exchange's cumulative view of one order on file) adds to what
    is booked already, inside the caller's transaction; record the order's state; arm or resize
    an entry's exits, or act on an exit's fill. Returns the position after a booked fill (None
    when nothing new filled)."""
    order = order_store.order_record(conn, result.client_order_id)
    if order is None:
        raise LookupError(f"no order {result.client_order_id!r} on file to book a fill to")
    now = desk.clock.now()
    gross = max(result.filled, order.booked)
    increment = gross - order.booked
    fees = {f.currency: f.cost for f in result.fees}
    booked_fees = dict(order.booked_fees)
    fee_value = order.fee_value
    notes = [order.fee_note] if order.fee_note else []
    position = None
    booked, booked_cost, booked_net = order.booked, order.booked_cost, order.booked_net
    status: str = result.status
    cost = result.cost if result.cost is not None else (
        result.filled * result.average if result.average else None
    )  # fmt: skip
    if increment > FLAT and cost is None:
        # A fill without a price: not booked now; the exchange is asked again.
        status = "partially_filled" if status == "filled" else status
        notes.append(f"a fill of {increment:.10g} came without a price; asked again")
        increment = 0.0
        gross = order.booked
    new_fees, fee_inc, base_fee_inc = _fee_increments(result, booked_fees, notes, order.symbol)
    if increment > FLAT or new_fees:
        assert cost is not None or increment <= FLAT
        net_total = result.net if result.net is not None else gross
        net_inc = net_total - order.booked_net
        before = desk.held(conn, order.symbol)
        quote = desk.settings.paper.quote_currency
        if increment > FLAT and net_inc > FLAT:
            assert cost is not None
            price = (cost - order.booked_cost) / increment
            terms = arming.EntryTerms.of(order)
            position = order_store.apply_fill(
                conn, broker=desk.broker.name, symbol=order.symbol, side=order.side, filled=net_inc,
                price=price, fee=fee_inc, quote_currency=quote, starting_cash=desk.broker.starting_cash(),
                stop_loss=None if terms is None else terms.stop_loss, at=now,
            )  # fmt: skip
            booked_cost = cost
        elif new_fees or net_inc < -FLAT:
            # Fees reported after their fill was booked: charged now (a base-coin fee off the position).
            sign = 1.0 if order.side == "buy" else -1.0
            order_store.charge(
                conn, broker=desk.broker.name, symbol=order.symbol, fee=fee_inc,
                position_change=sign * min(net_inc, 0.0), quote_currency=quote, at=now,
            )  # fmt: skip
        if result.net is not None and order.side == "buy" and increment > FLAT:
            dust = (increment - base_fee_inc) - max(net_inc, 0.0)
            if dust > FLAT:
                book_store.add_outside(conn, desk.broker.name, base_currency(order.symbol), dust)
        booked, booked_net = gross, net_total
        booked_fees.update(new_fees)
        fee_value = (fee_value or 0.0) + fee_inc if fee_inc or fee_value is not None else None
        if position is not None:
            _after_fill(desk, conn, order, before, position)
    closed = status not in order_store.NON_TERMINAL
    order_store.book_fill(
        conn, result.client_order_id, status=status, filled=gross, average=result.average or order.average,
        fees=fees, exchange_order_id=result.exchange_order_id, booked=booked, booked_cost=booked_cost,
        booked_net=booked_net, booked_fees=booked_fees, fee_value=fee_value,
        fee_note="; ".join(dict.fromkeys(notes)) or None,
        next_poll_at=None if closed else next_poll(order.polls, now),
    )  # fmt: skip
    if closed and booked <= FLAT:
        _nothing_filled(conn, order, f"order {status}, nothing filled")
    return position


def _fee_increments(
    result: OrderResult, booked_fees: Mapping[str, float], notes: list[str], symbol: str
) -> tuple[dict[str, float], float, float]:
    """The fees ``result`` reports beyond those booked: (new cumulative cost per currency, the
    increment's value in quote, the increment taken in the base coin). A fee the broker could
    not value is left out of the value and said in ``notes``."""
    new: dict[str, float] = {}
    value = base = 0.0
    for fee in result.fees:
        increment = fee.cost - booked_fees.get(fee.currency, 0.0)
        if increment <= 0:
            continue
        new[fee.currency] = fee.cost
        if fee.currency == base_currency(symbol):
            base += increment
        if fee.value is None:
            notes.append(fee.note or f"{fee.currency} fee not valued")
        else:
            value += fee.value * increment / fee.cost
    return new, value, base


def _after_fill(
    desk: Desk,
    conn: Connection,
    order: order_store.Order,
    before: float,
    position: order_store.Position,
) -> None:
    """What a booked fill sets off: an alert's order arms or fits its exits (and its alert, if
    still waiting, learns it executed); an exit's order spends its exit."""
    if order.reason is None:
        arming.on_fill(desk, conn, order, before, position, first=order.booked <= FLAT)
        if order.booked <= FLAT:
            why = "order filled after the answer (booked by the order lifecycle)"
            alert_store.settle_alert(
                conn, order.alert_id, status="executed", reason=why, only_if=("placed", "failed")
            )
        return
    e = exit_store.exit_for_order(conn, order.client_order_id)
    if e is not None and exit_store.claim_exit(conn, e.id, order.client_order_id, e.kind):
        arming.on_exit_fill(desk, conn, e, position)


def _nothing_filled(conn: Connection, order: order_store.Order, why: str) -> None:
    """An order ended without a fill: an exit it fired is open again; its alert, if still
    waiting, failed."""
    exit_store.end_firing(conn, order.client_order_id)
    if order.reason is None:
        alert_store.settle_alert(conn, order.alert_id, status="failed", reason=why, only_if=("placed",))


# --- following ----------------------------------------------------------------------------------
def follow(desk: Desk, order: order_store.Order, *, not_found_grace_s: float) -> str:
    """Ask the exchange once about ``order`` (not terminal) by its client order id and record
    the answer; one line for the log. Network first, then one short transaction."""
    cid, storage = order.client_order_id, desk.storage
    now = desk.clock.now()
    try:
        result = desk.broker.fetch_order(cid, order.symbol)
    except BrokerError as exc:
        order_store.schedule_poll(storage, cid, next_poll(order.polls, now))
        return f"order {cid}: cannot ask {desk.broker.name} ({exc}); asked again later"
    if result is None:
        if now - order.created_at >= not_found_grace_s and order.status in ("pending", "unknown"):
            why = f"{desk.broker.name} has no order with client id {cid}: it never reached the exchange"
            with storage.transaction() as conn:
                order_store.close_order(conn, cid, "not_placed", why)
                _nothing_filled(conn, order, why)
            return f"order {cid}: not placed; closed"
        order_store.schedule_poll(storage, cid, next_poll(order.polls, now))
        return f"order {cid}: not on {desk.broker.name} yet; asked again later"
    with storage.transaction() as conn:
        position = book(desk, conn, result)
    if position is not None or result.status not in order_store.NON_TERMINAL:
        desk.sync_soon(order.symbol)
    return f"order {cid}: {result.status}, filled {result.filled:.10g}"


def follow_due(
    desks: Mapping[str, Desk], storage: Storage, *, not_found_grace_s: float, now: float
) -> list[str]:
    """:func:`follow` every order whose next look is due, on the desk of its account (the
    paper book's orders settle in their own transaction and are never followed)."""
    lines = []
    for order in order_store.following(storage, now):
        desk = desks.get(order.broker)
        if desk is None or desk.broker.settles_instantly:
            order_store.schedule_poll(storage, order.client_order_id, now + POLL_MAX_S)
            lines.append(f"order {order.client_order_id}: account {order.broker!r} is not configured here")
            continue
        lines.append(follow(desk, order, not_found_grace_s=not_found_grace_s))
    return lines


def recover(
    storage: Storage, desks: Mapping[str, Desk], default: Desk | None, *, updated_before: float | None = None
) -> list[str]:
    """Start-up: settle every order the exchange has not closed, before any worker starts, by
    asking the exchange by client order id (never re-sending). No sender is alive on this host,
    so one the exchange does not know never reached it (on a store hosts share, a ``pending``
    order younger than ``updated_before`` may be another host's in flight: it is left alone). A
    fill booked here arms its exits like any other. ``default`` (when given) settles every
    order whatever its account."""
    lines = []
    for order in order_store.pending_orders(storage, updated_before=updated_before):
        desk = default or desks.get(order.broker)
        if desk is None:
            lines.append(f"order {order.client_order_id}: account {order.broker!r} not configured; left")
            continue
        lines.append(follow(desk, order, not_found_grace_s=0.0))
    return lines


class OrderKeeper:
    """This worker's part in following orders: :meth:`run_once` follows the orders that are due.
    Every worker has one; it runs only while its worker holds the ``orders`` lease
    (:func:`storage.leases.start_owned_job`), so one acts at a time across workers and hosts,
    and another takes over when it dies."""

    def __init__(
        self,
        storage: Storage,
        desks: Callable[[], Mapping[str, Desk]],
        *,
        not_found_grace_s: float,
    ):
        self.storage = storage
        self.desks = desks
        self.not_found_grace_s = not_found_grace_s

    def run_once(self, now: float) -> list[str]:
        """One pass: the log lines of the orders it followed."""
        return follow_due(self.desks(), self.storage, not_found_grace_s=self.not_found_grace_s, now=now)
