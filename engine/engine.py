"""The trading engine: one door, :meth:`TradingEngine.process_signal`, from a validated alert
and the ML layer's signal to a recorded :class:`~engine.decision.Decision`.

The act, in order (the webhook, the backtest and the API's on-demand actions all call it):

1. Outside any transaction: the idempotency key (from the canonical alert and the market the
   broker resolves), the market price the engine trusts and the check of the alert's own price
   against it (a :class:`~engine.exceptions.PriceCheckError` refuses the alert before anything
   is decided), and the account equity. These may need the network.
2. One write transaction (``BEGIN IMMEDIATE``, group-committed with other threads' alerts):
   decide under the risk limits (reading only local state), claim the idempotency key (a
   UNIQUE key: a duplicate acts once across every worker), record the alert, the ML layer's
   rows and the order intent. A broker that settles instantly (the paper book) fills inside
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

import dataclasses
import functools
import logging
import math
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from common.timeframes import from_tradingview, seconds
from engine.alert import Action, Alert
from engine.brokers.base import (
    Broker,
    ExitHolder,
    MarginMode,
    OrderRequest,
    OrderResult,
    ProtectiveOrder,
    Side,
)
from engine.decision import (
    Clock,
    Decision,
    DecisionStatus,
    MarketSnapshot,
    PlannedOrder,
    Receipt,
    SignalPort,
    SystemClock,
    agrees_with,
    combine,
    has_opinion,
    probability_for,
    stop_for,
)
from engine.exceptions import (
    AlertRefusedError,
    BrokerError,
    InvalidOrderError,
    OrderUncertainError,
    PriceCheckError,
    TemporaryError,
    UnknownSymbolError,
)
from engine.exits import (
    ATR_BARS,
    Bar,
    ExitPlan,
    Level,
    Target,
    atr,
    check_level,
    parse_level,
    parse_targets,
)
from engine.hybrid import HYBRID_ENTRY_SCORE, ml_bonus
from engine.market import MarketPrices, PriceSource, ReferencePrice, check_alert_price
from engine.risk import DEFAULT_STOP_FRACTION, PortfolioState, RiskManager, TradeProposal
from engine.settings import AccountSettings, EngineSettings, StrategySettings
from engine.symbols import is_contract
from storage import Connection, Storage
from storage import alerts as alert_store
from storage import exits as exit_store
from storage import marks as mark_store
from storage import orders as order_store
from storage import state as state_store

__all__ = ["NO_PRICE_HINT", "TradingEngine", "pure_exit"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Seconds a remote broker's equity reading is reused.
EQUITY_TTL_S = 5.0

#: How to give the gateway a market price, said wherever one is missing.
NO_PRICE_HINT = (
    "fill the candle store (`tvgw data fetch`), send bars in the alerts (time, open, high, low, "
    "close, volume), or set TVGW_MARKET_DATA"
)

#: Position differences smaller than this (in base units) count as "already there".
EPSILON = 1e-9


@dataclass(frozen=True)
class _AccountView:
    """One account's inputs to an alert's decision, gathered before the transaction."""

    symbol: str | None
    terms: StrategySettings
    snapshot: MarketSnapshot
    reference: ReferencePrice | None


@dataclass(frozen=True)
class _Plan:
    target: float | None
    reason: str


def _kelly_size(fraction: float, whose: str, equity: float | None, price: float) -> tuple[float | None, str]:
    """``fraction`` of equity in base units; no order when the fraction sees no edge."""
    if fraction <= 0:
        return None, f"{whose} Kelly fraction is {fraction:g}: no edge, no order"
    return fraction * (equity or 0.0) / price, f"{whose} Kelly fraction {fraction:.3f} of equity"


class TradingEngine:
    """Decides and executes; knows nothing about HTTP and never which broker it has.

    One engine trades one account (its ``broker``, recording under ``broker.name``). Given
    ``accounts`` (name -> that account's broker, settings in ``settings.accounts``), it also
    routes: each alert goes to the accounts its strategy names (the default account, this
    engine's own, when it names none), each decided by a desk of its own (a TradingEngine on
    that account's broker, risk limits and sizing). Without ``accounts`` (the backtest) every
    alert is decided on ``broker`` alone."""

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
        self.broker = broker
        self.clock: Clock = clock or SystemClock()
        self.prices: PriceSource = prices or MarketPrices(storage, broker, clock=self.clock.now)
        self.risk = RiskManager(account.risk if account is not None else settings.risk)
        #: One thread that places and cancels a live broker's resting exits after an alert's fill,
        #: in order, so the answer never waits on them (see :meth:`_sync_soon`).
        self._exit_sync = (
            None if broker.settles_instantly else ThreadPoolExecutor(1, thread_name_prefix="tvgw-exit-sync")
        )
        #: This desk's own account settings (None: the default account, the strategy's terms).
        self.account = account
        self._equity_cache: tuple[float, float | None] = (-EQUITY_TTL_S, None)
        self._desks: dict[str, TradingEngine] | None = None
        if accounts is not None:
            self._desks = {broker.name: self}
            for name, account_broker in accounts.items():
                self._desks[name] = TradingEngine(
                    settings, storage, account_broker, clock=self.clock, account=settings.accounts[name]
                )
        self._pool: ThreadPoolExecutor | None = None
        if self._desks is not None and len(self._desks) > 1:
            # Threads start on demand; the cap leaves one per account for each of many alerts
            # at once (gunicorn's 4 threads per worker, and the exit watcher), so one alert's
            # slow exchange never queues another alert's order behind it.
            workers = 8 * len(self._desks)
            self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tvgw-account")

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
        symbol = lead._resolve(alert)
        lead._check_leverage(alert, strategy, symbol)
        # Keyed on the market the broker resolves, so every spelling of one ticker is one alert;
        # an unresolvable ticker (rejected, no order) is keyed on its own spelling.
        received = datetime.fromtimestamp(receipt.received_at, UTC)
        key = alert.idempotency_key(received, symbol or alert.ticker)
        reference = lead._reference(alert, strategy, key, symbol)
        views = self._each(desks, lambda desk: desk._view(alert, strategy, reference, lead is desk))
        fields = alert.record_fields()
        seen = _alert_bar(alert)

        def act(conn: Connection) -> list[Decision]:
            decided = [
                desk._decide_on_account(conn, alert, view, signal, seen)
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

            def send(desk: TradingEngine) -> Decision:
                decision = by_desk[id(desk)]
                assert decision.client_order_id is not None
                return desk._send(decision, decision.client_order_id)

            sent = self._each([desks[i] for i in sending], send)
            for i, decision in zip(sending, sent, strict=True):
                decided[i] = decision
            with self.storage.transaction() as conn:
                for i in sending:
                    desk, sent_decision = desks[i], decided[i]
                    position = desk._settle(conn, sent_decision)
                    if position is not None and sent_decision.alert_id is not None:
                        desk._rearm(conn, sent_decision, sent_decision.alert_id, position)
                self._finish(conn, combine(decided), receipt)
            for i in sending:
                placed_on = decided[i].symbol
                if placed_on is not None:
                    desks[i]._sync_soon(placed_on)
        return combine(decided)

    def _route(self, strategy: StrategySettings) -> list[TradingEngine]:
        """The desks of the accounts ``strategy`` routes to, in its order (this engine alone
        when it was built without accounts, or the strategy names none)."""
        if self._desks is None or not strategy.accounts:
            return [self]
        return [self._desks[name] for name in strategy.accounts]

    def _each(self, desks: list[TradingEngine], work: Callable[[TradingEngine], _T]) -> list[_T]:
        """``work`` for every desk, in order. Desks on a remote broker run side by side on this
        engine's pool when there are several: each waits on its own exchange, up to its own
        timeout, never on another's. Local desks (the paper book) run in the caller's thread."""
        remote = [d for d in desks if not d.broker.settles_instantly]
        if len(desks) == 1 or not remote or self._pool is None:
            return [work(d) for d in desks]
        futures = {id(d): self._pool.submit(work, d) for d in remote}
        local = {id(d): work(d) for d in desks if d.broker.settles_instantly}
        return [futures[id(d)].result() if id(d) in futures else local[id(d)] for d in desks]

    def _view(
        self, alert: Alert, strategy: StrategySettings, reference: ReferencePrice | None, lead: bool
    ) -> _AccountView:
        """What this account decides the alert with, gathered outside the transaction (it may
        need the network): its market, its terms, its equity, and the price: the one the alert
        was checked against (for a pure exit with none, this account's last known)."""
        symbol = self._resolve(alert)
        if reference is None and not lead and symbol is not None and pure_exit(alert, strategy):
            reference = None if strategy.mode == "annotate" else self.prices.last_known(symbol)
        terms = self.account.terms(strategy) if self.account is not None else strategy
        return _AccountView(
            symbol=symbol, terms=terms, snapshot=self._snapshot(terms, reference), reference=reference
        )

    def _decide_on_account(
        self,
        conn: Connection,
        alert: Alert,
        view: _AccountView,
        signal: SignalPort | None,
        seen: Bar | None,
    ) -> Decision:
        """Inside the alert's transaction: this account's exits first (a bar that crossed a stop
        closes the position before the alert is decided on it; the alert's own bar counts, it
        is stored later in this transaction), then its decision, and the trusted price as its
        mark. A broker failure is this account's failed outcome, never another's."""
        exit_fills = self._watch(conn, symbol=view.symbol, seen=seen) if view.symbol else []
        try:
            decision = self._decide(conn, alert, view.terms, view.snapshot, signal)
        except BrokerError as exc:
            decision = Decision(
                status="failed", mode=view.terms.mode, action=alert.action.value, symbol=view.symbol,
                reason=f"{self.broker.name}: {exc}",
            )  # fmt: skip
        decision = decision.with_result(account=self.broker.name)
        if exit_fills:
            decision = decision.with_result(details={**decision.details, "exit_fills": exit_fills})
        reference = view.reference
        if decision.symbol and reference is not None and reference.trusted:
            # The trusted price becomes the shared mark: every worker values the book at it.
            mark_store.set_mark(conn, self.broker.name, decision.symbol, reference.price, reference.source)
        return decision

    def _sync_soon(self, symbol: str) -> None:
        """Bring the exchange's resting exits of ``symbol`` in line with the book right after
        the answer: up to one order per exit, each with its own timeout and reconciliation,
        would not fit TradingView's 3 s beside the entry's own. The watcher does it again."""
        if self._exit_sync is not None:
            self._exit_sync.submit(self._sync_logged, symbol)

    def _sync_logged(self, symbol: str) -> None:
        try:
            self.sync_exits(symbol)
        except Exception:  # a background thread: say what broke; the watcher's next pass retries
            log.exception("placing the exits of %s failed; the exit watcher tries again", symbol)

    def _check_leverage(self, alert: Alert, strategy: StrategySettings, symbol: str | None) -> None:
        """Refuse (422) an alert's ``leverage`` or ``margin_mode`` the gateway cannot honour:
        beyond the strategy's ``max_leverage``, or on a spot market (margin is a perpetual's)."""
        if alert.leverage is None and alert.margin_mode is None:
            return
        if symbol is not None and not is_contract(symbol):
            field = "leverage" if alert.leverage is not None else "margin_mode"
            raise AlertRefusedError(
                "leverage_on_spot", field,
                f"{field} applies to perpetuals: {symbol} is a spot market (trade {alert.ticker}.P "
                "for the perpetual, or leave the field out)",
            )  # fmt: skip
        limit = self._max_leverage(strategy)
        if alert.leverage is not None and alert.leverage > limit:
            raise AlertRefusedError(
                "leverage_above_limit", "leverage",
                f"leverage {alert.leverage:g}x is above strategy {strategy.id!r}'s limit of {limit:g}x "
                "(strategies.max_leverage, else [risk] max_leverage)",
            )  # fmt: skip

    def _max_leverage(self, strategy: StrategySettings) -> float:
        """The strategy's cap, else this desk's own risk limit (an account's ``[accounts.<name>.risk]``
        over ``[risk]``)."""
        return strategy.max_leverage if strategy.max_leverage is not None else self.risk.limits.max_leverage

    def _leverage(
        self, alert: Alert, strategy: StrategySettings, ml: SignalPort | None, symbol: str
    ) -> tuple[float, MarginMode | None]:
        """The leverage the entry asks for and its margin mode: the alert's, else the ML
        signal's, else the strategy's (1x by default). The risk manager judges the leverage on
        every market; only a perpetual trades it (its amount is margin x leverage)."""
        if alert.leverage is not None:
            leverage = alert.leverage
        elif ml is not None and ml.leverage:
            # Exchanges take whole leverage: the model's 2.7 trades at 2 on a perpetual.
            leverage = max(1.0, float(math.floor(ml.leverage))) if is_contract(symbol) else ml.leverage
        else:
            leverage = strategy.leverage or 1.0
        mode = (alert.margin_mode or strategy.margin_mode) if is_contract(symbol) else None
        return leverage, mode

    def _resolve(self, alert: Alert) -> str | None:
        try:
            return self.broker.resolve_symbol(alert.ticker, alert.exchange)
        except BrokerError:
            return None  # the decision refuses the unknown symbol with the broker's reason

    def _reference(
        self, alert: Alert, strategy: StrategySettings, key: str, symbol: str | None
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
        reference = self.prices.reference(symbol, timeframe)
        if reference is None:
            if pure_exit(alert, strategy):
                return self.prices.last_known(symbol)
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
        desks: list[TradingEngine],
        decided: list[Decision],
        receipt: Receipt,
        views: list[_AccountView],
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
        stamp = alert.timenow or alert.time
        if combined.symbol and stamp is not None and alert.strategy_id:
            state_store.set_last_alert_time(conn, alert.strategy_id, combined.symbol, stamp.timestamp())
        decided = [
            desk._place(conn, decision, alert_id, receipt, view.snapshot)
            for desk, decision, view in zip(desks, decided, views, strict=True)
        ]
        if ordering and all(desk.broker.settles_instantly for desk in desks):
            self._finish(conn, combine(decided), receipt)
        return decided

    def _place(
        self,
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
        client_order_id = f"tvgw-{alert_id}-{self.broker.name}-{int(receipt.received_at) % 100000}"
        order_store.create_pending_order(
            conn, alert_id=alert_id, client_order_id=client_order_id,
            broker=self.broker.name, symbol=decision.order.symbol, side=decision.order.side,
            order_type="market", amount=decision.order.amount, price=decision.order.price,
        )  # fmt: skip
        self._note_equity(conn, snapshot.equity)
        decision = decision.with_result(client_order_id=client_order_id)
        if self.broker.settles_instantly:
            decision = self._send(decision, client_order_id)
            position = self._settle(conn, decision)
            if position is not None:
                self._rearm(conn, decision, alert_id, position)
        return decision

    def _finish(self, conn: Connection, decision: Decision, receipt: Receipt) -> None:
        assert decision.alert_id is not None
        alert_store.finish_alert(
            conn, decision.alert_id, status=decision.status, http_status=decision.http_status,
            reason=decision.reason, decision=decision.as_json(), ml_analysis=receipt.ml_analysis,
            symbol=decision.symbol,
        )  # fmt: skip

    # --- inputs that may need the network (outside the transaction) -----------------------
    def _snapshot(self, strategy: StrategySettings, reference: ReferencePrice | None) -> MarketSnapshot:
        """Price and equity for the decision; annotate-only strategies need neither.

        The price is ``reference``, the one the engine trusts (see :mod:`engine.market`), never
        the alert's own: the alert's price was only checked against it. A remote broker's
        equity costs round trips (balance, tickers), so it is cached for EQUITY_TTL_S; when it
        cannot be read at all, equity is None and any decision that needs it is refused with
        the reason rather than guessed.
        """
        if strategy.mode == "annotate":
            return MarketSnapshot(equity=0.0, price=None)
        return MarketSnapshot(equity=self._equity(), price=reference)

    def _equity(self) -> float | None:
        if self.broker.settles_instantly:
            return self.broker.equity()
        cached_at, value = self._equity_cache
        now = self.clock.now()
        if 0 <= now - cached_at < EQUITY_TTL_S:
            return value
        try:
            value = self.broker.equity()
        except BrokerError as exc:
            log.warning("cannot read %s equity: %s", self.broker.name, exc)
            return None
        self._equity_cache = (now, value)
        return value

    # --- decide (inside the write transaction) ---------------------------------------------
    def _decide(
        self,
        conn: Connection,
        alert: Alert,
        strategy: StrategySettings,
        snapshot: MarketSnapshot,
        signal: SignalPort | None,
    ) -> Decision:
        """What to do with ``alert``. Reads the ledger through ``conn``; writes nothing."""
        ml = signal if has_opinion(signal) else None
        known: dict[str, Any] = {"mode": strategy.mode, "action": alert.action.value}

        def outcome(status: DecisionStatus, reason: str, **extra: Any) -> Decision:
            return Decision(status=status, reason=reason, **known, **extra)

        try:
            symbol = self.broker.resolve_symbol(alert.ticker, alert.exchange)
        except UnknownSymbolError as exc:
            return outcome("rejected", str(exc))
        known["symbol"] = symbol
        stamp = alert.timenow or alert.time
        if stamp is not None and _order_matters(alert, strategy):
            newest = state_store.last_alert_time(conn, strategy.id, symbol)
            if newest is not None and stamp.timestamp() < newest:
                return outcome(
                    "rejected", f"out of order: a newer alert (at {newest:.0f}) was already applied"
                )
        if strategy.mode == "annotate":
            return outcome("annotated", "strategy mode is annotate: recorded only")
        reference = snapshot.price
        if reference is None:
            return outcome("rejected", f"no market price for {symbol}: {NO_PRICE_HINT}")
        price = reference.price
        known["details"] = {"price": {"reference": price, "source": reference.source, "alert": alert.price}}
        if snapshot.equity is None or not math.isfinite(snapshot.equity):
            return outcome(
                "failed",
                f"cannot read a finite account equity from {self.broker.name} ({snapshot.equity}); "
                "not trading blind",
            )
        positions = order_store.list_positions(self.storage, self.broker.name)
        held = next((p.amount for p in positions if p.symbol == symbol), 0.0)
        current = held + order_store.pending_exposure(conn, self.broker.name, symbol)
        leverage, margin_mode = self._leverage(alert, strategy, ml, symbol)
        contract = is_contract(symbol)
        plan = self._plan(alert, strategy, snapshot, ml, current, price, leverage if contract else 1.0)
        known.update(current_position=current, target_position=plan.target)
        if plan.target is None:
            return outcome("rejected", plan.reason)
        delta = plan.target - current
        if abs(delta) <= EPSILON:
            return outcome("annotated", f"already at target position ({current:g})")
        side: Side = "buy" if delta > 0 else "sell"
        gate = self._gate(alert, strategy, signal, ml, side, current, plan.target)
        if gate is not None:
            return outcome("annotated" if gate[0] else "rejected", gate[1])
        reduces = abs(plan.target) <= abs(current) and (
            plan.target == 0 or (plan.target > 0) == (current > 0)
        )
        amount = abs(delta)
        codes: tuple[str, ...] = ()
        reasons: tuple[str, ...] = ()
        stop = stop_for(ml, side, price) if ml else None
        if not reduces and not reference.trusted:
            return outcome("rejected", f"no current market price for {symbol}: {NO_PRICE_HINT}")
        held_position = next((p for p in positions if p.symbol == symbol), None)
        if not reduces and (refusal := _pyramiding_refusal(strategy, held_position, plan.target)):
            return outcome("rejected", refusal)
        exits: ExitPlan | None = None
        timeframe = from_tradingview(alert.interval, strategy.timeframe)
        if not reduces:
            try:
                exits = self._exit_plan(conn, alert, strategy, ml, side, price, symbol, timeframe)
            except ValueError as exc:
                return outcome("rejected", f"exits: {exc}")
            stop = exits.stop if exits.stop is not None else stop
            if not exits.empty:
                holder = self._exit_holder(symbol)
                known["details"]["exits"] = {
                    **exits.to_dict(), "watched": not holder.on_exchange,
                    "held_by": "exchange" if holder.on_exchange else "gateway", "held_because": holder.reason,
                }  # fmt: skip
        if not reduces:
            verdict = self.risk.check(
                TradeProposal(
                    symbol=symbol,
                    side=side,
                    amount=amount,
                    price=price,
                    stop_loss=stop,
                    leverage=leverage,
                ),
                self._portfolio(snapshot, positions, symbol, price),
            )
            codes, reasons = verdict.codes, verdict.reasons
            if not verdict.allowed:
                return outcome(
                    "rejected",
                    "; ".join(reasons) or "refused by risk limits",
                    risk_codes=codes,
                    risk_reasons=reasons,
                )
            amount = verdict.amount
        amount, problem = self._fit(symbol, amount, price, reduces)
        if problem is not None:
            return outcome("rejected", problem, risk_codes=codes, risk_reasons=reasons)
        if contract and not reduces:
            known["details"]["margin"] = {"leverage": leverage, "margin_mode": margin_mode}
        order = PlannedOrder(
            symbol=symbol, side=side, amount=amount, price=price, reduce_only=reduces, stop_loss=stop,
            exits=exits, timeframe=timeframe, leverage=leverage if contract and not reduces else None,
            margin_mode=margin_mode if contract and not reduces else None,
        )  # fmt: skip
        return outcome("processing", plan.reason, order=order, risk_codes=codes, risk_reasons=reasons)

    def _fit(self, symbol: str, amount: float, price: float, reduces: bool) -> tuple[float, str | None]:
        """The amount rounded down to the market's step, or why the market would refuse it.
        An exit smaller than the market minimum says so rather than leaving a silent remainder."""
        try:
            limits = self.broker.market_limits(symbol)
        except BrokerError as exc:
            return 0.0, f"cannot read the market limits of {symbol}: {exc}"
        fitted, problem = limits.fit(amount, price)
        if problem is not None:
            kind = "exit" if reduces else "order"
            return fitted, f"{kind} of {amount:.10g} {symbol} not sent: {problem}"
        return fitted, None

    def _plan(
        self,
        alert: Alert,
        strategy: StrategySettings,
        snapshot: MarketSnapshot,
        ml: SignalPort | None,
        current: float,
        price: float,
        leverage: float = 1.0,
    ) -> _Plan:
        """The position the alert asks for, sized by the strategy's rule (``leverage`` times
        the margin a quote or Kelly rule spends, on a perpetual)."""
        action = alert.action
        if alert.close_percent is not None:
            return _partial_close(action, current, alert.close_percent / 100)
        target_from_alert = alert.target_position if strategy.target_position else None
        if action in (Action.CLOSE_ALL,) or target_from_alert == 0.0:
            return _Plan(0.0, "close the position")
        if action == Action.CLOSE_LONG:
            return _Plan(min(current, 0.0), "close the long side")
        if action == Action.CLOSE_SHORT:
            return _Plan(max(current, 0.0), "close the short side")
        if action == Action.REVERSE and target_from_alert is None:
            if abs(current) <= EPSILON:
                return _Plan(None, "reverse: there is no position to reverse")
            return _Plan(-current, "reverse the position")
        size, why = self._size(alert, strategy, snapshot, ml, price, leverage)
        if target_from_alert is not None:
            if strategy.sizing == "alert":
                return _Plan(target_from_alert, "move to the alert's target position")
            if size is None:
                return _Plan(None, why)
            return _Plan(math.copysign(size, target_from_alert), f"target position, {why}")
        if size is None:
            return _Plan(None, why)
        sign = 1.0 if action == Action.BUY else -1.0
        return _Plan(current + sign * size, why)

    def _size(
        self,
        alert: Alert,
        strategy: StrategySettings,
        snapshot: MarketSnapshot,
        ml: SignalPort | None,
        price: float,
        leverage: float = 1.0,
    ) -> tuple[float | None, str]:
        """Order size in base units by the strategy's sizing rule, or None with the reason.
        A quote amount or a Kelly fraction is the margin: the position is ``leverage`` times it
        (the risk manager then judges that notional); contracts are the position itself.

        ``alert`` sizing takes the alert's contracts; an alert without them that carries a
        ``kelly_fraction`` (the short "ML enhanced" message) is sized by that fraction of equity,
        so the message trades out of the box, capped by the risk manager like any order."""
        levered = f" at {leverage:g}x" if leverage != 1 else ""
        if strategy.sizing == "kelly" and ml is not None:
            size, why = _kelly_size(ml.kelly_fraction, "the model's", snapshot.equity, price)
            return (None if size is None else size * leverage), why + levered
        if strategy.sizing == "fixed_quote":
            amount = strategy.quote_amount * leverage / price
            return amount, f"{strategy.quote_amount:g} quote per trade{levered}"
        if alert.contracts is not None and alert.contracts > 0:
            return alert.contracts, "sized by the alert's contracts"
        if alert.kelly_fraction is not None:
            size, why = _kelly_size(alert.kelly_fraction, "the alert's", snapshot.equity, price)
            return (None if size is None else size * leverage), why + levered
        return None, "the alert has neither contracts nor kelly_fraction to size the order with"

    def _gate(
        self,
        alert: Alert,
        strategy: StrategySettings,
        signal: SignalPort | None,
        ml: SignalPort | None,
        side: Side,
        current: float,
        target: float,
    ) -> tuple[bool, str] | None:
        """ml_gate and hybrid entry rules. Returns (annotate?, reason) to stop, None to go on.
        Exits are never gated: reducing exposure must not wait for a model's permission.
        ``ml`` is the signal when it carries an ML opinion, else None."""
        opening = abs(target) > abs(current) or (target != 0 and (target > 0) != (current > 0))
        if not opening or strategy.mode == "execute":
            return None
        if strategy.mode == "ml_gate":
            if ml is None:
                return True, "ml_gate: no ML opinion available, fallback rule is to annotate only"
            if not agrees_with(ml, side):
                return True, (f"ml_gate: model disagrees (P(up)={ml.direction_probability:.2f} for a {side})")
            if ml.confidence < strategy.ml_threshold:
                return True, (
                    f"ml_gate: confidence {ml.confidence:.2f} below threshold {strategy.ml_threshold:.2f}"
                )
            return None
        # hybrid: technical score from the alert, else from the signal's candles; plus the ML bonus
        tech = alert.technical_score
        if tech is None and signal is not None:
            tech = signal.technical_score(side)
        if tech is None:
            return True, "hybrid: no technical score in the alert and too few candles to compute one"
        bonus = ml_bonus(probability_for(ml, side)) if ml is not None else 0.0
        total = tech + bonus
        needed = strategy.hybrid_entry_score or HYBRID_ENTRY_SCORE
        if total < needed:
            return True, f"hybrid: score {tech:g} + ML bonus {bonus:+g} = {total:g} < {needed:g}"
        return None

    def _portfolio(
        self, snapshot: MarketSnapshot, positions: list[order_store.Position], symbol: str, price: float
    ) -> PortfolioState:
        """The account as the risk manager sees it. A position without a recorded stop counts
        as risking DEFAULT_STOP_FRACTION of its notional (the risk manager's own assumption)."""
        notional, open_risk = {}, 0.0
        for p in positions:
            mark = price if p.symbol == symbol else self._mark(p)
            notional[p.symbol] = abs(p.amount) * mark
            if p.stop_loss is not None and p.avg_price:
                open_risk += abs(p.avg_price - p.stop_loss) * abs(p.amount)
            else:
                open_risk += DEFAULT_STOP_FRACTION * notional[p.symbol]
        equity = snapshot.equity or 0.0
        peak, day_start = self._equity_marks(equity)
        return PortfolioState(
            equity=equity,
            peak_equity=peak,
            day_start_equity=day_start,
            positions={p.symbol: p.amount for p in positions},
            position_notional=notional,
            open_risk=open_risk,
            last_trade_at={p.symbol: p.updated_at for p in positions if p.updated_at is not None},
            now=self.clock.now(),
        )

    def _mark(self, position: order_store.Position) -> float:
        """Another symbol's value per unit: its shared mark, else its entry price."""
        mark = mark_store.get_mark(self.storage, self.broker.name, position.symbol)
        return mark.price if mark is not None else (position.avg_price or 0.0)

    def _equity_marks(self, current: float) -> tuple[float, float]:
        """(peak, start of day) from the equity snapshots, read from the file every time: two
        index look-ups inside the decision's transaction, so every worker applies the drawdown
        and daily-loss limits to the same numbers (a per-worker cache made them disagree)."""
        return order_store.equity_marks(self.storage, self.broker.name, current, now=self.clock.now())

    def _note_equity(self, conn: Connection, equity: float | None) -> None:
        """Snapshot the account value for the drawdown and daily-loss limits, at most every
        EQUITY_TTL_S per broker (judged from the newest snapshot in the file, so all workers
        share one rhythm): a row per order would grow the table for nothing."""
        if equity is None or not math.isfinite(equity):
            return
        newest = order_store.newest_equity_at(conn, self.broker.name)
        if newest is not None and self.clock.now() - newest < EQUITY_TTL_S:
            return
        order_store.record_equity(conn, self.broker.name, equity, at=self.clock.now())

    # --- send and settle ------------------------------------------------------------------------
    def _send(self, decision: Decision, client_order_id: str) -> Decision:
        """Send the planned order once (no storage here) and return the decision with its fate.

        For a remote broker this runs outside any transaction (it waits on the network); a
        broker that ``settles_instantly`` (the paper book) runs it inside the decision's
        transaction, so the order, its fill and the alert commit together.
        """
        assert decision.order is not None
        request = decision.order.request(client_order_id)
        try:
            result = self.broker.execute(request)
        except InvalidOrderError as exc:
            return self._failed(decision, client_order_id, "rejected", "rejected", str(exc))
        except OrderUncertainError as exc:
            return self._failed(decision, client_order_id, "failed", "unknown", str(exc))
        except BrokerError as exc:
            return self._failed(decision, client_order_id, "failed", "failed", str(exc))
        filled = result.filled > 0
        return decision.with_result(
            status="executed" if filled else "failed",
            result=result,
            order_status=result.status,
            reason=decision.reason if filled else f"order {result.status}, nothing filled",
            client_order_id=client_order_id,
        )

    def _settle(self, conn: Connection, decision: Decision) -> order_store.Position | None:
        """Record what :meth:`_send` found: the order row and, for a fill, the ledger. Returns
        the position after a fill (None without one)."""
        assert decision.order is not None and decision.client_order_id is not None
        if decision.result is not None:
            return self.record_result(
                conn, decision.order.symbol, decision.order.side, decision.result, decision.order.stop_loss
            )
        order_store.update_order(
            conn,
            decision.client_order_id,
            status=decision.order_status or "failed",
            error=decision.reason,
        )
        return None

    def record_result(
        self,
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
                conn, broker=self.broker.name, symbol=symbol, side=side, filled=result.filled,
                price=result.average, fee=self._fee_in_quote(result),
                quote_currency=self.settings.paper.quote_currency, starting_cash=self._starting_cash(),
                stop_loss=stop_loss, at=self.clock.now(),
            )  # fmt: skip
        return None

    def _fee_in_quote(self, result: OrderResult) -> float:
        if result.fee_currency in (None, self.settings.paper.quote_currency):
            return result.fee
        return result.fee * (result.average or 0.0)  # fee charged in base: convert at the fill price

    def _starting_cash(self) -> float:
        return self.broker.starting_cash()

    @staticmethod
    def _failed(
        decision: Decision, client_order_id: str, status: str, order_status: str, message: str
    ) -> Decision:
        log.warning("order %s %s: %s", client_order_id, order_status, message)
        return decision.with_result(
            status=status, order_status=order_status, reason=message, client_order_id=client_order_id
        )

    def reconcile(self, *, updated_before: float | None = None) -> list[str]:
        """Settle orders left ``pending`` by a crash: ask the broker by client order id, never
        re-send. Returns one line per order for the log. Called at start-up, before workers;
        on a store other hosts share, only for orders untouched since ``updated_before``."""
        lines = []
        desks = {desk.broker.name: desk for desk in self.desks()}
        for row in order_store.pending_orders(self.storage, updated_before=updated_before):
            cid = row["client_order_id"]
            desk = self if self._desks is None else desks.get(row["broker"])
            if desk is None:
                lines.append(f"order {cid}: account {row['broker']!r} is not configured; left pending")
                continue
            try:
                result = desk.broker.fetch_order(cid, row["symbol"])
            except BrokerError as exc:
                lines.append(f"order {cid}: still unknown ({exc}); left pending")
                continue
            with self.storage.transaction() as conn:
                if result is None:
                    order_store.update_order(
                        conn, cid, status="canceled", error="never reached the broker (crash before send)"
                    )
                    lines.append(f"order {cid}: never placed; marked canceled")
                else:
                    desk.record_result(conn, row["symbol"], row["side"], result)
                    lines.append(f"order {cid}: {result.status}, filled {result.filled}")
        return lines

    # --- protective exits (the paper book acts on them) -----------------------------------------
    def _exit_plan(
        self,
        conn: Connection,
        alert: Alert,
        strategy: StrategySettings,
        ml: SignalPort | None,
        side: Side,
        price: float,
        symbol: str,
        timeframe: str,
    ) -> ExitPlan:
        """The entry's stop, targets and trailing stop, each from the first source that gives
        it: the alert, the ML signal (its stop and target, moved to this price), the strategy.
        Raises ValueError (the alert is refused with it) for a level on the wrong side of the
        entry or an ATR level without the bars to measure it."""
        sources: dict[str, str] = {}
        stop_level: Level | None = None
        trail_level: Level | None = None
        targets: tuple[Target, ...] = ()
        if alert.stop_loss:
            stop_level, sources["stop_loss"] = parse_level("stop_loss", alert.stop_loss), "alert"
        elif ml is not None and (ml_stop := stop_for(ml, side, price)) is not None:
            stop_level, sources["stop_loss"] = Level(ml_stop, "price"), "ml"
        elif strategy.stop_loss:
            stop_level, sources["stop_loss"] = parse_level("stop_loss", strategy.stop_loss), "strategy"
        if alert.take_profit:
            targets, sources["take_profit"] = parse_targets("take_profit", alert.take_profit), "alert"
        elif ml is not None and (ml_target := _target_for(ml, side, price)) is not None:
            targets, sources["take_profit"] = (Target(Level(ml_target, "price"), 1.0),), "ml"
        elif strategy.take_profit:
            targets, sources["take_profit"] = parse_targets("take_profit", strategy.take_profit), "strategy"
        if alert.trailing_stop:
            trail_level, sources["trailing_stop"] = parse_level("trailing_stop", alert.trailing_stop), "alert"
        elif strategy.trailing_stop:
            trail_level = parse_level("trailing_stop", strategy.trailing_stop)
            sources["trailing_stop"] = "strategy"
        levels = [lv for lv in (stop_level, trail_level, *(t.level for t in targets)) if lv is not None]
        atr_value = None
        if any(lv.unit == "atr" for lv in levels):
            atr_value = atr(exit_store.recent_bars(conn, symbol, timeframe, ATR_BARS))
        stop = stop_level.price(price, side, profit=False, atr_value=atr_value) if stop_level else None
        prices = tuple(
            (t.level.price(price, side, profit=True, atr_value=atr_value), t.share) for t in targets
        )
        _check_sides(side, price, stop, prices)
        trail = None if trail_level is None else trail_level.distance(price, atr_value)
        if trail is not None and not 0 < trail < price:
            raise ValueError(f"trailing_stop {trail_level} is no distance below the entry at {price:g}")
        ordered = tuple(sorted(prices, key=lambda p: p[0], reverse=side == "sell"))
        return ExitPlan(
            side=side, entry=price, stop=stop, targets=ordered, trail=trail, sources=sources,
            break_even=strategy.break_even,
        )  # fmt: skip

    def _rearm(
        self, conn: Connection, decision: Decision, alert_id: int, position: order_store.Position
    ) -> None:
        """After an alert's own fill: an entry with exits replaces the symbol's open exits with
        its own, sized on the whole position; a fill that closed or reversed the position
        cancels them (a partial close keeps them: they act on what is left)."""
        order = decision.order
        assert order is not None
        before = decision.current_position or 0.0
        closed = abs(position.amount) <= EPSILON
        flipped = not closed and abs(before) > EPSILON and (before > 0) != (position.amount > 0)
        plan = order.exits
        if closed or flipped or (plan is not None and not plan.empty):
            why = "closed" if closed else "reversed" if flipped else "replaced by a new entry"
            exit_store.cancel_exits(conn, self.broker.name, order.symbol, f"{why} (alert {alert_id})")
        elif order.reduce_only and abs(before) > EPSILON:
            # A partial close: the exits keep protecting what is left, resized to it.
            exit_store.scale_exits(conn, self.broker.name, order.symbol, abs(position.amount) / abs(before))
        if closed or plan is None or plan.empty or not position.avg_price:
            return
        holder = self._exit_holder(order.symbol)
        armed_ms = _bar_open_ms(conn, order.symbol, order.timeframe, self.clock.now())
        entry = position.avg_price
        common = dict(
            broker=self.broker.name, symbol=order.symbol, timeframe=order.timeframe, alert_id=alert_id,
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

    def watch_exits(self) -> int:
        """Check every account's open exits against the bars stored since the last check (the
        periodic watcher of each worker calls this; alerts check their own symbol on the way
        in). Each symbol in its own write transaction; returns how many exits filled."""
        return sum(desk._watch_book() for desk in self.desks())

    def desks(self) -> list[TradingEngine]:
        """The engine of every account: this one first, then the named accounts'."""
        return [self] if self._desks is None else list(self._desks.values())

    def _watch_book(self) -> int:
        """:meth:`watch_exits` for this desk's own book."""
        if not self.broker.settles_instantly:
            return sum(
                self._watch_live(s) for s in exit_store.watched_symbols(self.storage, self.broker.name)
            )
        filled = 0
        for symbol in exit_store.open_exit_symbols(self.storage, self.broker.name):
            check = functools.partial(self._watch, symbol=symbol, seen=None)
            filled += len(self.storage.write_batched(check))
        return filled

    def _watch(self, conn: Connection, *, symbol: str, seen: Bar | None) -> list[dict[str, Any]]:
        """Inside a write transaction: fill the exits of ``symbol`` that the bars since their
        last check crossed, in time order; within a bar the stops before the targets (the
        cautious reading of a bar whose path is unknown), and a trailing stop follows the bar's
        best price only after its worst was checked. ``seen`` is a bar not yet stored (the
        alert's)."""
        exits = exit_store.open_exits(conn, self.broker.name, symbol) if self.broker.settles_instantly else []
        if not exits:
            return []
        first = exits[0]
        since = min(e.checked_ms for e in exits)
        bars = {ms: Bar(ms, o, h, lo) for ms, o, h, lo in exit_store.bars_since(
            conn, symbol, first.timeframe, since, after_ms=first.armed_ms)}  # fmt: skip
        if seen is not None and seen.ms > first.armed_ms and seen.ms >= since:
            stored = bars.get(seen.ms)
            bars[seen.ms] = seen if stored is None else Bar(
                seen.ms, stored.open, max(stored.high, seen.high), min(stored.low, seen.low)
            )  # fmt: skip
        fills: list[dict[str, Any]] = []
        for ms in sorted(bars):
            live = exit_store.open_exits(conn, self.broker.name, symbol)
            if not live:
                break
            news = bars[ms]
            if ms == live[0].checked_ms:
                news = news.beyond(live[0].seen_high, live[0].seen_low)
            fills += self._bar_exits(conn, live, news)
            for e in exit_store.open_exits(conn, self.broker.name, symbol):
                exit_store.set_checked(conn, e.id, ms, bars[ms].high, bars[ms].low)
        return fills

    def _bar_exits(
        self, conn: Connection, live: list[exit_store.ArmedExit], bar: Bar
    ) -> list[dict[str, Any]]:
        """One bar against the open exits of one position (see :meth:`_watch`)."""
        symbol = live[0].symbol
        held = self._held(conn, symbol)
        if abs(held) <= EPSILON:
            exit_store.cancel_exits(conn, self.broker.name, symbol, "no position left")
            return []
        for e in (x for x in live if x.kind in ("stop", "trailing")):
            price = check_level(e.entry_side, e.trigger, bar, profit=False)
            if price is not None:
                fill = self._fill_exit(conn, e, abs(held), price)
                exit_store.cancel_exits(conn, self.broker.name, symbol, f"position closed by {e.kind}")
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
            fill = self._fill_exit(conn, e, _exit_amount(e, abs(self._held(conn, symbol))), price)
            if fill:
                fills.append(fill)
            if e.break_even:
                self._to_break_even(conn, live, e)
        if abs(self._held(conn, symbol)) <= EPSILON:
            exit_store.cancel_exits(conn, self.broker.name, symbol, "position closed by its targets")
        return fills

    def _to_break_even(
        self, conn: Connection, live: list[exit_store.ArmedExit], target: exit_store.ArmedExit
    ) -> None:
        """After a target filled: the stop moves to the entry price, never backwards."""
        for e in live:
            if e.kind != "stop":
                continue
            entry = target.entry_price
            if entry > e.trigger if e.entry_side == "buy" else entry < e.trigger:
                exit_store.move_trigger(conn, e.id, target.entry_price)

    def _held(self, conn: Connection, symbol: str) -> float:
        return order_store.position_amount(conn, self.broker.name, symbol)

    def _fill_exit(
        self, conn: Connection, e: exit_store.ArmedExit, amount: float, price: float
    ) -> dict[str, Any] | None:
        """Fill one exit once: claim it (a second worker's claim finds it filled), record its
        order with its reason, fill it on the paper book at ``price`` with the same fee and
        slippage model as any order, and book the fill. None when another pass claimed it."""
        cid = f"tvgw-exit-{e.id}"
        if not exit_store.claim_exit(conn, e.id, cid, e.kind):
            return None
        side: Side = "sell" if e.entry_side == "buy" else "buy"
        fitted, problem = self._fit(e.symbol, amount, price, True)
        order_store.create_pending_order(
            conn, alert_id=e.alert_id, client_order_id=cid, broker=self.broker.name, symbol=e.symbol,
            side=side, order_type="market", amount=fitted or amount, price=price, reason=e.kind,
        )  # fmt: skip
        out: dict[str, Any] = {"exit": e.kind, "trigger": e.trigger, "client_order_id": cid}
        if problem is not None:
            order_store.update_order(conn, cid, status="rejected", error=problem)
            return {**out, "status": "rejected", "reason": problem}
        request = PlannedOrder(symbol=e.symbol, side=side, amount=fitted, price=price, reduce_only=True)
        if not self.broker.settles_instantly:
            # A remote broker is never called inside the write transaction: the caller sends it
            # once the claim and the pending order committed (:meth:`_send_exit`).
            return {**out, "status": "pending", "side": side, "request": request.request(cid)}
        try:
            result = self.broker.execute(request.request(cid))
        except BrokerError as exc:
            order_store.update_order(conn, cid, status="failed", error=str(exc))
            log.warning("exit %s of %s failed: %s", e.kind, e.symbol, exc)
            return {**out, "status": "failed", "reason": str(exc)}
        self.record_result(conn, e.symbol, side, result)
        log.info("exit %s: %s %.10g %s at %.10g", e.kind, side, result.filled, e.symbol, result.average or 0)
        filled = {"side": side, "filled": result.filled, "average": result.average}
        return {**out, "status": result.status, **filled}

    # --- protective exits on a live exchange ------------------------------------------------------
    def _exit_holder(self, symbol: str) -> ExitHolder:
        try:
            return self.broker.exit_holder(symbol)
        except BrokerError as exc:
            return ExitHolder(False, f"cannot ask {self.broker.name} about {symbol} ({exc})")

    def _watch_live(self, symbol: str) -> int:
        """A live broker's exits of ``symbol``: learn what the exchange's resting exits did (a
        fill is recorded once, with its consequences), move the trailing stops with the price,
        fire the exits the gateway holds itself when the price crossed them, then make the
        exchange's resting orders match (:meth:`sync_exits`). Returns how many exits filled."""
        filled = sum(
            self._poll_exit(e) for e in exit_store.exchange_exits(self.storage, self.broker.name, symbol)
        )
        live = exit_store.open_exits(self.storage, self.broker.name, symbol)
        if any(e.held_by == "gateway" or e.kind == "trailing" for e in live):
            price = self._live_price(symbol)
            if price is not None:
                act = functools.partial(self._price_exits, symbol=symbol, price=price)
                fills = self.storage.write_batched(act)
                filled += sum(self._send_exit(f["request"], f["side"]) for f in fills if "request" in f)
        self.sync_exits(symbol)
        return filled

    def _send_exit(self, request: OrderRequest, side: Side) -> bool:
        """Send an exit the gateway claimed (its pending order is on file), once, and record
        what came of it; True when it filled. A lost answer is reconciled by the broker; one it
        cannot settle stays ``unknown`` (start-up reconciliation asks again), never re-sent."""
        try:
            result = self.broker.execute(request)
        except BrokerError as exc:
            status = "unknown" if isinstance(exc, OrderUncertainError) else "failed"
            with self.storage.transaction() as conn:
                order_store.update_order(conn, request.client_order_id, status=status, error=str(exc))
            log.warning("exit order %s of %s %s: %s", request.client_order_id, request.symbol, status, exc)
            return False
        with self.storage.transaction() as conn:
            self.record_result(conn, request.symbol, side, result)
        log.info("exit order %s: %s %.10g %s at %s", request.client_order_id, side, result.filled,
                 request.symbol, result.average)  # fmt: skip
        return result.filled > 0

    def _live_price(self, symbol: str) -> float | None:
        try:
            return self.broker.last_price(symbol)
        except BrokerError as exc:
            log.warning(
                "exits of %s: no price from %s (%s); checked again later", symbol, self.broker.name, exc
            )
            return None

    def _poll_exit(self, e: exit_store.ArmedExit) -> int:
        """What the exchange did with the resting exit ``e``: a fill is recorded (1), a
        placement it never saw is marked ``gone`` (placed again by :meth:`sync_exits`)."""
        cid = e.exchange_cid
        assert cid is not None
        try:
            result = self.broker.fetch_exit(cid, e.symbol)
        except BrokerError as exc:
            log.warning("exit %s of %s: cannot read %s (%s); asked again later", e.kind, e.symbol, cid, exc)
            return 0
        if result is None:
            exit_store.set_exchange_state(self.storage, e.id, cid, "gone")
            return 0
        if result.filled > 0:
            act = functools.partial(self._exchange_fill, e=e, result=result)
            return 1 if self.storage.write_batched(act) else 0
        state = {"open": "open", "canceled": "canceled", "rejected": "canceled"}.get(result.status)
        if state is not None and (state, result.exchange_order_id) != (
            e.exchange_status,
            e.exchange_order_id,
        ):
            exit_store.set_exchange_state(self.storage, e.id, cid, state, result.exchange_order_id)
        return 0

    def _exchange_fill(
        self, conn: Connection, *, e: exit_store.ArmedExit, result: OrderResult
    ) -> dict[str, Any] | None:
        """Record, once, an exit the exchange filled: its order (client id of the placement,
        reason the exit's kind) and the ledger; then what follows from it: a stop closes the
        position (its other exits are cancelled), a target may move the stop to break-even.
        None when another worker recorded it first (the order's client id is UNIQUE)."""
        cid = str(e.exchange_cid)
        exit_store.set_exchange_state(conn, e.id, cid, "filled", result.exchange_order_id)
        if order_store.get_order(conn, cid) is not None:
            return None
        exit_store.claim_exit(conn, e.id, cid, e.kind)  # False after a cancel that came too late
        side: Side = "sell" if e.entry_side == "buy" else "buy"
        order_store.create_pending_order(
            conn, alert_id=e.alert_id, client_order_id=cid, broker=self.broker.name, symbol=e.symbol,
            side=side, order_type="market", amount=result.filled, price=e.trigger, reason=e.kind,
        )  # fmt: skip
        self.record_result(conn, e.symbol, side, dataclasses.replace(result, client_order_id=cid))
        held = self._held(conn, e.symbol)
        if e.kind in ("stop", "trailing") or abs(held) <= EPSILON:
            exit_store.cancel_exits(conn, self.broker.name, e.symbol, f"position closed by {e.kind}")
        elif e.break_even:
            self._to_break_even(conn, exit_store.open_exits(conn, self.broker.name, e.symbol), e)
        log.info("exit %s filled on %s: %s %.10g %s at %s", e.kind, self.broker.name, side,
                 result.filled, e.symbol, result.average)  # fmt: skip
        return {"exit": e.kind, "trigger": e.trigger, "client_order_id": cid, "status": result.status,
                "side": side, "filled": result.filled, "average": result.average}  # fmt: skip

    def _price_exits(self, conn: Connection, *, symbol: str, price: float) -> list[dict[str, Any]]:
        """Inside a write transaction: trailing stops the exchange holds follow ``price``; the
        exits the gateway holds itself fire when ``price`` crossed them (as a bar of one price)."""
        live = exit_store.open_exits(conn, self.broker.name, symbol)
        for e in live:
            if e.held_by == "exchange" and e.kind == "trailing" and e.trail:
                best = price - e.trail if e.entry_side == "buy" else price + e.trail
                if (best > e.trigger) if e.entry_side == "buy" else (best < e.trigger):
                    exit_store.move_trigger(conn, e.id, best)
        mine = [e for e in live if e.held_by == "gateway"]
        if not mine:
            return []
        return self._bar_exits(conn, mine, Bar(int(self.clock.now() * 1000), None, price, price))

    def sync_exits(self, symbol: str) -> None:
        """Make the exchange's resting exits of ``symbol`` match the book: cancel those whose
        exit is no longer open (the position closed, reversed, or a stop filled); place those
        not placed yet; cancel and replace those whose trigger moved (break-even, trailing) or
        whose amount changed (a target filled, a partial close). Network calls, outside any
        transaction; a failure is logged and the watcher's next pass tries again."""
        if self.broker.settles_instantly:
            return
        held = abs(order_store.position_amount(self.storage, self.broker.name, symbol))
        for e in exit_store.exchange_exits(self.storage, self.broker.name, symbol):
            if (e.status != "open" or held <= EPSILON) and e.exchange_status == "open":
                self._cancel_exit(e)
        for e in exit_store.open_exits(self.storage, self.broker.name, symbol):
            if e.held_by != "exchange" or e.exchange_status == "placing" or held <= EPSILON:
                continue  # a placement whose answer was lost is looked up first, never placed twice
            amount, problem = self._fit(symbol, _exit_amount(e, held), e.trigger, True)
            if problem is not None:
                log.warning("exit %s of %s not placed: %s", e.kind, symbol, problem)
                continue
            if e.exchange_status == "open":
                if _same(e.placed_amount, amount) and _same(e.placed_trigger, e.trigger):
                    continue
                if not self._cancel_exit(e):
                    continue
            self._place_exit(e, amount)

    def _cancel_exit(self, e: exit_store.ArmedExit) -> bool:
        """Cancel the resting order of ``e``; True when it no longer rests. One that filled
        meanwhile is recorded instead (False: nothing to replace)."""
        cid = str(e.exchange_cid)
        try:
            result = self.broker.cancel_exit(cid, e.symbol)
        except BrokerError as exc:
            log.warning(
                "exit %s of %s: cancel of %s failed (%s); tried again later", e.kind, e.symbol, cid, exc
            )
            return False
        if result is not None and result.filled > 0:
            self.storage.write_batched(functools.partial(self._exchange_fill, e=e, result=result))
            return False
        if result is not None and result.status in ("open", "partially_filled"):
            return False
        exit_store.set_exchange_state(self.storage, e.id, cid, "gone" if result is None else "canceled")
        return True

    def _place_exit(self, e: exit_store.ArmedExit, amount: float) -> None:
        """Place exit ``e`` on the exchange under a fresh client id ``tvgw-x<exit id>-<n>``,
        claimed in the book first: a second worker, or a retry, never places it twice."""
        cid = f"tvgw-x{e.id}-{e.placements + 1}"
        if not exit_store.begin_placement(self.storage, e, cid, e.trigger, amount):
            return
        order = ProtectiveOrder(
            client_order_id=cid, symbol=e.symbol, side="sell" if e.entry_side == "buy" else "buy",
            amount=amount, trigger=e.trigger,
            kind="stop" if e.kind in ("stop", "trailing") else "take_profit",
        )  # fmt: skip
        try:
            result = self.broker.place_exit(order)
        except OrderUncertainError as exc:
            log.warning("exit %s of %s: %s", e.kind, e.symbol, exc)  # stays "placing": looked up next
            return
        except TemporaryError as exc:
            exit_store.set_exchange_state(self.storage, e.id, cid, "failed")
            log.warning("exit %s of %s not placed (%s); tried again later", e.kind, e.symbol, exc)
            return
        except BrokerError as exc:
            # Refused as it stands (the price already past it: "would immediately trigger", say),
            # and asking again would be refused again: the gateway acts on it itself.
            exit_store.set_exchange_state(self.storage, e.id, cid, "failed")
            exit_store.set_held_by(self.storage, e.id, "gateway")
            log.warning("exit %s of %s refused by %s (%s); the gateway watches it", e.kind, e.symbol,
                        self.broker.name, exc)  # fmt: skip
            return
        exit_store.set_exchange_state(self.storage, e.id, cid, "open", result.exchange_order_id)
        log.info("exit %s of %s rests on %s: %s %.10g at %.10g (%s)", e.kind, e.symbol, self.broker.name,
                 order.side, amount, e.trigger, cid)  # fmt: skip


def _exit_amount(e: exit_store.ArmedExit, held: float) -> float:
    """What exit ``e`` closes of the ``held`` position: all of it for a stop, a target's
    share of its entry (the whole rest when only dust would be left)."""
    if not e.kind.startswith("take_profit"):
        return held
    amount = min((e.share or 1.0) * e.entry_amount, held)
    return held if held - amount <= EPSILON * max(1.0, held) * 1e3 else amount


def _same(placed: float | None, wanted: float) -> bool:
    return placed is not None and math.isclose(placed, wanted, rel_tol=1e-9, abs_tol=1e-12)


def _order_matters(alert: Alert, strategy: StrategySettings) -> bool:
    """Whether a late alert must not act: a target position or an absolute action (close,
    reverse) is superseded by a newer one, while buy/sell deltas add up in any order."""
    if strategy.target_position and alert.target_position is not None:
        return True
    return alert.action not in (Action.BUY, Action.SELL)


def pure_exit(alert: Alert, strategy: StrategySettings) -> bool:
    """Whether the alert can only reduce exposure, whatever the position: a close, or a flat
    target. (A ``sell`` may reduce a long or open a short, so it is not one.)"""
    if alert.action in (Action.CLOSE_LONG, Action.CLOSE_SHORT, Action.CLOSE_ALL):
        return True
    return strategy.target_position and alert.target_position == 0.0


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


def _bar_open_ms(conn: Connection, symbol: str, timeframe: str, now: float) -> int:
    """The bar an entry filled in: the newest stored one, else the clock's current bar. Exits
    watch only the bars after it (its range may hold prices from before the entry)."""
    newest = exit_store.recent_bars(conn, symbol, timeframe, 1)
    if newest:
        return int(newest[0][0])
    step = seconds(timeframe)
    return int(now // step * step * 1000)


def _target_for(signal: SignalPort, side: str, price: float) -> float | None:
    """The signal's take-profit moved to ``price`` (its distance kept), as :func:`stop_for`."""
    if signal.take_profit is None or not signal.entry_price or not agrees_with(signal, side):
        return None
    distance = abs(signal.take_profit - signal.entry_price) / signal.entry_price
    return price * (1 + distance) if side == "buy" else price * (1 - distance)


def _check_sides(
    side: str, price: float, stop: float | None, targets: tuple[tuple[float, float], ...]
) -> None:
    """A stop on the losing side of the entry and targets on the winning side, else ValueError:
    a stop above a long's entry would close it at once (usually a long/short mix-up)."""
    long = side == "buy"
    if stop is not None and (stop >= price if long else stop <= price):
        where = "below" if long else "above"
        raise ValueError(f"stop_loss {stop:.10g} must be {where} the {side} entry at {price:.10g}")
    for target, _ in targets:
        if target <= 0 or (target <= price if long else target >= price):
            where = "above" if long else "below"
            raise ValueError(f"take_profit {target:.10g} must be {where} the {side} entry at {price:.10g}")


def _partial_close(action: Action, current: float, fraction: float) -> _Plan:
    """A close of ``fraction`` of the side the action names (the whole side at 100%)."""
    side_held = (
        current > 0 if action == Action.CLOSE_LONG else current < 0 if action == Action.CLOSE_SHORT else True
    )
    if not side_held or abs(current) <= EPSILON:
        return _Plan(current, "nothing to close on that side")
    kept = 0.0 if fraction >= 1 else current * (1 - fraction)
    return _Plan(kept, f"close {fraction * 100:g}% of the position")


def _pyramiding_refusal(
    strategy: StrategySettings, held: order_store.Position | None, target: float
) -> str | None:
    """Why an order that adds to an open position in its direction would pass the strategy's
    ``pyramiding`` limit of entries, or None when it may (a fill reversing through flat starts
    a new position, so it is no add)."""
    if strategy.pyramiding is None or held is None or abs(held.amount) <= EPSILON:
        return None
    if (target > 0) != (held.amount > 0):
        return None
    entries = max(held.entries, 1)
    if entries < strategy.pyramiding:
        return None
    noun = "entry" if entries == 1 else "entries"
    limit = strategy.pyramiding
    return f"pyramiding limit: the position already has {entries} {noun} (strategies.pyramiding = {limit})"
