"""The reconciler: the gateway's books against the exchange, per account, said out loud when
they disagree.

For every market an exchange account has a booked position in, a pass compares:

* spot: the exchange's balance of the coin with what the book expects it to hold, the booked
  position plus the account's own coins (``holdings.outside``: held before the gateway traded
  the coin, and the dust fee rounding leaves; first seen when the reconciler first looks);
* perpetuals: the exchange's signed position with the booked one;
* open orders: an order open on the exchange under this installation's client ids that the
  book does not follow (``stray``).

A difference beyond the market's amount step, or a stray order, that is still there on the next
pass (``CONFIRM_PASSES``: an order being booked, or an exit the watcher has not recorded yet, is
not drift) marks the market ``off``: a warning in the log, a notification on the operator's
channels (:mod:`webhook.notify`), a ``/healthz`` problem and a flag on the dashboard.
Markets with orders in flight are compared on a later pass. ``tvgw reconcile`` shows every
difference now and can adopt the exchange's view (:func:`adopt`).

One owner at a time: the holder of the ``reconcile`` lease (:class:`Reconciler`, run by
:func:`storage.leases.start_owned_job`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from engine.exceptions import BrokerError
from engine.symbols import base_currency, is_contract
from storage import Storage
from storage import exits as exit_store
from storage import orders as order_store
from storage import reconciliation as book_store
from storage.orders import FLAT
from storage.reconciliation import BookCheck

if TYPE_CHECKING:
    from engine.desk import Desk

__all__ = ["CONFIRM_PASSES", "Reconciler", "adopt", "reconcile"]

log = logging.getLogger(__name__)

#: Consecutive passes a difference must last before the market is ``off``.
CONFIRM_PASSES = 2


def reconcile(desk: Desk, *, now: float, confirm: int = CONFIRM_PASSES) -> list[BookCheck]:
    """One pass over ``desk``'s account: each booked market compared with the exchange and the
    comparison recorded. ``confirm`` is how many passes in a row a difference must show before
    it is ``off`` (1: at once, as ``tvgw reconcile`` shows it). Raises :class:`BrokerError` when
    the exchange cannot be read (nothing is recorded then)."""
    name, storage = desk.broker.name, desk.storage
    before = _book_state(desk)
    positions = before[0]
    contracts = [s for s in positions if is_contract(s)]
    balances = desk.broker.balances()
    held = desk.broker.contract_positions(contracts) if contracts else {}
    if _book_state(desk) == before:  # nothing was booked while the exchange was read
        _first_look(desk, balances, positions)
    previous = {c.symbol: c for c in book_store.book_checks(storage, name)}
    checks = []
    for symbol in sorted(positions):
        check = _compare(desk, symbol, positions, balances, held, previous.get(symbol), now, confirm)
        book_store.record_check(storage, check)
        if check.status == "off" and (previous.get(symbol) is None or previous[symbol].status != "off"):
            log.warning("books of %s on %s disagree with the exchange: %s", symbol, name, check.detail)
        checks.append(check)
    return checks


def _book_state(desk: Desk) -> tuple[dict[str, float], list[tuple[str, str, float]]]:
    """The account's positions and its orders in flight (what the books say), to tell whether
    anything was booked while the exchange was being read."""
    name = desk.broker.name
    positions = {p.symbol: p.amount for p in order_store.list_positions(desk.storage, name, open_only=False)}
    orders = [
        (o.client_order_id, o.status, o.booked) for o in order_store.unsettled_orders(desk.storage, name)
    ]
    return positions, orders


def _first_look(desk: Desk, balances: Mapping[str, float], positions: Mapping[str, float]) -> None:
    """Coins the reconciler sees for the first time are the account's own, less what the book
    holds of them (when nothing is in flight for them, and nothing was booked while the balances
    were read: else it looks again next pass)."""
    name, storage = desk.broker.name, desk.storage
    booked: dict[str, float] = {}
    for symbol, amount in positions.items():
        if not is_contract(symbol):
            booked[base_currency(symbol)] = booked.get(base_currency(symbol), 0.0) + amount
    in_flight = {base_currency(o.symbol) for o in order_store.unsettled_orders(storage, name)}
    for coin in set(balances) | set(booked):
        if coin in in_flight or book_store.outside(storage, name, coin) is not None:
            continue
        own = balances.get(coin, 0.0) - booked.get(coin, 0.0)
        book_store.set_outside(storage, name, coin, own)
        log.info("%s: %.10g %s on the exchange besides the gateway's positions: counted as the account's own",
                 name, own, coin)  # fmt: skip


def _compare(
    desk: Desk,
    symbol: str,
    positions: Mapping[str, float],
    balances: Mapping[str, float],
    held: Mapping[str, float],
    previous: BookCheck | None,
    now: float,
    confirm: int,
) -> BookCheck:
    name, storage = desk.broker.name, desk.storage
    limits, _ = desk.limits(symbol)
    step = (limits.amount_step if limits is not None else None) or 1e-8
    if is_contract(symbol):
        kind, booked, outside = "perpetual", positions[symbol], 0.0
        exchange = held.get(symbol, 0.0)
    else:
        coin = base_currency(symbol)
        kind, outside = "spot", book_store.outside(storage, name, coin) or 0.0
        booked = sum(a for s, a in positions.items() if not is_contract(s) and base_currency(s) == coin)
        exchange = balances.get(coin, 0.0)
    difference = exchange - (outside + booked)
    stray = _stray_orders(desk, symbol)
    in_flight = bool(order_store.unsettled_orders(storage, name, symbol)) or _exit_in_flight(desk, symbol)
    off = (abs(difference) > step * (1 + 1e-9) or stray > 0) and not in_flight
    misses = (previous.misses if previous is not None else 0) + 1 if off else 0
    status = "off" if misses >= confirm else "checking" if off or in_flight else "ok"
    detail = _detail(kind, symbol, booked, outside, exchange, difference, step, stray, in_flight)
    off_since = None
    if off:
        off_since = previous.off_since if previous is not None and previous.off_since is not None else now
    return BookCheck(
        broker=name, symbol=symbol, kind=kind, booked=booked, exchange=exchange, outside=outside,
        difference=difference, step=step, stray_orders=stray, status=status, misses=misses, detail=detail,
        checked_at=now, off_since=off_since,
    )  # fmt: skip


def _stray_orders(desk: Desk, symbol: str) -> int:
    """Orders open on the exchange under this installation's ids that the book does not follow
    (a spot market's; a perpetual's resting exits are followed by the exit watcher)."""
    if is_contract(symbol):
        return 0
    try:
        open_ids = desk.broker.open_client_ids(symbol)
    except BrokerError as exc:
        log.warning("reconcile %s: cannot list its open orders (%s)", symbol, exc)
        return 0
    ours = {cid for cid in open_ids if cid.startswith(desk.client_prefix(desk.storage) + "-")}
    followed = {
        o.client_order_id for o in order_store.unsettled_orders(desk.storage, desk.broker.name, symbol)
    }
    followed |= {e.exchange_cid for e in exit_store.exchange_exits(desk.storage, desk.broker.name, symbol)
                 if e.exchange_cid}  # fmt: skip
    return len(ours - followed)


def _exit_in_flight(desk: Desk, symbol: str) -> bool:
    return any(e.firing_cid for e in exit_store.open_exits(desk.storage, desk.broker.name, symbol))


def _detail(
    kind: str, symbol: str, booked: float, outside: float, exchange: float, difference: float, step: float,
    stray: int, in_flight: bool,
) -> str:  # fmt: skip
    if in_flight:
        return f"{symbol}: orders in flight; compared again on the next pass"
    what = "holds" if kind == "spot" else "has a position of"
    expected = f"{booked:.10g} booked" + (f" + {outside:.10g} the account's own" if outside else "")
    text = (
        f"{symbol}: the exchange {what} {exchange:.10g}, the book expects {expected} "
        f"(difference {difference:+.10g}, step {step:g})"
    )
    if stray:
        text += (
            f"; {stray} open order(s) on the exchange under this gateway's ids that the book does not follow"
        )
    return text


def adopt(desk: Desk, check: BookCheck) -> str:
    """Make the book say what the exchange holds for ``check``'s market (the operator chose the
    exchange's view): the booked position becomes the exchange's (spot: its balance less the
    account's own coins; a negative remainder lowers the account's own instead), and the
    market's exits follow the new size. One line saying what changed."""
    name, storage = desk.broker.name, desk.storage
    symbol = check.symbol
    wanted = check.exchange - check.outside if check.kind == "spot" else check.exchange
    with storage.transaction() as conn:
        before = order_store.position_amount(conn, name, symbol)
        if check.kind == "spot" and wanted < 0:
            book_store.set_outside(conn, name, base_currency(symbol), check.exchange)
            wanted = 0.0
        known = desk.prices.last_known(symbol)
        price = None if known is None else known.price
        order_store.adopt_position(conn, broker=name, symbol=symbol, amount=wanted, price=price)
        if abs(wanted) <= FLAT:
            exit_store.cancel_exits(conn, name, symbol, "book adopted the exchange's view: flat")
        elif before * wanted > 0:
            exit_store.scale_exits(conn, name, symbol, abs(wanted) / abs(before))
        else:
            exit_store.cancel_exits(conn, name, symbol, "book adopted the exchange's view")
        book_store.record_check(conn, _settled(check, wanted))
    desk.sync_soon(symbol)
    return f"{name} {symbol}: booked {before:.10g} -> {wanted:.10g} (the exchange's view)"


def _settled(check: BookCheck, booked: float) -> BookCheck:
    return replace(check, booked=booked, difference=0.0, status="ok", misses=0, off_since=None,
                   detail=f"{check.symbol}: adopted the exchange's view")  # fmt: skip


class Reconciler:
    """This worker's part in reconciling: :meth:`run_once` reconciles every exchange account. It
    runs only while its worker holds the ``reconcile`` lease (:func:`storage.leases.start_owned_job`):
    one at a time across workers and hosts."""

    def __init__(self, storage: Storage, desks: Callable[[], Mapping[str, Desk]]):
        self.storage = storage
        self.desks = desks

    def run_once(self, now: float) -> list[str]:
        """One pass over every exchange account; one line per account."""
        lines = []
        for desk in self.desks().values():
            if desk.broker.settles_instantly:
                continue  # the paper book is its own account
            try:
                checks = reconcile(desk, now=now)
            except BrokerError as exc:
                lines.append(f"{desk.broker.name}: cannot read the account ({exc}); reconciled next pass")
                continue
            off = [c for c in checks if c.status == "off"]
            lines.append(f"{desk.broker.name}: {len(checks)} market(s) compared, {len(off)} off")
        return lines
