"""Send, settle, record: what happens to an alert's order once an account decided on it.

A flip (long to short, or back) is two orders in one step: a reduce-only close of the booked
position, recorded and sent first, then the opening order, sent only once the close filled
whole (a close that fails or fills in part stops the flip, saying so, and the lifecycle follows
the close like any order); both commit with the alert for the paper book, both are settled
together for a remote one.

The intent is recorded first (a ``pending`` row under its client order id, with the entry's
terms, in the alert's transaction), then the order is sent once, then what the broker answered
is booked (:func:`engine.lifecycle.book`). A broker that settles instantly (the paper book) does
all three inside the alert's transaction; a remote one is sent outside any transaction and
settled in one more. A lost answer is reconciled by the broker by client order id, never
re-sent; an order the exchange has not closed (open, part filled, unknown) is followed from then
on by the order lifecycle.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from engine.arming import terms_json
from engine.decision import Decision, MarketSnapshot, Receipt
from engine.exceptions import BrokerError, InvalidOrderError, OrderUncertainError
from engine.lifecycle import PENDING_GRACE_S, book
from storage import Connection
from storage import orders as order_store

if TYPE_CHECKING:
    from engine.desk import Desk

__all__ = ["place", "send", "settle"]

log = logging.getLogger(__name__)


def place(
    desk: Desk,
    conn: Connection,
    decision: Decision,
    alert_id: int,
    receipt: Receipt,
    snapshot: MarketSnapshot,
) -> Decision:
    """Record this account's order intent under a client order id naming this installation, the
    alert and the account (so each account's order is placed once, two accounts on one exchange
    never collide, and neither does a fresh database on the same account); an instant broker
    fills it here, in the alert's transaction."""
    decision = decision.with_result(alert_id=alert_id)
    if decision.order is None:
        return decision
    broker = desk.broker
    client_order_id = f"{desk.client_prefix(conn)}-{alert_id}-{broker.name}"
    next_poll_at = None if broker.settles_instantly else receipt.received_at + PENDING_GRACE_S
    close = decision.close_first
    if close is not None:  # a flip: its reduce-only close is recorded, and sent, first
        close_id = f"{client_order_id}-c"
        order_store.create_pending_order(
            conn, alert_id=alert_id, client_order_id=close_id, broker=broker.name, symbol=close.symbol,
            side=close.side, order_type="market", amount=close.amount, price=close.price,
            exits=terms_json(close, flip_close=True), next_poll_at=next_poll_at,
        )  # fmt: skip
        decision = decision.with_result(close_client_order_id=close_id)
    order = decision.order
    assert order is not None
    order_store.create_pending_order(
        conn, alert_id=alert_id, client_order_id=client_order_id,
        broker=broker.name, symbol=order.symbol, side=order.side,
        order_type="market", amount=order.amount, price=order.price,
        exits=terms_json(order), next_poll_at=next_poll_at,
    )  # fmt: skip
    desk.note_equity(conn, snapshot.equity)
    decision = decision.with_result(client_order_id=client_order_id)
    if broker.settles_instantly:
        decision = send(desk, decision, client_order_id)
        settle(desk, conn, decision)
    return decision


