"""One account's desk: its broker, its risk limits and terms, and what the decision for an alert
reads from it.

The gateway trades one account per broker (the default account, and each ``[accounts.<name>]``).
A :class:`Desk` gathers that account's inputs to a decision in two steps: :meth:`Desk.facts`
and :meth:`Desk.snapshot` before the write transaction (they may call the exchange: markets,
limits, equity), :meth:`Desk.book` inside it (the account's own records, read through the
transaction's connection). The pure :func:`engine.decide.decide` then decides on them.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from common.timeframes import from_tradingview
from engine.alert import Alert
from engine.brokers.base import Broker, ExitHolder, MarketLimits
from engine.decide import Book, MarketFacts, fit_to_market, pure_exit
from engine.decision import Clock, MarketSnapshot
from engine.exceptions import BrokerError
from engine.exit_sync import sync_exits
from engine.exits import ATR_BARS, atr
from engine.market import MarketPrices, PriceSource, ReferencePrice
from engine.risk import RiskManager
from engine.settings import AccountSettings, EngineSettings, StrategySettings
from storage import Connection, Storage
from storage import candles as candle_store
from storage import marks as mark_store
from storage import orders as order_store
from storage import state as state_store
from storage.installation import installation_id

if TYPE_CHECKING:
    from storage.database import Db

__all__ = ["EQUITY_TTL_S", "AccountView", "Desk"]

log = logging.getLogger(__name__)

#: Seconds between the equity snapshots the drawdown and daily-loss limits are judged from.
EQUITY_TTL_S = 5.0


@dataclass(frozen=True)
class AccountView:
    """One account's inputs to an alert's decision, gathered before the transaction."""

    symbol: str | None
    terms: StrategySettings
    snapshot: MarketSnapshot
    reference: ReferencePrice | None
    facts: MarketFacts


class Desk:
    """One account: its broker (recording under ``broker.name``), its risk manager and its
    terms (``account``'s overrides of a strategy; None for the default account, which trades
    by the strategy's own terms)."""

    def __init__(
        self,
        settings: EngineSettings,
        storage: Storage,
        broker: Broker,
        *,
        clock: Clock,
        prices: PriceSource | None = None,
        account: AccountSettings | None = None,
    ):
        self.settings = settings
        self.storage = storage
        self.broker = broker
        self.clock = clock
        self.prices: PriceSource = prices or MarketPrices(storage, broker, clock=clock.now)
        self.account = account
        self.risk = RiskManager(account.risk if account is not None else settings.risk)
        self._prefix: str | None = None
        #: One thread that places and cancels a live broker's resting exits after an alert's fill,
        #: in order, so the answer never waits on them (see :meth:`sync_soon`).
        self._exit_sync = (
            None if broker.settles_instantly else ThreadPoolExecutor(1, thread_name_prefix="tvgw-exit-sync")
        )

    def client_prefix(self, db: Db) -> str:
        """What every client order id of this installation starts with (``tvgw-<installation
        id>``): unique per database, so a fresh one on the same account never reuses an id.
        ``db`` is the caller's transaction when it has one (the id is drawn on first use)."""
        if self._prefix is None:
            self._prefix = f"tvgw-{installation_id(db)}"
        return self._prefix

    @property
    def name(self) -> str:
        """The account's name: its broker's, under which its orders and positions are recorded."""
        return self.broker.name

    # --- before the transaction (may call the exchange) -----------------------------------------
    def resolve(self, alert: Alert) -> str | None:
        """The alert's market on this broker, or None when it cannot be resolved (the decision
        then refuses it with the broker's reason, from :meth:`facts`)."""
        try:
            return self.broker.resolve_symbol(alert.ticker, alert.exchange)
        except BrokerError:
            return None

    def view(
        self,
        alert: Alert,
        strategy: StrategySettings,
        reference: ReferencePrice | None,
        lead: bool,
        symbol: str | None = None,
    ) -> AccountView:
        """What this account decides the alert with, gathered outside the transaction (it may
        need the network): its market and what the broker says of it, its terms, its equity,
        and the price: the one the alert was checked against (for a pure exit with none, this
        account's last known). ``symbol``: the market already resolved on this account, if it
        was (the lead account's, at the door), so that it is not resolved again."""
        facts = self.facts(alert, strategy, symbol)
        symbol = facts.symbol
        if reference is None and not lead and symbol is not None and pure_exit(alert, strategy):
            reference = None if strategy.mode == "annotate" else self.prices.last_known(symbol)
        terms = self.account.terms(strategy) if self.account is not None else strategy
        return AccountView(
            symbol=symbol, terms=terms, snapshot=self.snapshot(terms, reference), reference=reference,
            facts=facts,
        )  # fmt: skip

    def facts(self, alert: Alert, strategy: StrategySettings, symbol: str | None = None) -> MarketFacts:
        """The alert's market on this broker (``symbol`` when already resolved here), its order
        limits and who would hold its exits. An annotate-only strategy needs only the market."""
        try:
            symbol = symbol or self.broker.resolve_symbol(alert.ticker, alert.exchange)
        except BrokerError as exc:
            return MarketFacts(symbol=None, symbol_error=exc)
        if strategy.mode == "annotate":
            return MarketFacts(symbol=symbol)
        try:
            limits = self.broker.limits_reading(symbol)
        except BrokerError as exc:
            return MarketFacts(symbol=symbol, limits_error=str(exc), exit_holder=self.exit_holder(symbol))
        # A local book's limits are its settings: read now, on the caller's (maybe simulated) clock.
        taken_at = None if self.broker.settles_instantly else limits.taken_at
        return MarketFacts(
            symbol=symbol, limits=limits.value, limits_taken_at=taken_at, limits_source=limits.source,
            exit_holder=self.exit_holder(symbol), shortable=self.broker.can_short(symbol),
        )  # fmt: skip

    def limits(self, symbol: str) -> tuple[MarketLimits | None, str | None]:
        """The market's order limits, or None and why they could not be read."""
        try:
            return self.broker.market_limits(symbol), None
        except BrokerError as exc:
            return None, str(exc)

    def fit(self, symbol: str, amount: float, price: float, reduces: bool) -> tuple[float, str | None]:
        """``amount`` rounded down to the market's step, or why the market would refuse it
        (:func:`engine.decide.fit_to_market` on the limits read now)."""
        limits, problem = self.limits(symbol)
        return fit_to_market(MarketFacts(symbol=symbol, limits=limits, limits_error=problem), symbol,
                             amount, price, reduces)  # fmt: skip

    def exit_holder(self, symbol: str) -> ExitHolder:
        """Who acts on ``symbol``'s exits (the exchange, or the gateway's watcher), and why."""
        try:
            return self.broker.exit_holder(symbol)
        except BrokerError as exc:
            return ExitHolder(False, f"cannot ask {self.broker.name} about {symbol} yet ({exc})", known=False)

    def snapshot(self, strategy: StrategySettings, reference: ReferencePrice | None) -> MarketSnapshot:
        """Price and equity for the decision; annotate-only strategies need neither.

        The price is ``reference``, the one the engine trusts (see :mod:`engine.market`), never
        the alert's own: the alert's price was only checked against it. A remote broker's
        equity costs round trips (balance, tickers): the broker keeps it as a reading with its
        age, refreshed by one thread and backed off when it fails
        (:mod:`engine.brokers.readings`). When none can be had, equity is None with the reason,
        and any decision that needs it is refused with that reason rather than guessed.
        """
        if strategy.mode == "annotate":
            return MarketSnapshot(equity=0.0, price=None)
        if self.broker.settles_instantly:  # a local book: read now, on the caller's clock
            return MarketSnapshot(
                equity=self.broker.equity(), price=reference, equity_source=f"{self.name} book"
            )
        try:
            reading = self.broker.equity_reading()
        except BrokerError as exc:
            log.warning("cannot read %s equity: %s", self.broker.name, exc)
            return MarketSnapshot(equity=None, price=reference, equity_error=str(exc))
        return MarketSnapshot(
            equity=reading.value,
            price=reference,
            equity_taken_at=reading.taken_at,
            equity_source=reading.source,
        )

    # --- inside the transaction (local records only) --------------------------------------------
    def book(self, conn: Connection, alert: Alert, view: AccountView) -> Book:
        """The account's records the decision of ``alert`` reads, through the transaction's
        ``conn``: positions, the symbol's unsettled orders, the strategy's newest alert time,
        marks, the equity marks of the drawdown and daily-loss limits, and the ATR when a level
        is given in ATR."""
        now = self.clock.now()
        symbol, terms = view.symbol, view.terms
        if symbol is None:
            return Book(now=now)
        newest = state_store.last_alert_time(conn, terms.id, symbol)
        if terms.mode == "annotate":
            return Book(newest_alert_at=newest, now=now)
        positions = tuple(order_store.list_positions(conn, self.broker.name))
        marks = {p.symbol: self.mark(conn, p) for p in positions if p.symbol != symbol}
        equity = view.snapshot.equity
        peak, day_start = self.equity_marks(
            conn, equity if equity is not None and math.isfinite(equity) else 0.0
        )
        atr_value = None
        if _mentions_atr(alert, terms):
            timeframe = from_tradingview(alert.interval, terms.timeframe)
            atr_value = atr(candle_store.recent_bars(conn, symbol, timeframe, ATR_BARS))
        return Book(
            positions=positions, pending=order_store.pending_exposure(conn, self.broker.name, symbol),
            newest_alert_at=newest, marks=marks, peak_equity=peak, day_start_equity=day_start,
            atr=atr_value, now=now,
        )  # fmt: skip

    def mark(self, db: Db, position: order_store.Position) -> float:
        """Another symbol's value per unit: its shared mark, else its entry price."""
        mark = mark_store.get_mark(db, self.broker.name, position.symbol)
        return mark.price if mark is not None else (position.avg_price or 0.0)

    def equity_marks(self, db: Db, current: float) -> tuple[float, float]:
        """(peak, start of day) from the equity snapshots, read from the file every time: two
        index look-ups inside the decision's transaction, so every worker applies the drawdown
        and daily-loss limits to the same numbers (a per-worker cache made them disagree)."""
        return order_store.equity_marks(db, self.broker.name, current, now=self.clock.now())

    def held(self, db: Db, symbol: str) -> float:
        """The signed position of ``symbol`` as ``db`` sees it."""
        return order_store.position_amount(db, self.broker.name, symbol)

    def note_equity(self, conn: Connection, equity: float | None) -> None:
        """Snapshot the account value for the drawdown and daily-loss limits, at most every
        EQUITY_TTL_S per broker (judged from the newest snapshot in the file, so all workers
        share one rhythm): a row per order would grow the table for nothing."""
        if equity is None or not math.isfinite(equity):
            return
        newest = order_store.newest_equity_at(conn, self.broker.name)
        if newest is not None and self.clock.now() - newest < EQUITY_TTL_S:
            return
        order_store.record_equity(conn, self.broker.name, equity, at=self.clock.now())

    # --- after the transaction -------------------------------------------------------------------
    def sync_soon(self, symbol: str) -> None:
        """Bring the exchange's resting exits of ``symbol`` in line with the book right after
        the answer: up to one order per exit, each with its own timeout and reconciliation,
        would not fit TradingView's 3 s beside the entry's own. The watcher does it again."""
        if self._exit_sync is not None:
            self._exit_sync.submit(self._sync_logged, symbol)

    def _sync_logged(self, symbol: str) -> None:
        try:
            sync_exits(self, symbol)
        except Exception:  # a background thread: say what broke; the watcher's next pass retries
            log.exception("placing the exits of %s failed; the exit watcher tries again", symbol)


def _mentions_atr(alert: Alert, strategy: StrategySettings) -> bool:
    """Whether any exit level the alert or the strategy gives may be in ATR (then the decision
    needs the ATR of the stored bars). A level given another way is never in ATR."""
    levels = (
        alert.stop_loss, alert.take_profit, alert.trailing_stop,
        strategy.stop_loss, strategy.take_profit, strategy.trailing_stop,
    )  # fmt: skip
    return any(level and "atr" in str(level).lower() for level in levels)
