"""The risk manager: may this order go out, and how big may it be?

It sees one proposed order and a snapshot of the portfolio and answers with a verdict: allowed
or not, the (possibly reduced) amount, and for every rule that acted a human sentence with the
numbers and a stable code. The engine records the verdict and returns it in the webhook
response, so a trader always learns why an order was cut or refused.

The rules, in the order they are checked:

1. ``no_size``: a zero, negative or non-finite amount is refused.
2. An order that only reduces or closes a position is always allowed: a risk limit must never
   trap a trader in a losing position. An order that flips a position (long 1, sell 3) is
   split: the closing part (1) is always allowed, the opening part (2) is checked below, and
   ``flip_limited`` notes when the limits cut the opening part.
3. Hard limits on new exposure, each refusing it outright (all that apply are reported):
   ``no_equity`` (equity at or below zero), ``leverage`` (above ``max_leverage``),
   ``drawdown`` ((peak - equity) / peak >= ``max_drawdown``), ``daily_loss`` ((day start -
   equity) / day start >= ``daily_loss_limit``, lifted at 00:00 UTC when the day restarts),
   ``cooldown`` (the symbol traded less than ``cooldown_seconds`` ago), ``max_open_positions``
   (a new symbol while ``max_open_positions`` are already open), ``invalid_stop`` (a stop on
   the wrong side of the price, or at it).
4. Size limits, each *reducing* the new exposure to fit, or refusing it when nothing fits:
   ``position_cap`` (the symbol's notional after the order may not exceed
   ``max_position_fraction`` x equity), ``risk_per_trade`` (amount x |price - stop| may not
   exceed ``risk_per_trade`` x equity), ``portfolio_risk`` (open risk + the new risk may not
   exceed ``max_portfolio_risk`` x equity).

An order without a stop is assumed to risk :data:`DEFAULT_STOP_FRACTION` of its price: without
it there is no way to bound the loss, and assuming no risk would let it bypass both risk rules.
Notional is counted without leverage (leverage changes the margin, not what is at stake).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from common.checks import require_finite
from engine.settings import RiskSettings

__all__ = [
    "DEFAULT_STOP_FRACTION",
    "PortfolioState",
    "RiskManager",
    "RiskVerdict",
    "TradeProposal",
]

#: The stop distance (fraction of price) assumed for an order that carries no stop loss. 5% is
#: a deliberately wide guess: more than the predictor's 2.5-ATR stop on hourly crypto candles
#: in ordinary markets, so an order without a stop is sized no larger than one with a stop.
DEFAULT_STOP_FRACTION = 0.05


@dataclass(frozen=True, kw_only=True)
class PortfolioState:
    """A snapshot of the account when the order is proposed."""

    #: Current account value in the quote currency.
    equity: float
    #: Highest equity seen, for the drawdown breaker (a lower value than ``equity`` is read as
    #: ``equity``: the peak is at least where we are now).
    peak_equity: float
    #: Equity at 00:00 UTC today, for the daily loss limit.
    day_start_equity: float
    #: Symbol -> signed base amount (0 or absent = flat).
    positions: Mapping[str, float] = field(default_factory=dict)
    #: Symbol -> absolute notional in quote at the current price (absent: |amount| x order price).
    position_notional: Mapping[str, float] = field(default_factory=dict)
    #: Quote at risk across open positions: sum of |entry - stop| x size.
    open_risk: float = 0.0
    #: Symbol -> epoch seconds of its last trade.
    last_trade_at: Mapping[str, float] = field(default_factory=dict)
    #: Epoch seconds now (a simulated clock in backtests).
    now: float

    def __post_init__(self) -> None:
        for name in ("equity", "peak_equity", "day_start_equity", "open_risk", "now"):
            require_finite(f"PortfolioState.{name}", getattr(self, name))
        if self.open_risk < 0:
            raise ValueError(f"PortfolioState.open_risk cannot be negative, got {self.open_risk}")
        for mapping_name in ("positions", "position_notional", "last_trade_at"):
            for symbol, value in getattr(self, mapping_name).items():
                require_finite(f"PortfolioState.{mapping_name}[{symbol!r}]", value)

    @property
    def open_symbols(self) -> frozenset[str]:
        """Symbols with a non-zero position."""
        return frozenset(s for s, amount in self.positions.items() if amount != 0)


@dataclass(frozen=True, kw_only=True)
class TradeProposal:
    """An order the engine would like to send, before risk limits."""

    symbol: str
    side: Literal["buy", "sell"]
    #: Base amount, positive.
    amount: float
    #: Expected fill price in quote.
    price: float
    #: Used for the risk per trade; None assumes :data:`DEFAULT_STOP_FRACTION` of the price.
    stop_loss: float | None = None
    leverage: float = 1.0

    def __post_init__(self) -> None:
        if not self.symbol:
            raise ValueError("TradeProposal.symbol must not be empty")
        if self.side not in ("buy", "sell"):
            raise ValueError(f"TradeProposal.side must be 'buy' or 'sell', got {self.side!r}")
        for name in ("price", "leverage"):
            require_finite(f"TradeProposal.{name}", getattr(self, name))
        if self.price <= 0:
            raise ValueError(f"TradeProposal.price must be positive, got {self.price}")
        if self.leverage <= 0:
            raise ValueError(f"TradeProposal.leverage must be positive, got {self.leverage}")
        if self.stop_loss is not None:
            require_finite("TradeProposal.stop_loss", self.stop_loss)


@dataclass(frozen=True)
class RiskVerdict:
    """The answer: whether anything may be sent, how much, and why (one reason per code)."""

    allowed: bool
    amount: float
    reasons: tuple[str, ...]
    codes: tuple[str, ...]


class _Notes:
    """Reasons and codes in the order the rules acted."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.codes: list[str] = []

    def add(self, code: str, reason: str) -> None:
        self.codes.append(code)
        self.reasons.append(reason)


