"""The decision for one account: what to do with one alert, given what is known. Pure: no
storage, no network, no clock.

Everything it reads is handed in, gathered by the caller: what the broker says about the market
(:class:`MarketFacts`, read before the write transaction, since it may need the network) and the
account's own records (:class:`Book`, read inside the alert's write transaction, so that two
workers never decide on the same stale position). The same inputs always give the same
:class:`~engine.decision.Decision`, so the backtest and the live gateway decide alike, and a
test can state a case without a database.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.timeframes import from_tradingview
from engine.alert import Action, Alert
from engine.brokers.base import ExitHolder, MarginMode, MarketLimits, Side
from engine.decision import (
    Decision,
    DecisionStatus,
    MarketSnapshot,
    PlannedOrder,
    SignalPort,
    agrees_with,
    has_opinion,
    judged_probability,
    probability_for,
    stop_for,
)
from engine.exceptions import BrokerError, UnknownSymbolError
from engine.exits import ExitPlan, Level, Target, parse_level, parse_targets
from engine.hybrid import HYBRID_ENTRY_SCORE, ml_bonus
from engine.risk import DEFAULT_STOP_FRACTION, PortfolioState, RiskManager, TradeProposal
from engine.settings import StrategySettings
from engine.symbols import is_contract
from storage.orders import Position

__all__ = [
    "EPSILON",
    "NO_PRICE_HINT",
    "Book",
    "MarketFacts",
    "decide",
    "fit_to_market",
    "order_matters",
    "pure_exit",
]

#: How to give the gateway a market price, said wherever one is missing.
NO_PRICE_HINT = (
    "fill the candle store (`tvgw data fetch`), send bars in the alerts (time, open, high, low, "
    "close, volume), or set TVGW_MARKET_DATA"
)

#: Position differences smaller than this (in base units) count as "already there".
EPSILON = 1e-9


@dataclass(frozen=True, kw_only=True)
class MarketFacts:
    """What the account's broker says about the alert's market, read before the transaction.

    ``symbol`` is the unified market (None when the broker could not resolve the ticker, with
    ``symbol_error`` saying why); ``limits`` its order limits (None with ``limits_error`` when
    they could not be read); ``exit_holder`` who would hold an entry's exits there."""

    symbol: str | None
    symbol_error: BrokerError | None = None
    limits: MarketLimits | None = None
    limits_error: str | None = None
    #: When the limits were read (an exchange's market table, loaded in the background), and from.
    limits_taken_at: float | None = None
    limits_source: str | None = None
    exit_holder: ExitHolder | None = None
    #: Whether the account can hold a short on this market (a perpetual, the paper book); a spot
    #: market on an exchange cannot: selling from flat would sell coins the gateway never bought.
    shortable: bool = True


@dataclass(frozen=True, kw_only=True)
class Book:
    """The account's own records the decision reads, as the alert's transaction sees them."""

    #: Every open position of the account.
    positions: tuple[Position, ...] = ()
    #: Signed amount of the symbol's orders whose fills are not recorded yet.
    pending: float = 0.0
    #: When the newest alert of this strategy and symbol was applied (epoch seconds).
    newest_alert_at: float | None = None
    #: Each open position's value per unit: its shared mark, else its entry price.
    marks: Mapping[str, float] | None = None
    #: Highest equity seen and equity at the start of the UTC day (drawdown, daily loss).
    peak_equity: float = 0.0
    day_start_equity: float = 0.0
    #: The ATR of the stored bars of the alert's timeframe (None: too few bars).
    atr: float | None = None
    #: The clock's time when the book was read.
    now: float = 0.0


@dataclass(frozen=True)
class _Plan:
    target: float | None
    reason: str


