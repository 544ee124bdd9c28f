"""The bundled Pine strategy (``pine/ml_enhanced_strategy.pine``) replayed in Python.

Two parts, both as the script behaves on TradingView:

* :func:`pine_signals`: its indicators and checks on every bar (RSI, Bollinger position, ATR,
  EMA 20/50 from ``common.indicators``, the one implementation: its finite-window Wilder
  and EMA averages leave out under 2% of the weight Pine's ``ta.*`` carry from the start of the
  chart, so a rule at its threshold can flip on a rare bar), the nine long and nine short
  checks, the proxy probability and Kelly fraction, and ``longSignal`` / ``shortSignal``;
* :func:`replay_orders`: the strategy's own position. An entry decided at a bar's close fills
  at the next bar's open (``process_orders_on_close=false``), reversing an open position in one
  order; the 2.5×ATR stop and 3.5×ATR target set at the entry act when a *later* bar's range
  crosses them (:func:`engine.exits.check_level`, the gateway's own rule: at the level, or at
  the open when the bar gapped through it; the stop first when one bar crosses both). Each
  fill is one :class:`PineOrder`, the alert the script sends.

The script's position is its own: TradingView keeps it whatever the gateway decides, so the
alerts are the same for every arm of a backtest and only the decisions differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from common import indicators
from common.kelly import kelly_fraction
from engine.exits import Bar, check_level

__all__ = ["PineInputs", "PineOrder", "pine_signals", "replay_orders"]

PineAction = Literal["buy", "sell", "reverse", "close_long", "close_short"]


@dataclass(frozen=True)
class PineInputs:
    """The script's inputs, with its defaults."""

    confidence_threshold: float = 0.65
    sentiment_score: float = 0.0
    sentiment_weight: float = 0.2
    max_position_pct: float = 10.0
    kelly_multiplier: float = 0.5
    stop_atr: float = 2.5
    take_profit_atr: float = 3.5
    rsi_length: int = 14
    bb_length: int = 20
    bb_mult: float = 2.0
    atr_length: int = 14
    initial_capital: float = 10_000.0
    commission: float = 0.001  # commission_value=0.1 (percent)


@dataclass(frozen=True)
class PineOrder:
    """One filled order of the script: the alert it sends, in the script's own terms."""

    bar: int  # row of the bar it filled in
    at: pd.Timestamp  # when it filled: the bar open for entries, inside the bar for exits
    action: PineAction
    side: Literal["buy", "sell"]
    qty: float
    price: float
    position_size: float  # the script's position after the order (signed)
    prev_position: float
    order_id: str
    signal_bar: int  # the closed bar the decision was made on
    confidence: float
    kelly: float
    technical_score: float


def pine_signals(df: pd.DataFrame, inputs: PineInputs = PineInputs()) -> pd.DataFrame:
    """Per bar: ``long_checks``, ``short_checks``, ``p_long``, ``long_signal``, ``short_signal``,
    ``atr``, ``kelly_long``, ``kelly_short``, ``fraction_long``, ``fraction_short``."""
    close, open_ = df["close"], df["open"]
    c, h, low = (df[k].to_numpy(dtype=float) for k in ("close", "high", "low"))

    def series(values: np.ndarray) -> pd.Series:
        return pd.Series(values, index=df.index)

    r = series(indicators.rsi(c, inputs.rsi_length))
    lower, upper = (series(band) for band in indicators.bollinger_bands(c, inputs.bb_length, inputs.bb_mult))
    width = upper - lower
    position = ((close - lower) / width).where(width > 0, 0.5)
    atr = series(indicators.atr(h, low, c, inputs.atr_length))
    fast, slow = series(indicators.ema(c, 20)), series(indicators.ema(c, 50))
    prev_r = r.shift(1)

    def count(*checks: pd.Series) -> pd.Series:
        return sum((c.fillna(False).astype(bool)).astype(int) for c in checks)

    long_checks = count(fast > slow, close > slow, r < 50, r < 35, r > prev_r, position < 0.5,
                        position < 0.2, close > open_, close > close.shift(1))  # fmt: skip
    short_checks = count(fast < slow, close < slow, r > 50, r > 65, r < prev_r, position > 0.5,
                         position > 0.8, close < open_, close < close.shift(1))  # fmt: skip
    edge = (long_checks - short_checks) / 9.0
    proxy = (1 - inputs.sentiment_weight) * edge + inputs.sentiment_weight * inputs.sentiment_score
    p_long = 1 / (1 + np.exp(-3.0 * proxy))
    reward_risk = inputs.take_profit_atr / inputs.stop_atr

    def kelly(p: pd.Series) -> pd.Series:
        return (inputs.kelly_multiplier * kelly_fraction(p, reward_risk)).clip(-1.0, 1.0)

    kelly_long, kelly_short = kelly(p_long), kelly(1 - p_long)
    cap = inputs.max_position_pct / 100
    ready = atr.notna()
    return pd.DataFrame(
        {
            "long_checks": long_checks, "short_checks": short_checks, "p_long": p_long,
            "long_signal": ready & (p_long >= inputs.confidence_threshold),
            "short_signal": ready & (1 - p_long >= inputs.confidence_threshold),
            "atr": atr, "kelly_long": kelly_long, "kelly_short": kelly_short,
            "fraction_long": kelly_long.clip(0.0, cap), "fraction_short": kelly_short.clip(0.0, cap),
        },
        index=df.index,
    )  # fmt: skip