def _pct(value: float) -> str:
    return f"{value:.1%}"


class RiskManager:
    """Applies :class:`engine.settings.RiskSettings` to proposed orders (rules in the module docstring)."""

    def __init__(self, limits: RiskSettings) -> None:
        self.limits = limits

    # --- public -----------------------------------------------------------------------------

    def check(self, proposal: TradeProposal, state: PortfolioState) -> RiskVerdict:
        """The verdict on ``proposal`` given ``state``; never raises for a limit, only for bad input."""
        notes = _Notes()
        amount = proposal.amount
        if not math.isfinite(amount) or amount <= 0:
            notes.add("no_size", f"order amount {amount!r} is not a positive size; nothing to send")
            return RiskVerdict(False, 0.0, tuple(notes.reasons), tuple(notes.codes))

        current = state.positions.get(proposal.symbol, 0.0)
        delta_sign = 1.0 if proposal.side == "buy" else -1.0
        # The part of the order that moves the position toward zero is never limited.
        closing = min(amount, abs(current)) if current * delta_sign < 0 else 0.0
        opening = amount - closing
        if opening <= 0:
            return RiskVerdict(True, amount, (), ())

        allowed_opening = self._size_new_exposure(proposal, state, opening, current, closing, notes)
        total = closing + allowed_opening
        if closing > 0 and allowed_opening < opening:
            notes.add(
                "flip_limited",
                f"{proposal.side} {amount:g} {proposal.symbol} would reverse the {current:+g} position; "
                f"the closing {closing:g} is always allowed, {allowed_opening:g} of the new "
                f"{opening:g} fits the limits",
            )
        return RiskVerdict(total > 0, total, tuple(notes.reasons), tuple(notes.codes))

    def kelly_size(self, kelly_fraction: float, equity: float, price: float) -> float:
        """Base amount for a Kelly fraction of equity, capped at ``max_position_fraction`` of equity.

        Zero when there is no edge (fraction <= 0) or no equity. The other limits (risk per
        trade, portfolio risk) depend on the stop and the portfolio, so :meth:`check` applies them.
        """
        for name, value in (("kelly_fraction", kelly_fraction), ("equity", equity), ("price", price)):
            require_finite(f"kelly_size.{name}", value)
        if price <= 0:
            raise ValueError(f"kelly_size.price must be positive, got {price}")
        if kelly_fraction <= 0 or equity <= 0:
            return 0.0
        fraction = min(kelly_fraction, self.limits.max_position_fraction)
        return fraction * equity / price

    # --- rules ------------------------------------------------------------------------------

    def _size_new_exposure(
        self,
        proposal: TradeProposal,
        state: PortfolioState,
        opening: float,
        current: float,
        closing: float,
        notes: _Notes,
    ) -> float:
        """How much of ``opening`` (new exposure in base units) the limits allow."""
        stop_distance = self._stop_distance(proposal, notes)
        self._hard_limits(proposal, state, current, notes)
        if notes.codes or stop_distance is None:
            return 0.0
        equity, price, symbol = state.equity, proposal.price, proposal.symbol
        lim = self.limits

        # Notional already held in the direction we are adding to (none after a flip).
        held = 0.0
        if closing == 0 and current != 0:
            held = state.position_notional.get(symbol, abs(current) * price)
        cap = lim.max_position_fraction * equity
        opening = self._fit(
            notes,
            "position_cap",
            opening,
            room=cap - held,
            per_unit=price,
            what=f"{symbol} notional",
            limit_text=f"{_pct(lim.max_position_fraction)} of equity {equity:.2f} = {cap:.2f}",
            used=held,
        )
        if opening == 0:
            return 0.0
        opening = self._fit(
            notes,
            "risk_per_trade",
            opening,
            room=lim.risk_per_trade * equity,
            per_unit=stop_distance,
            what="risk of this trade",
            limit_text=f"{_pct(lim.risk_per_trade)} of equity = {lim.risk_per_trade * equity:.2f}",
            used=0.0,
        )
        if opening == 0:
            return 0.0
        portfolio_cap = lim.max_portfolio_risk * equity
        return self._fit(
            notes,
            "portfolio_risk",
            opening,
            room=portfolio_cap - state.open_risk,
            per_unit=stop_distance,
            what="portfolio risk",
            limit_text=f"{_pct(lim.max_portfolio_risk)} of equity = {portfolio_cap:.2f}",
            used=state.open_risk,
        )

    @staticmethod
    def _fit(
        notes: _Notes,
        code: str,
        amount: float,
        *,
        room: float,
        per_unit: float,
        what: str,
        limit_text: str,
        used: float,
    ) -> float:
        """Reduce ``amount`` so that ``amount * per_unit <= room``; note it when it acts."""
        wanted = amount * per_unit
        if wanted <= room:
            return amount
        if room <= 0:
            notes.add(
                code,
                f"{what} is already {used:.2f}, at or over the limit of {limit_text}; new exposure refused",
            )
            return 0.0
        reduced = room / per_unit
        notes.add(
            code,
            f"{what} {used + wanted:.2f} would exceed {limit_text}; amount reduced from {amount:g} "
            f"to {reduced:g}",
        )
        return reduced

    @staticmethod
    def _stop_distance(proposal: TradeProposal, notes: _Notes) -> float | None:
        """|price - stop| in quote per base unit, or None (noted) when the stop is on the wrong side."""
        price, stop = proposal.price, proposal.stop_loss
        if stop is None:
            return DEFAULT_STOP_FRACTION * price
        wrong_side = stop >= price if proposal.side == "buy" else stop <= price
        if wrong_side:
            where = "below" if proposal.side == "buy" else "above"
            notes.add(
                "invalid_stop",
                f"stop loss {stop:g} is not {where} the {proposal.side} price {price:g}; "
                "a stop must limit the loss, new exposure refused",
            )
            return None
        return abs(price - stop)

    def _hard_limits(
        self, proposal: TradeProposal, state: PortfolioState, current: float, notes: _Notes
    ) -> None:
        lim = self.limits
        equity = state.equity
        if equity <= 0:
            notes.add("no_equity", f"equity is {equity:.2f}; no new exposure without funds")
        if proposal.leverage > lim.max_leverage:
            notes.add(
                "leverage",
                f"leverage {proposal.leverage:g}x is above the {lim.max_leverage:g}x limit; order refused",
            )
        peak = max(state.peak_equity, equity)
        if peak > 0:
            drawdown = (peak - equity) / peak
            if drawdown >= lim.max_drawdown:
                notes.add(
                    "drawdown",
                    f"drawdown {_pct(drawdown)} from the peak {peak:.2f} reached the "
                    f"{_pct(lim.max_drawdown)} limit; new exposure refused until equity recovers "
                    "(closing orders still go through)",
                )
        if state.day_start_equity > 0:
            daily_loss = (state.day_start_equity - equity) / state.day_start_equity
            if daily_loss >= lim.daily_loss_limit:
                notes.add(
                    "daily_loss",
                    f"daily loss {_pct(daily_loss)} reached the {_pct(lim.daily_loss_limit)} limit; "
                    "new exposure refused until 00:00 UTC",
                )
        last = state.last_trade_at.get(proposal.symbol)
        if last is not None and lim.cooldown_seconds > 0:
            elapsed = state.now - last
            if elapsed < lim.cooldown_seconds:
                notes.add(
                    "cooldown",
                    f"{proposal.symbol} traded {elapsed:.0f}s ago, within its {lim.cooldown_seconds:g}s "
                    f"cooldown; new exposure refused for another {lim.cooldown_seconds - elapsed:.0f}s",
                )
        open_symbols = state.open_symbols
        if current == 0 and len(open_symbols) >= lim.max_open_positions:
            notes.add(
                "max_open_positions",
                f"{len(open_symbols)} positions are open, the limit is {lim.max_open_positions}; "
                f"no new position in {proposal.symbol}",
            )
