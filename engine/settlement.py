"""Send, settle, record: what happens to an order once an account decided on it.

A flip (long to short, or back) is two orders in one step: a reduce-only close of the booked
position, recorded and sent first, then the opening order, sent only once the close filled
whole (a close that fails or fills in part stops the flip, saying so); both commit with the
alert for the paper book, both are settled together for a remote one.

The intent is recorded first (a ``pending`` row under its client order id, in the alert's
transaction), then the order is sent once, then what the broker answered is recorded: the order
row and, for a fill, the ledger (position and cash). A broker that settles instantly (the paper
book) does all three inside the alert's transaction; a remote one is sent outside any
transaction and settled in one more. A lost answer is reconciled by the broker by client order
id, never re-sent.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from engine.arming import rearm
from engine.brokers.base import OrderResult
from engine.decision import Decision, MarketSnapshot, Receipt
from engine.exceptions import BrokerError, InvalidOrderError, OrderUncertainError
from storage import Connection
from storage import orders as order_store

if TYPE_CHECKING:
    from collections.abc import Mapping

    from engine.desk import Desk
    from storage import Storage

__all__ = ["place", "record_result", "recover_pending", "send", "settle"]

log = logging.getLogger(__name__)


def place(
    desk: Desk,
    conn: Connection,
    decision: Decision,
    alert_id: int,
    receipt: Receipt,
    snapshot: MarketSnapshot,
) -> Decision:
    """Record this account's order intent under a client order id naming the alert and the
    account (so each account's order is placed once, and two accounts on one exchange never
    collide); an instant broker fills it here, in the alert's transaction."""
    decision = decision.with_result(alert_id=alert_id)
    if decision.order is None:
        return decision
    broker = desk.broker
    client_order_id = f"tvgw-{alert_id}-{broker.name}-{int(receipt.received_at) % 100000}"
    close = decision.close_first
    if close is not None:  # a flip: its reduce-only close is recorded, and sent, first
        close_id = f"{client_order_id}-c"
        order_store.create_pending_order(
            conn, alert_id=alert_id, client_order_id=close_id, broker=broker.name, symbol=close.symbol,
            side=close.side, order_type="market", amount=close.amount, price=close.price,
        )  # fmt: skip
        decision = decision.with_result(close_client_order_id=close_id)
    order = decision.order
    assert order is not None
    order_store.create_pending_order(
        conn, alert_id=alert_id, client_order_id=client_order_id, broker=broker.name, symbol=order.symbol,
        side=order.side, order_type="market", amount=order.amount, price=order.price,
    )  # fmt: skip
    desk.note_equity(conn, snapshot.equity)
    decision = decision.with_result(client_order_id=client_order_id)
    if broker.settles_instantly:
        decision = send(desk, decision, client_order_id)
        position = settle(desk, conn, decision)
        if position is not None:
            rearm(desk, conn, decision, alert_id, position)
    return decision


def send(desk: Desk, decision: Decision, client_order_id: str) -> Decision:
    """Send the planned order once (no storage here) and return the decision with its fate.

    For a remote broker this runs outside any transaction (it waits on the network); a
    broker that ``settles_instantly`` (the paper book) runs it inside the decision's
    transaction, so the order, its fill and the alert commit together.
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
        return _failed(decision, client_order_id, "failed", "unknown", str(exc))
    except BrokerError as exc:
        return _failed(decision, client_order_id, "failed", "failed", str(exc))
    filled = result.filled > 0
    return decision.with_result(
        status="executed" if filled else "failed",
        result=result,
        order_status=result.status,
        reason=decision.reason if filled else f"order {result.status}, nothing filled",
        client_order_id=client_order_id,
    )


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
    """Record what :func:`send` found: the order rows (a flip's close first) and, for a fill,
    the ledger. Returns the position after the last fill (None without one)."""
    assert decision.order is not None and decision.client_order_id is not None
    closed = _settle_close(desk, conn, decision)
    if decision.result is not None:
        return record_result(
            desk, conn, decision.order.symbol, decision.order.side, decision.result, decision.order.stop_loss
        )
    order_store.update_order(
        conn,
        decision.client_order_id,
        status=decision.order_status or "failed",
        error=decision.reason,
    )
    return closed


def _settle_close(desk: Desk, conn: Connection, decision: Decision) -> order_store.Position | None:
    """A flip's close, recorded before its opening order: the position after it (None when
    it did not fill, or the decision is no flip)."""
    close, close_id = decision.close_first, decision.close_client_order_id
    if close is None or close_id is None:
        return None
    if decision.close_result is not None:
        return record_result(desk, conn, close.symbol, close.side, decision.close_result)
    error = decision.details.get("close_error") or {}
    order_store.update_order(conn, close_id, status=error.get("status", "failed"), error=error.get("error"))
    return None


def record_result(
    desk: Desk,
    conn: Connection,
    symbol: str,
    side: str,
    result: OrderResult,
    stop_loss: float | None = None,
) -> order_store.Position | None:
    """Apply a broker result to the order row and, for a fill, to the ledger (the position
    after it is returned; None when nothing filled)."""
    order_store.update_order(
        conn, result.client_order_id, status=result.status, filled=result.filled,
        average=result.average, fee=result.fee, fee_currency=result.fee_currency,
        exchange_order_id=result.exchange_order_id,
    )  # fmt: skip
    if result.filled > 0 and result.average:
        return order_store.apply_fill(
            conn, broker=desk.broker.name, symbol=symbol, side=side, filled=result.filled,
            price=result.average, fee=_fee_in_quote(desk, result),
            quote_currency=desk.settings.paper.quote_currency, starting_cash=desk.broker.starting_cash(),
            stop_loss=stop_loss, at=desk.clock.now(),
        )  # fmt: skip
    return None


def _fee_in_quote(desk: Desk, result: OrderResult) -> float:
    if result.fee_currency in (None, desk.settings.paper.quote_currency):
        return result.fee
    return result.fee * (result.average or 0.0)  # fee charged in base: convert at the fill price


def _failed(
    decision: Decision, client_order_id: str, status: str, order_status: str, message: str
) -> Decision:
    log.warning("order %s %s: %s", client_order_id, order_status, message)
    return decision.with_result(
        status=status, order_status=order_status, reason=message, client_order_id=client_order_id
    )


def recover_pending(
    storage: Storage, desks: Mapping[str, Desk], default: Desk | None, *, updated_before: float | None = None
) -> list[str]:
    """Settle orders left ``pending`` by a crash: ask the broker by client order id, never
    re-send. Returns one line per order for the log. Called at start-up, before workers.
    ``desks`` are the accounts by name; ``default`` (when given) settles every order; with
    ``updated_before``, only orders untouched since then (a shared store's younger ones may be
    in flight on another host)."""
    lines = []
    for row in order_store.pending_orders(storage, updated_before=updated_before):
        cid = row["client_order_id"]
        desk = default or desks.get(row["broker"])
        if desk is None:
            lines.append(f"order {cid}: account {row['broker']!r} is not configured; left pending")
            continue
        try:
            result = desk.broker.fetch_order(cid, row["symbol"])
        except BrokerError as exc:
            lines.append(f"order {cid}: still unknown ({exc}); left pending")
            continue
        with storage.transaction() as conn:
            if result is None:
                order_store.update_order(
                    conn, cid, status="canceled", error="never reached the broker (crash before send)"
                )
                lines.append(f"order {cid}: never placed; marked canceled")
            else:
                record_result(desk, conn, row["symbol"], row["side"], result)
                lines.append(f"order {cid}: {result.status}, filled {result.filled}")
    return lines
