"""Send, settle, record: what happens to an alert's order once an account decided on it.

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
    order_store.create_pending_order(
        conn, alert_id=alert_id, client_order_id=client_order_id,
        broker=broker.name, symbol=decision.order.symbol, side=decision.order.side,
        order_type="market", amount=decision.order.amount, price=decision.order.price,
        exits=terms_json(decision.order),
        next_poll_at=None if broker.settles_instantly else receipt.received_at + PENDING_GRACE_S,
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
    transaction, so the order, its fill and the alert commit together.
    """
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


def settle(desk: Desk, conn: Connection, decision: Decision) -> order_store.Position | None:
    """Record what :func:`send` found: a broker's answer is booked (the position after a fill
    is returned; None without one); a lost answer leaves the order ``unknown`` for the lifecycle
    to ask about at once; a refusal closes it."""
    assert decision.order is not None and decision.client_order_id is not None
    cid = decision.client_order_id
    if decision.result is not None:
        return book(desk, conn, decision.result)
    if decision.order_status == "unknown":
        order_store.schedule_poll(conn, cid, desk.clock.now(), status="unknown", error=decision.reason)
    else:
        order_store.close_order(conn, cid, decision.order_status or "failed", decision.reason)
    return None


def _failed(
    decision: Decision, client_order_id: str, status: str, order_status: str, message: str
) -> Decision:
    log.warning("order %s %s: %s", client_order_id, order_status, message)
    return decision.with_result(
        status=status, order_status=order_status, reason=message, client_order_id=client_order_id
    )