@dataclass
class _Book:
    """The script's position and equity (its own, at TradingView's commission)."""

    cash: float
    position: float = 0.0
    stop: float = float("nan")
    target: float = float("nan")

    def fill(self, signed_qty: float, price: float, commission: float) -> None:
        self.cash -= signed_qty * price + abs(signed_qty) * price * commission
        self.position += signed_qty


def replay_orders(
    df: pd.DataFrame, first: int, last: int, inputs: PineInputs = PineInputs(), step_s: int = 3600
) -> list[PineOrder]:
    """The orders the script fills on bars ``first`` .. ``last - 1`` of ``df`` (it starts flat at
    ``first``; decisions made on bar ``first - 1`` are not taken, the script was not running)."""
    signals = pine_signals(df, inputs)
    o, h, lo, c = (df[k].to_numpy(dtype=float) for k in ("open", "high", "low", "close"))
    long_sig, short_sig = signals["long_signal"].to_numpy(), signals["short_signal"].to_numpy()
    atr = signals["atr"].to_numpy()
    book = _Book(cash=inputs.initial_capital)
    orders: list[PineOrder] = []
    pending: tuple[int, int, float] | None = None  # (side, signal bar, qty)
    half_bar = pd.Timedelta(seconds=step_s // 2)
    for j in range(first, last):
        if pending is not None:
            side, signal_bar, qty = pending
            orders.append(_entry(df, signals, book, j, side, signal_bar, qty, o[j], inputs))
            pending = None
        exit_order = _exit(df, signals, book, j, (o[j], h[j], lo[j]), inputs, df.index[j] + half_bar)
        if exit_order is not None:
            orders.append(exit_order)
        if j + 1 >= last:
            break
        equity = book.cash + book.position * c[j]
        if long_sig[j] and book.position <= 0:
            qty = equity * float(signals["fraction_long"].iat[j]) / c[j]
            if qty > 0:
                pending = (1, j, qty)
                book.stop, book.target = (
                    c[j] - inputs.stop_atr * atr[j],
                    c[j] + inputs.take_profit_atr * atr[j],
                )
        elif short_sig[j] and book.position >= 0:
            qty = equity * float(signals["fraction_short"].iat[j]) / c[j]
            if qty > 0:
                pending = (-1, j, qty)
                book.stop, book.target = (
                    c[j] + inputs.stop_atr * atr[j],
                    c[j] - inputs.take_profit_atr * atr[j],
                )
    return orders


def _entry(
    df: pd.DataFrame, signals: pd.DataFrame, book: _Book, j: int, side: int, signal_bar: int, qty: float,
    price: float, inputs: PineInputs,
) -> PineOrder:  # fmt: skip
    """The entry decided on ``signal_bar``, filled at bar ``j``'s open (reversing if needed)."""
    prev = book.position
    reverses = prev * side < 0
    book.fill(side * qty - prev, price, inputs.commission)
    name = "long" if side > 0 else "short"
    p_long = float(signals["p_long"].iat[signal_bar])
    action: PineAction = "reverse" if reverses else ("buy" if side > 0 else "sell")
    return PineOrder(
        bar=j, at=df.index[j], action=action, side="buy" if side > 0 else "sell",
        qty=abs(side * qty - prev), price=price, position_size=book.position, prev_position=prev,
        order_id="Long" if side > 0 else "Short", signal_bar=signal_bar,
        confidence=float(p_long if side > 0 else 1 - p_long),
        kelly=float(signals[f"kelly_{name}"].iat[signal_bar]),
        technical_score=float(signals[f"{name}_checks"].iat[signal_bar]),
    )  # fmt: skip


def _exit(
    df: pd.DataFrame, signals: pd.DataFrame, book: _Book, j: int, bar: tuple[float, float, float],
    inputs: PineInputs, at: pd.Timestamp,
) -> PineOrder | None:  # fmt: skip
    """The stop or target of the open position, when bar ``j`` (open, high, low) reaches it;
    the alert fires inside the bar (``at``), after the bar's opening entry if there was one."""
    open_, high, low = bar
    if book.position == 0:
        return None
    long = book.position > 0
    # The gateway's own fill rule (at the level, or at the open when the bar gapped through it);
    # the stop first when one bar crosses both, as the script's strategy.exit does.
    seen, side = Bar(0, open_, high, low), "buy" if long else "sell"
    price = check_level(side, book.stop, seen, profit=False)
    if price is None:
        price = check_level(side, book.target, seen, profit=True)
    if price is None:
        return None
    prev = book.position
    book.fill(-prev, price, inputs.commission)
    # The exit's proxy values are those of the side it trades (a close_long sells).
    name = "short" if long else "long"
    p_side = signals["p_long"].iat[j - 1]
    return PineOrder(
        bar=j, at=at, action="close_long" if long else "close_short",
        side="sell" if long else "buy", qty=abs(prev), price=price, position_size=0.0, prev_position=prev,
        order_id="Long exit" if long else "Short exit", signal_bar=j - 1,
        confidence=float(1 - p_side if long else p_side), kelly=float(signals[f"kelly_{name}"].iat[j - 1]),
        technical_score=float(signals[f"{name}_checks"].iat[j - 1]),
    )  # fmt: skip
