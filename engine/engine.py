"""The trading engine: one door, :meth:`TradingEngine.process_signal`, from a validated alert
and the ML layer's signal to a recorded :class:`~engine.decision.Decision`, routed to the
accounts the alert's strategy trades on.

The act, in order (the webhook, the backtest and the API's on-demand actions all call it):

1. Outside any transaction: the idempotency key (from the canonical alert and the market the
   broker resolves), the market price the engine trusts and the check of the alert's own price
   against it (a :class:`~engine.exceptions.PriceCheckError` refuses the alert before anything
   is decided), and each account's equity, market limits and exit holder
   (:meth:`engine.desk.Desk.view`). These may need the network.
2. One write transaction (``BEGIN IMMEDIATE``, group-committed with other threads' alerts):
   each account's book is read (:meth:`engine.desk.Desk.book`); what the strategy's intended
   position says of the alert on it (superseded by a later alert of its chart, a gap to repair
   or one too large to repair, a flip as a reduce-only close then the opening order) comes from
   the pure rules of :mod:`engine.intent`; it is decided on by the pure
   :func:`engine.decide.decide`; the idempotency key is claimed (a UNIQUE key: a duplicate acts
   once across every worker); the alert, the ML layer's rows and the order intent are recorded
   (:mod:`engine.settlement`). A broker that settles instantly (the paper book) fills inside
   this same transaction, so order, fill and alert commit together.
3. For a remote broker: send once, outside any transaction, then record the fill and the
   alert's outcome in one more transaction. A timeout is reconciled by client order id.

A strategy may route its alerts to several accounts (``[accounts.<name>]``): steps 1 and 2
check, claim and record the alert once, and each account decides on its own book inside that
same transaction; in step 3 the remote accounts' orders are sent side by side, each under a
client order id naming its account, and settled together. Without accounts there is one, the
default, exactly as above.

The clock and the market prices are collaborators: the real clock and the candle store or
broker ticker live, a simulated clock and replayed candles in a backtest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from common.timeframes import from_tradingview
from engine import exit_sync, exit_watch, intent, lifecycle, settlement
from engine.alert import Alert
from engine.brokers.base import Broker
from engine.decide import NO_PRICE_HINT, decide, fit_to_market, pure_exit
from engine.decision import Clock, Decision, Receipt, SignalPort, SystemClock, combine
from engine.desk import AccountView, Desk
from engine.exceptions import AlertRefusedError, PriceCheckError
from engine.exits import Bar
from engine.market import PriceSource, ReferencePrice, check_alert_price
from engine.settings import AccountSettings, EngineSettings, StrategySettings
from engine.symbols import is_contract
from storage import Connection, Storage
from storage import alerts as alert_store
from storage import marks as mark_store
from storage import orders as order_store
from storage import state as state_store
from storage.feeds import FeedMark

__all__ = ["NO_PRICE_HINT", "TradingEngine", "pure_exit"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class TradingEngine:
    """Decides and executes; knows nothing about HTTP and never which broker it has.

    The engine trades the default account (``broker``, recording under ``broker.name``, by
    ``account``'s terms when given, else the strategy's). Given ``accounts`` (name -> that
    account's broker, settings in ``settings.accounts``), it also routes: each alert goes to the
    accounts its strategy names (the default account when it names none), each decided by a
    :class:`~engine.desk.Desk` of its own (that account's broker, risk limits and sizing).
    Without ``accounts`` (the backtest) every alert is decided on ``broker`` alone."""

    def __init__(
        self,
        settings: EngineSettings,
        storage: Storage,
        broker: Broker,
        *,
        clock: Clock | None = None,
        prices: PriceSource | None = None,
        accounts: Mapping[str, Broker] | None = None,
        account: AccountSettings | None = None,
    ):
        self.settings = settings
        self.storage = storage
        self.clock: Clock = clock or SystemClock()
        #: The default account's desk.
        self.desk = Desk(settings, storage, broker, clock=self.clock, prices=prices, account=account)
        self._desks: dict[str, Desk] | None = None
        if accounts is not None:
            self._desks = {broker.name: self.desk}
            for name, account_broker in accounts.items():
                self._desks[name] = Desk(
                    settings, storage, account_broker, clock=self.clock, account=settings.accounts[name]
                )
        self._pool: ThreadPoolExecutor | None = None
        if self._desks is not None and len(self._desks) > 1:
            # Threads start on demand; the cap leaves one per account for each of many alerts
            # at once (gunicorn's 4 threads per worker, and the exit watcher), so one alert's
            # slow exchange never queues another alert's order behind it.
            workers = 8 * len(self._desks)
            self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tvgw-account")

    @property
    def broker(self) -> Broker:
        """The default account's broker."""
        return self.desk.broker

    def desks(self) -> list[Desk]:
        """The desk of every account: the default one first, then the named accounts'."""
        return [self.desk] if self._desks is None else list(self._desks.values())

    # --- the one door ---------------------------------------------------------------------------
    def process_signal(self, alert: Alert, signal: SignalPort | None, *, receipt: Receipt) -> Decision:
        """The whole act for one validated alert (steps in the module docstring), and the
        recorded decision. ``alert.strategy_id`` names the strategy it acts for (the webhook set
        it to the one whose passphrase it carried). ``signal`` is the ML layer's signal, or None
        without one. Raises :class:`PriceCheckError` when the alert's price cannot be trusted;
        the caller records that refusal.

        The alert is checked and recorded once (key, price check, alert row, ML rows); then each
        account the strategy routes to decides on its own book and sends its own order, remote
        accounts side by side, so one account's failure or timeout never holds up another. The
        returned decision is :func:`~engine.decision.combine` of theirs."""
        strategy = self.settings.strategies[alert.strategy_id or self.settings.default_strategy]
        desks = self._route(strategy)
        lead = desks[0]
        symbol = lead.resolve(alert)
        self._check_leverage(lead, alert, strategy, symbol)
        # Keyed on the market the broker resolves, so every spelling of one ticker is one alert;
        # an unresolvable ticker (rejected, no order) is keyed on its own spelling.
        received = datetime.fromtimestamp(receipt.received_at, UTC)
        key = alert.idempotency_key(received, symbol or alert.ticker)
        reference = self._reference(lead, alert, strategy, key, symbol)
        # The lead account's market was resolved above: its view takes it rather than resolving again.
        resolved = {id(lead): symbol}
        views = self._each(
            desks, lambda desk: desk.view(alert, strategy, reference, desk is lead, resolved.get(id(desk)))
        )
        fields = alert.record_fields()
        seen = _alert_bar(alert)

        def act(conn: Connection) -> list[Decision]:
            chart = intent.chart_marks(conn, alert, strategy, symbol)
            decided = [
                _decide_on_account(desk, conn, alert, view, signal, seen, chart)
                for desk, view in zip(desks, views, strict=True)
            ]
            fields["symbol"] = decided[0].symbol
            return self._record(conn, alert, key, fields, desks, decided, receipt, views)

        decided = self.storage.write_batched(act)
        sending = [
            i for i, (desk, d) in enumerate(zip(desks, decided, strict=True))
            if d.duplicate_of is None and d.order is not None and not desk.broker.settles_instantly
        ]  # fmt: skip
        if sending:
            by_desk = {id(desks[i]): decided[i] for i in sending}

            def send(desk: Desk) -> Decision:
                decision = by_desk[id(desk)]
                assert decision.client_order_id is not None
                return settlement.send(desk, decision, decision.client_order_id)

            sent = self._each([desks[i] for i in sending], send)
            for i, decision in zip(sending, sent, strict=True):
                decided[i] = decision
            with self.storage.transaction() as conn:
                for i in sending:
                    settlement.settle(desks[i], conn, decided[i])
                self._finish(conn, combine(decided), receipt)
            for i in sending:
                placed_on = decided[i].symbol
                if placed_on is not None:
                    desks[i].sync_soon(placed_on)
        return combine(decided)

    def _route(self, strategy: StrategySettings) -> list[Desk]:
        """The desks of the accounts ``strategy`` routes to, in its order (the default desk
        alone when the engine was built without accounts, or the strategy names none)."""
        if self._desks is None or not strategy.accounts:
            return [self.desk]
        return [self._desks[name] for name in strategy.accounts]

    def _each(self, desks: list[Desk], work: Callable[[Desk], _T]) -> list[_T]:
        """``work`` for every desk, in order. Desks on a remote broker run side by side on this
        engine's pool when there are several: each waits on its own exchange, up to its own
        timeout, never on another's. Local desks (the paper book) run in the caller's thread."""
        remote = [d for d in desks if not d.broker.settles_instantly]
        if len(desks) == 1 or not remote or self._pool is None:
            return [work(d) for d in desks]
        futures = {id(d): self._pool.submit(work, d) for d in remote}
        local = {id(d): work(d) for d in desks if d.broker.settles_instantly}
        return [futures[id(d)].result() if id(d) in futures else local[id(d)] for d in desks]

    def _check_leverage(
        self, lead: Desk, alert: Alert, strategy: StrategySettings, symbol: str | None
    ) -> None:
        """Refuse (422) an alert's ``leverage`` or ``margin_mode`` the gateway cannot honour:
        beyond the strategy's ``max_leverage`` (else the lead desk's own risk limit, an
        account's ``[accounts.<name>.risk]`` over ``[risk]``), or on a spot market (margin is a
        perpetual's)."""
        if alert.leverage is None and alert.margin_mode is None:
            return
        if symbol is not None and not is_contract(symbol):
            field = "leverage" if alert.leverage is not None else "margin_mode"
            raise AlertRefusedError(
                "leverage_on_spot", field,
                f"{field} applies to perpetuals: {symbol} is a spot market (trade {alert.ticker}.P "
                "for the perpetual, or leave the field out)",
            )  # fmt: skip
        limit = strategy.max_leverage if strategy.max_leverage is not None else lead.risk.limits.max_leverage
        if alert.leverage is not None and alert.leverage > limit:
            raise AlertRefusedError(
                "leverage_above_limit", "leverage",
                f"leverage {alert.leverage:g}x is above strategy {strategy.id!r}'s limit of {limit:g}x "
                "(strategies.max_leverage, else [risk] max_leverage)",
            )  # fmt: skip

    def _reference(
        self, lead: Desk, alert: Alert, strategy: StrategySettings, key: str, symbol: str | None
    ) -> ReferencePrice | None:
        """The market price this alert is decided and filled at, after checking the alert's own
        prices against it. Raises :class:`PriceCheckError` when the alert's price or bar close
        strays outside ``max_price_deviation``, or when nothing trustworthy is known and the
        alert could add exposure. A pure exit with no current price is valued at the last mark
        (or entry price): it can close, never mint cash.

        A repeat of an alert already on file is not checked: it acts nowhere and answers as a
        duplicate with the first outcome (the claim in the transaction still decides that)."""
        if symbol is None or strategy.mode == "annotate":
            return None
        if alert_store.original_for_key(self.storage, key) is not None:
            return None
        timeframe = from_tradingview(alert.interval, strategy.timeframe)
        reference = lead.prices.reference(symbol, timeframe)
        if reference is None:
            if pure_exit(alert, strategy):
                return lead.prices.last_known(symbol)
            raise PriceCheckError(
                "no_market_price", "price",
                f"the gateway knows no recent market price for {symbol} to check the alert's "
                f"price against: {NO_PRICE_HINT}",
            )  # fmt: skip
        for name, claimed in (("price", alert.price), ("close", alert.close)):
            if claimed is not None:
                check_alert_price(name, claimed, reference, self.settings.max_price_deviation)
        return reference

    def _record(
        self,
        conn: Connection,
        alert: Alert,
        key: str,
        fields: dict[str, Any],
        desks: list[Desk],
        decided: list[Decision],
        receipt: Receipt,
        views: list[AccountView],
    ) -> list[Decision]:
        """Inside the decision's transaction: claim the key, record the alert once (or its
        duplicate: then no account acts), the ML layer's rows, and each account's order intent
        (for an instant broker, its fill too). Returns each account's decision."""
        combined = combine(decided)
        ordering = any(d.order is not None for d in decided)
        outcome = None if ordering else _outcome(combined, receipt.ml_analysis)
        alert_id = alert_store.claim_alert(
            conn, idempotency_key=key, received_at=receipt.received_at, source_ip=receipt.source_ip,
            payload=receipt.payload, fields=fields, status=combined.status, outcome=outcome,
        )  # fmt: skip
        if alert_id is None:
            original = alert_store.original_for_key(conn, key)
            assert original is not None
            dup_id = alert_store.insert_duplicate(
                conn, original_id=original, received_at=receipt.received_at, source_ip=receipt.source_ip,
                payload=receipt.payload, fields=fields,
            )  # fmt: skip
            return [d.with_result(alert_id=dup_id, duplicate_of=original, order=None) for d in decided]
        if receipt.record is not None:
            receipt.record(conn, alert_id, self.clock.now())
        intent.record_steps(conn, alert_id, decided, self.clock.now())
        stamp = alert.timenow or alert.time
        if combined.symbol and stamp is not None and alert.strategy_id:
            state_store.set_last_alert_time(conn, alert.strategy_id, combined.symbol, stamp.timestamp())
        decided = [
            settlement.place(desk, conn, decision, alert_id, receipt, view.snapshot)
            for desk, decision, view in zip(desks, decided, views, strict=True)
        ]
        if ordering and all(desk.broker.settles_instantly for desk in desks):
            self._finish(conn, combine(decided), receipt)
        return decided

    def _finish(self, conn: Connection, decision: Decision, receipt: Receipt) -> None:
        assert decision.alert_id is not None
        alert_store.finish_alert(
            conn, decision.alert_id, status=decision.status, http_status=decision.http_status,
            reason=decision.reason, decision=decision.as_json(), ml_analysis=receipt.ml_analysis,
            symbol=decision.symbol,
        )  # fmt: skip

    def booked(self, strategy_id: str, symbol: str) -> float | None:
        """What the strategy's first account holds of ``symbol`` (its unsettled orders
        included), in the chart's units: None when the strategy only annotates, does not trade
        to the chart's position, or sizes its own orders (then the units differ)."""
        strategy = self.settings.strategies.get(strategy_id)
        if strategy is None or strategy.mode == "annotate" or not strategy.target_position:
            return None
        desk = self._route(strategy)[0]
        terms = desk.account.terms(strategy) if desk.account is not None else strategy
        if terms.sizing != "alert":
            return None
        return desk.held(self.storage, symbol) + order_store.pending_exposure(
            self.storage, desk.broker.name, symbol
        )

    # --- outside an alert -----------------------------------------------------------------------
    def reconcile(self, *, updated_before: float | None = None) -> list[str]:
        """Settle every order a crash (or a lost answer) left not terminal: ask the broker by
        client order id, never re-send; book what filled and arm its exits. Returns one line
        per order for the log. Called at start-up, before workers; on a store other hosts
        share, a ``pending`` order only when untouched since ``updated_before``."""
        default = self.desk if self._desks is None else None
        return lifecycle.recover(self.storage, self.accounts(), default, updated_before=updated_before)

    def accounts(self) -> dict[str, Desk]:
        """Every account's desk by its name (the name its orders and positions are recorded
        under)."""
        return {desk.broker.name: desk for desk in self.desks()}

    def watch_exits(self) -> int:
        """Act on every account's open exits (the periodic watcher of each worker calls this;
        alerts check their own symbol on the way in): the paper book's against the bars stored
        since the last check, an exchange's by asking it (:mod:`engine.exit_sync`). Returns how
        many exits filled."""
        total = 0
        for desk in self.desks():
            if desk.broker.settles_instantly:
                total += exit_watch.watch_book(desk)
            else:
                total += exit_sync.watch_live(desk)
        return total


def _decide_on_account(
    desk: Desk,
    conn: Connection,
    alert: Alert,
    view: AccountView,
    signal: SignalPort | None,
    seen: Bar | None,
    chart: list[FeedMark],
) -> Decision:
    """Inside the alert's transaction: this account's exits first (a bar that crossed a stop
    closes the position before the alert is decided on it; the alert's own bar counts, it
    is stored later in this transaction), then what the strategy's intended position says of
    the alert on its book (superseded by a later alert of its ``chart``, a gap to repair, or one
    too large to repair: :mod:`engine.intent`), then its decision, a flip as a reduce-only close
    and an opening order, and the trusted price
    as its mark."""
    exit_fills = exit_watch.watch(desk, conn, symbol=view.symbol, seen=seen) if view.symbol else []
    book = desk.book(conn, alert, view)
    found = intent.for_account(alert, view.terms, view.symbol, book, view.snapshot, chart)
    if found.superseded is not None or found.refusal is not None:
        stopped = Decision(status="rejected", mode=view.terms.mode, action=alert.action.value, reason="",
                           symbol=view.symbol)  # fmt: skip
        decision = intent.refused(found, stopped)
    else:
        decision = decide(
            alert, view.terms, view.snapshot, signal, market=view.facts, book=book, risk=desk.risk,
            account=desk.broker.name,
        )  # fmt: skip
        decision = _as_flip(intent.applied(found, decision), view)
    decision = decision.with_result(account=desk.broker.name)
    if exit_fills:
        decision = decision.with_result(details={**decision.details, "exit_fills": exit_fills})
    reference = view.reference
    if decision.symbol and reference is not None and reference.trusted:
        # The trusted price becomes the shared mark: every worker values the book at it.
        mark_store.set_mark(conn, desk.broker.name, decision.symbol, reference.price, reference.source)
    return decision


def _as_flip(decision: Decision, view: AccountView) -> Decision:
    """A decision that crosses from long to short (or back) as one step of two orders, a
    reduce-only close first (:func:`engine.intent.split_flip`)."""
    order = decision.order
    if order is None or order.price is None:
        return decision
    price = order.price
    return intent.split_flip(
        decision, lambda amount: fit_to_market(view.facts, order.symbol, amount, price, False)
    )


def _outcome(decision: Decision, ml_analysis: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "http_status": decision.http_status,
        "reason": decision.reason,
        "decision": decision.as_json(),
        "ml_analysis": ml_analysis,
    }


def _alert_bar(alert: Alert) -> Bar | None:
    """The alert's own bar, when it carries a complete one with its time."""
    row = alert.bar_row()
    return None if row is None else Bar(int(row[0]), row[1], row[2], row[3])