def send(desk: Desk, decision: Decision, client_order_id: str) -> Decision:
    """Send the planned order once (no storage here) and return the decision with its fate:
    ``executed`` when something filled, ``placed`` when the exchange holds it with nothing
    filled yet (the lifecycle follows it), else ``failed`` or ``rejected``.

    For a remote broker this runs outside any transaction (it waits on the network); a
    broker that ``settles_instantly`` (the paper book) runs it inside the decision's
    transaction, so the order, its fill and the alert commit together. A flip's close goes
    first; unless it filled whole, the opening order is not sent.
    """
    if decision.close_first is not None and decision.close_result is None:
        decision = _send_close(desk, decision)
        if decision.close_result is None or decision.close_result.status != "filled":
            return decision  # the flip stops after its close: the opening order is not sent
    assert decision.order is not None
    request = decision.order.request(client_order_id)
    try:
        result = desk.broker.execute(request)
    except InvalidOrderError as exc:
        return _failed(decision, client_order_id, "rejected", "rejected", str(exc))
    except OrderUncertainError as exc:
        why = f"{exc}; the gateway keeps asking {desk.broker.name} about it by client order id"
        return _failed(decision, client_order_id, "failed", "unknown", why)
    except BrokerError as exc:
        return _failed(decision, client_order_id, "failed", "failed", str(exc))
    if result.filled > 0:
        return decision.with_result(
            status="executed", result=result, order_status=result.status, client_order_id=client_order_id
        )
    if result.status in order_store.NON_TERMINAL:
        reason = (
            f"order {result.status} on {desk.broker.name}, nothing filled yet: the gateway follows it until "
            "the exchange is done with it, and books and protects what fills"
        )
        return decision.with_result(
            status="placed", result=result, order_status=result.status, reason=reason,
            client_order_id=client_order_id,
        )  # fmt: skip
    return decision.with_result(
        status="failed", result=result, order_status=result.status,
        reason=f"order {result.status}, nothing filled", client_order_id=client_order_id,
    )  # fmt: skip


def _send_close(desk: Desk, decision: Decision) -> Decision:
    """The reduce-only close that opens a flip. Unless it filled whole, the decision stops
    here, saying why; its opening order is then recorded as not sent (``canceled``)."""
    close, close_id = decision.close_first, decision.close_client_order_id
    assert close is not None and close_id is not None
    try:
        result = desk.broker.execute(close.request(close_id))
    except BrokerError as exc:
        state = "unknown" if isinstance(exc, OrderUncertainError) else "failed"
        log.warning("flip close %s %s: %s", close_id, state, exc)
        return decision.with_result(
            status="failed", order_status="canceled",
            reason=f"flip halted: its reduce-only close {close_id} {state} ({exc}); "
            "the opening order was not sent",
            details={**decision.details, "close_error": {"status": state, "error": str(exc)}},
        )  # fmt: skip
    decision = decision.with_result(close_result=result)
    if result.status == "filled":
        return decision
    return decision.with_result(
        status="executed" if result.filled > 0 else "failed", order_status="canceled",
        reason=f"flip halted: its reduce-only close {close_id} is {result.status} ({result.filled:g} of "
        f"{close.amount:g}); the opening order was not sent",
    )  # fmt: skip


def settle(desk: Desk, conn: Connection, decision: Decision) -> order_store.Position | None:
    """Record what :func:`send` found, a flip's close first: a broker's answer is booked (the
    position after the last fill is returned; None without one); a lost answer leaves the order
    ``unknown`` for the lifecycle to ask about at once; a refusal closes it."""
    assert decision.order is not None and decision.client_order_id is not None
    closed = _settle_close(desk, conn, decision)
    if decision.result is not None:
        return book(desk, conn, decision.result)
    _unanswered(desk, conn, decision.client_order_id, decision.order_status or "failed", decision.reason)
    return closed


def _settle_close(desk: Desk, conn: Connection, decision: Decision) -> order_store.Position | None:
    """A flip's close, recorded before its opening order: the position after it (None when
    it did not fill, or the decision is no flip)."""
    close_id = decision.close_client_order_id
    if decision.close_first is None or close_id is None:
        return None
    if decision.close_result is not None:
        return book(desk, conn, decision.close_result)
    error = decision.details.get("close_error") or {}
    _unanswered(desk, conn, close_id, error.get("status", "failed"), error.get("error"))
    return None


def _unanswered(desk: Desk, conn: Connection, cid: str, status: str, why: str | None) -> None:
    """An order the broker gave no result for: ``unknown`` is asked about again at once by the
    lifecycle; anything else is closed with its reason."""
    if status == "unknown":
        order_store.schedule_poll(conn, cid, desk.clock.now(), status="unknown", error=why)
    else:
        order_store.close_order(conn, cid, status, why)


def _failed(
    decision: Decision, client_order_id: str, status: str, order_status: str, message: str
) -> Decision:
    log.warning("order %s %s: %s", client_order_id, order_status, message)
    return decision.with_result(
        status=status, order_status=order_status, reason=message, client_order_id=client_order_id
    )