def decide(
    alert: Alert,
    strategy: StrategySettings,
    snapshot: MarketSnapshot,
    signal: SignalPort | None,
    *,
    market: MarketFacts,
    book: Book,
    risk: RiskManager,
    account: str,
) -> Decision:
    """What to do with ``alert`` on ``account`` (its broker's name), trading by ``strategy``'s
    terms under ``risk``'s limits. Returns a decision with a planned order, or the reason for
    none."""
    ml = signal if has_opinion(signal) else None
    known: dict[str, Any] = {"mode": strategy.mode, "action": alert.action.value}

    def outcome(status: DecisionStatus, reason: str, **extra: Any) -> Decision:
        return Decision(status=status, reason=reason, **known, **extra)

    if market.symbol is None:
        error = market.symbol_error
        if isinstance(error, UnknownSymbolError):
            return outcome("rejected", str(error))
        return outcome("failed", f"{account}: {error}")
    symbol = market.symbol
    known["symbol"] = symbol
    stamp = alert.timenow or alert.time
    if stamp is not None and order_matters(alert, strategy):
        newest = book.newest_alert_at
        if newest is not None and stamp.timestamp() < newest:
            return outcome("rejected", f"out of order: a newer alert (at {newest:.0f}) was already applied")
    if strategy.mode == "annotate":
        return outcome("annotated", "strategy mode is annotate: recorded only")
    reference = snapshot.price
    if reference is None:
        return outcome("rejected", f"no market price for {symbol}: {NO_PRICE_HINT}")
    price = reference.price
    known["details"] = {
        "price": {"reference": price, "source": reference.source, "age_s": reference.age(book.now),
                  "alert": alert.price},
    }  # fmt: skip
    if snapshot.equity is None or not math.isfinite(snapshot.equity):
        why = snapshot.equity_error or f"it is {snapshot.equity}"
        return outcome(
            "failed", f"cannot read a finite account equity from {account} ({why}); not trading blind"
        )
    known["details"]["equity"] = {
        "value": snapshot.equity, "age_s": _age(snapshot.equity_taken_at, book.now),
        "source": snapshot.equity_source,
    }  # fmt: skip
    positions = book.positions
    held = next((p.amount for p in positions if p.symbol == symbol), 0.0)
    current = held + book.pending
    leverage, margin_mode = leverage_for(alert, strategy, ml, symbol)
    contract = is_contract(symbol)
    plan = _plan(alert, strategy, snapshot, ml, current, price, risk, leverage if contract else 1.0)
    if plan.target is not None and plan.target < -EPSILON and not market.shortable:
        if current <= EPSILON:
            field = (
                "target_position"
                if strategy.target_position and alert.target_position is not None
                else "action"
            )
            known.update(current_position=current, target_position=plan.target)
            return outcome(
                "rejected", _spot_short(alert, symbol, account, field), refusal=("spot_short", field)
            )
        plan = _Plan(0.0, f"{plan.reason}; {symbol} is a spot market: sold down to flat, never short")
    known.update(current_position=current, target_position=plan.target)
    if plan.target is None:
        return outcome("rejected", plan.reason)
    delta = plan.target - current
    if abs(delta) <= EPSILON:
        return outcome("annotated", f"already at target position ({current:g})")
    side: Side = "buy" if delta > 0 else "sell"
    gate = _gate(alert, strategy, signal, ml, side, current, plan.target)
    if gate is not None:
        return outcome("annotated" if gate[0] else "rejected", gate[1])
    reduces = abs(plan.target) <= abs(current) and (plan.target == 0 or (plan.target > 0) == (current > 0))
    amount = abs(delta)
    if reduces:
        # A close never asks for more than the account holds: what is booked, not what open
        # orders may still bring (their fills are booked, and protected, as they come).
        amount = min(amount, abs(held)) if held * current > 0 else 0.0
        if amount <= EPSILON:
            return outcome(
                "rejected",
                f"nothing filled to close on {symbol} yet: {current - held:+g} is still open on {account} "
                "(the gateway books what fills and arms its exits)",
            )
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
            exits = exit_plan(alert, strategy, ml, side, price, book.atr)
        except ValueError as exc:
            return outcome("rejected", f"exits: {exc}")
        stop = exits.stop if exits.stop is not None else stop
        if not exits.empty:
            holder = market.exit_holder or ExitHolder(False, "no exit holder was read")
            known["details"]["exits"] = {
                **exits.to_dict(), "watched": not holder.on_exchange, "held_by": holder.held_by,
                "held_because": holder.reason,
            }  # fmt: skip
    if not reduces:
        verdict = risk.check(
            TradeProposal(
                symbol=symbol, side=side, amount=amount, price=price, stop_loss=stop, leverage=leverage
            ),
            _portfolio(snapshot, book, symbol, price),
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
    amount, problem = fit_to_market(market, symbol, amount, price, reduces)
    if market.limits is not None:
        known["details"]["market_limits"] = {
            "age_s": _age(market.limits_taken_at, book.now), "source": market.limits_source,
        }  # fmt: skip
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


def _spot_short(alert: Alert, symbol: str, account: str, field: str) -> str:
    """Why a short on a spot market is refused, and what to send instead."""
    return (
        f"{field}: {alert.action.value} from a flat position would open a short, and {symbol} on "
        f"{account} is a spot market: it would sell coins the gateway never bought and book a short the "
        "exchange does not hold. Send close_long to exit a long, or trade the perpetual "
        f"({alert.ticker.split(':')[-1]}.P) to go short"
    )


def fit_to_market(
    market: MarketFacts, symbol: str, amount: float, price: float, reduces: bool
) -> tuple[float, str | None]:
    """The amount rounded down to the market's step, or why the market would refuse it.
    An exit smaller than the market minimum says so rather than leaving a silent remainder."""
    if market.limits is None:
        return 0.0, f"cannot read the market limits of {symbol}: {market.limits_error}"
    fitted, problem = market.limits.fit(amount, price)
    if problem is not None:
        kind = "exit" if reduces else "order"
        return fitted, f"{kind} of {amount:.10g} {symbol} not sent: {problem}"
    return fitted, None


def _age(taken_at: float | None, now: float) -> float:
    """Seconds between a reading and the decision (0 for one read just now, ``taken_at`` None)."""
    return 0.0 if taken_at is None else round(max(0.0, now - taken_at), 3)


def leverage_for(
    alert: Alert, strategy: StrategySettings, ml: SignalPort | None, symbol: str
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


def _kelly_size(
    fraction: float, whose: str, equity: float | None, price: float, risk: RiskManager
) -> tuple[float | None, str]:
    """``fraction`` of equity in base units (:meth:`RiskManager.kelly_size`: capped at the
    position limit); no order when the fraction sees no edge."""
    if fraction <= 0:
        return None, f"{whose} Kelly fraction is {fraction:g}: no edge, no order"
    return risk.kelly_size(fraction, equity or 0.0, price), f"{whose} Kelly fraction {fraction:.3f} of equity"


def _plan(
    alert: Alert,
    strategy: StrategySettings,
    snapshot: MarketSnapshot,
    ml: SignalPort | None,
    current: float,
    price: float,
    risk: RiskManager,
    leverage: float = 1.0,
) -> _Plan:
    """The position the alert asks for, sized by the strategy's rule (``leverage`` times
    the margin a quote or Kelly rule spends, on a perpetual)."""
    action = alert.action
    if alert.close_percent is not None:
        return _partial_close(action, current, alert.close_percent / 100)
    target_from_alert = alert.intended_position if strategy.target_position else None
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
    side: Side = (
        "buy"
        if (target_from_alert > 0 if target_from_alert is not None else action == Action.BUY)
        else "sell"
    )
    size, why = _size(alert, strategy, snapshot, ml, price, side, risk, leverage)
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
    alert: Alert,
    strategy: StrategySettings,
    snapshot: MarketSnapshot,
    ml: SignalPort | None,
    price: float,
    side: Side,
    risk: RiskManager,
    leverage: float = 1.0,
) -> tuple[float | None, str]:
    """Order size in base units by the strategy's sizing rule, or None with the reason.
    A quote amount or a Kelly fraction is the margin: the position is ``leverage`` times it
    (the risk manager then judges that notional); contracts are the position itself.

    ``kelly`` sizing takes the model's Kelly fraction of the side traded (``side``): a sell
    against a bullish model is sized with the short side's, from 1 - p (usually 0: no order).
    ``alert`` sizing takes the alert's contracts; an alert without them that carries a
    ``kelly_fraction`` (the short "ML enhanced" message) is sized by that fraction of equity,
    so the message trades out of the box, capped by the risk manager like any order."""
    levered = f" at {leverage:g}x" if leverage != 1 else ""
    if strategy.sizing == "kelly" and ml is not None:
        whose = "the model's " + ("long" if side == "buy" else "short") + "-side"
        size, why = _kelly_size(ml.kelly_for(side), whose, snapshot.equity, price, risk)
        return (None if size is None else size * leverage), why + levered
    if strategy.sizing == "fixed_quote":
        amount = strategy.quote_amount * leverage / price
        return amount, f"{strategy.quote_amount:g} quote per trade{levered}"
    if alert.contracts is not None and alert.contracts > 0:
        return alert.contracts, "sized by the alert's contracts"
    if alert.kelly_fraction is not None:
        size, why = _kelly_size(alert.kelly_fraction, "the alert's", snapshot.equity, price, risk)
        return (None if size is None else size * leverage), why + levered
    return None, "the alert has neither contracts nor kelly_fraction to size the order with"


def _gate(
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
            return True, f"ml_gate: model disagrees (P(up)={judged_probability(ml):.2f} for a {side})"
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


def _portfolio(snapshot: MarketSnapshot, book: Book, symbol: str, price: float) -> PortfolioState:
    """The account as the risk manager sees it. A position without a recorded stop counts
    as risking DEFAULT_STOP_FRACTION of its notional (the risk manager's own assumption)."""
    notional, open_risk = {}, 0.0
    marks = book.marks or {}
    for p in book.positions:
        mark = price if p.symbol == symbol else marks.get(p.symbol, p.avg_price or 0.0)
        notional[p.symbol] = abs(p.amount) * mark
        if p.stop_loss is not None and p.avg_price:
            open_risk += abs(p.avg_price - p.stop_loss) * abs(p.amount)
        else:
            open_risk += DEFAULT_STOP_FRACTION * notional[p.symbol]
    equity = snapshot.equity or 0.0
    return PortfolioState(
        equity=equity,
        peak_equity=book.peak_equity,
        day_start_equity=book.day_start_equity,
        positions={p.symbol: p.amount for p in book.positions},
        position_notional=notional,
        open_risk=open_risk,
        last_trade_at={p.symbol: p.updated_at for p in book.positions if p.updated_at is not None},
        now=book.now,
    )


def exit_plan(
    alert: Alert,
    strategy: StrategySettings,
    ml: SignalPort | None,
    side: Side,
    price: float,
    atr_value: float | None,
) -> ExitPlan:
    """The entry's stop, targets and trailing stop, each from the first source that gives
    it: the alert, the ML signal (its stop and target, moved to this price), the strategy.
    Raises ValueError (the alert is refused with it) for a level on the wrong side of the
    entry or an ATR level without the bars to measure it (``atr_value`` None)."""
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
    stop = stop_level.price(price, side, profit=False, atr_value=atr_value) if stop_level else None
    prices = tuple((t.level.price(price, side, profit=True, atr_value=atr_value), t.share) for t in targets)
    _check_sides(side, price, stop, prices)
    trail = None if trail_level is None else trail_level.distance(price, atr_value)
    if trail is not None and not 0 < trail < price:
        raise ValueError(f"trailing_stop {trail_level} is no distance below the entry at {price:g}")
    ordered = tuple(sorted(prices, key=lambda p: p[0], reverse=side == "sell"))
    return ExitPlan(
        side=side, entry=price, stop=stop, targets=ordered, trail=trail, sources=sources,
        break_even=strategy.break_even,
    )  # fmt: skip


def order_matters(alert: Alert, strategy: StrategySettings) -> bool:
    """Whether a late alert must not act: a target position or an absolute action (close,
    reverse) is superseded by a newer one, while buy/sell deltas add up in any order."""
    if strategy.target_position and alert.intended_position is not None:
        return True
    return alert.action not in (Action.BUY, Action.SELL)


def pure_exit(alert: Alert, strategy: StrategySettings) -> bool:
    """Whether the alert can only reduce exposure, whatever the position: a close, or a flat
    target. (A ``sell`` may reduce a long or open a short, so it is not one.)"""
    if alert.action in (Action.CLOSE_LONG, Action.CLOSE_SHORT, Action.CLOSE_ALL):
        return True
    return strategy.target_position and alert.intended_position == 0.0


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


def _pyramiding_refusal(strategy: StrategySettings, held: Position | None, target: float) -> str | None:
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
