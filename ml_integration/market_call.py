"""The market call: turn an ML direction probability into a signal, a leverage and ATR stops.

The ML side (``ml_integration``) says how likely the market is to rise and how sure it is;
this module says what a trader would do about it: which of five signals it is, how much
leverage that confidence earns in the current volatility, where the stop loss and the take
profit go, and what the trade's risk/reward is. It is pure arithmetic over numbers the
caller supplies, so the engine, backtests and tests all get the same answer.

``realized_volatility`` computes the market's volatility from a candle frame; the ATR is the
feature pipeline's (:func:`common.indicators.atr`), the one the signal's stops use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import numpy as np
import pandas as pd

from common.checks import require_finite
from common.indicators import require_ohlcv
from common.timeframes import SECONDS_PER_YEAR

__all__ = [
    "HIGH_VOLATILITY",
    "LEVERAGE_CEILING",
    "MarketCall",
    "SignalType",
    "leverage_for",
    "predict_market",
    "realized_volatility",
]

#: No call ever asks for more than this, whatever the configuration says.
LEVERAGE_CEILING = 10.0

#: Annualised volatility at which leverage falls back to 1x. On Binance BTC/USDT hourly candles
#: 2017-08..2022-10 the 24-bar realised volatility had median 0.57 and 95th percentile 1.63, and
#: was at or above 1.5 in 6.2% of windows (``python -m bench.bench_market_inputs``).
HIGH_VOLATILITY = 1.5

#: A stop-out may cost at most this fraction of the position's margin. At leverage L a stop at
#: distance d (fraction of price) loses L*d of the margin; keeping that at or below one half
#: keeps the stop well clear of the exchange's liquidation price.
MAX_MARGIN_LOSS_AT_STOP = 0.5



class SignalType(StrEnum):
    STRONG_BUY = "STRONG_BUY"
    BUY = "BUY"
    HOLD = "HOLD"
    SELL = "SELL"
    STRONG_SELL = "STRONG_SELL"


Direction = Literal["long", "short", "flat"]

_DIRECTION: dict[SignalType, Direction] = {
    SignalType.STRONG_BUY: "long",
    SignalType.BUY: "long",
    SignalType.HOLD: "flat",
    SignalType.SELL: "short",
    SignalType.STRONG_SELL: "short",
}


@dataclass(frozen=True)
class MarketCall:
    """What to do and how: a flat (HOLD) call has leverage 1 and no stops."""

    signal_type: SignalType
    direction: Direction
    leverage: float
    stop_loss: float | None
    take_profit: float | None
    risk_reward: float | None
    reason: str


def leverage_for(
    *,
    confidence: float,
    volatility: float,
    max_leverage: float,
    stop_fraction: float = 0.0,
    high_volatility: float = HIGH_VOLATILITY,
) -> float:
    """Leverage earned by ``confidence`` in ``volatility``:

    ``L = 1 + (cap - 1) * confidence * max(0, 1 - volatility / high_volatility)``

    where ``cap = min(max_leverage, 10)``. So 1x at zero confidence or at/above
    ``high_volatility``, ``cap`` only at full confidence in a still market; it rises with
    confidence and never rises with volatility. Then, because a stop that sits beyond the
    liquidation price is no stop at all, ``L`` is cut to ``0.5 / stop_fraction`` (a stop-out
    costs at most half the margin), never below 1x.
    """
    require_finite("confidence", confidence, low=0.0, high=1.0)
    require_finite("volatility", volatility, low=0.0)
    require_finite("max_leverage", max_leverage, low=1.0)
    require_finite("stop_fraction", stop_fraction, low=0.0)
    require_finite("high_volatility", high_volatility)
    if high_volatility <= 0:
        raise ValueError(f"high_volatility must be positive, got {high_volatility}")
    cap = min(max_leverage, LEVERAGE_CEILING)
    calm = max(0.0, 1.0 - volatility / high_volatility)
    leverage = 1.0 + (cap - 1.0) * confidence * calm
    if stop_fraction > 0:
        leverage = min(leverage, MAX_MARGIN_LOSS_AT_STOP / stop_fraction)
    return max(1.0, leverage)


def _signal_for(p: float, threshold: float, strong_threshold: float) -> SignalType:
    # Compare p(down) = 1 - p with the same thresholds rather than p with 1 - threshold: in
    # floating point 1 - 0.55 is 0.44999999999999996, which would make p = 0.45 a HOLD.
    down = 1.0 - p
    if p >= strong_threshold:
        return SignalType.STRONG_BUY
    if p >= threshold:
        return SignalType.BUY
    if down >= strong_threshold:
        return SignalType.STRONG_SELL
    if down >= threshold:
        return SignalType.SELL
    return SignalType.HOLD


def predict_market(
    *,
    direction_probability: float,
    confidence: float,
    price: float,
    atr: float,
    volatility: float,
    max_leverage: float,
    stop_atr: float = 2.5,
    take_profit_atr: float = 3.5,
    strong_threshold: float = 0.7,
    threshold: float = 0.55,
    high_volatility: float = HIGH_VOLATILITY,
) -> MarketCall:
    """The market call for one symbol now.

    Signals are symmetric around 0.5: ``p >= strong_threshold`` is STRONG_BUY, ``p >=
    threshold`` BUY, ``p <= 1 - strong_threshold`` STRONG_SELL, ``p <= 1 - threshold`` SELL,
    anything between is HOLD. ``volatility`` is annualised (see :func:`realized_volatility`);
    leverage follows :func:`leverage_for`. A long's stop is ``price - stop_atr*ATR`` and its
    target ``price + take_profit_atr*ATR`` (mirrored for a short), so the risk/reward is
    ``take_profit_atr / stop_atr`` (1.4 with the defaults). A short whose target would be at or
    below zero gets no take profit (and no risk/reward) rather than an impossible price.
    """
    require_finite("direction_probability", direction_probability, low=0.0, high=1.0)
    require_finite("confidence", confidence, low=0.0, high=1.0)
    require_finite("price", price)
    require_finite("atr", atr)
    require_finite("stop_atr", stop_atr)
    require_finite("take_profit_atr", take_profit_atr)
    if price <= 0:
        raise ValueError(f"price must be positive, got {price}")
    if atr <= 0:
        raise ValueError(
            f"atr must be positive to place ATR stops, got {atr}; a zero ATR means candles with no range"
        )
    if stop_atr <= 0 or take_profit_atr <= 0:
        raise ValueError(
            f"stop_atr and take_profit_atr must be positive, got {stop_atr} and {take_profit_atr}"
        )
    if not 0.5 < threshold <= strong_threshold <= 1.0:
        raise ValueError(
            f"thresholds must satisfy 0.5 < threshold <= strong_threshold <= 1, got threshold={threshold} "
            f"and strong_threshold={strong_threshold}"
        )

    p, price, atr = float(direction_probability), float(price), float(atr)
    signal = _signal_for(p, threshold, strong_threshold)
    direction = _DIRECTION[signal]
    where = f"p(up)={p:.3f} with thresholds {threshold:.2f}/{strong_threshold:.2f}"
    if direction == "flat":
        return MarketCall(signal, "flat", 1.0, None, None, None, f"{signal}: {where}; no position")

    sign = 1.0 if direction == "long" else -1.0
    stop_loss = price - sign * stop_atr * atr
    take_profit: float | None = price + sign * take_profit_atr * atr
    if stop_loss <= 0:
        raise ValueError(
            f"a {direction} stop {stop_atr} ATR from {price} would be at {stop_loss:.8g}; ATR {atr} is "
            "larger than the price allows — check the candles"
        )
    leverage = leverage_for(
        confidence=confidence,
        volatility=volatility,
        max_leverage=max_leverage,
        stop_fraction=stop_atr * atr / price,
        high_volatility=high_volatility,
    )
    risk_reward: float | None = None
    target = "no take profit (it would be at or below zero)"
    if take_profit is not None and take_profit <= 0:
        take_profit = None
    if take_profit is not None:
        risk_reward = abs(take_profit - price) / abs(price - stop_loss)
        target = f"TP {take_profit:.8g} ({take_profit_atr} ATR), R:R {risk_reward:.2f}"
    reason = (
        f"{signal}: {where}; leverage {leverage:.2f}x from confidence {confidence:.2f} and "
        f"volatility {volatility:.0%}/yr (cap {min(max_leverage, LEVERAGE_CEILING):g}x); "
        f"SL {stop_loss:.8g} ({stop_atr} ATR), {target}"
    )
    return MarketCall(signal, direction, leverage, stop_loss, take_profit, risk_reward, reason)


def realized_volatility(df: pd.DataFrame, window: int = 24) -> float:
    """Annualised standard deviation of the last ``window`` close-to-close log returns.

    Annualised so that one leverage rule fits every timeframe: the per-bar deviation is scaled
    by sqrt(bars per year), with the bar length read from the median spacing of the index
    (median, so that an exchange outage gap does not distort it). The index must be datetimes.
    """
    if window < 2:
        raise ValueError(f"window must be at least 2 returns, got {window}")
    require_ohlcv(df, min_rows=window + 1, purpose=f"realized volatility over {window} returns")
    if not isinstance(df.index, pd.DatetimeIndex):
        raise ValueError("realized volatility needs a DatetimeIndex to know the bar length")
    closes = df["close"].to_numpy(dtype=float)[-(window + 1) :]
    if (closes <= 0).any():
        raise ValueError("realized volatility needs positive closes")
    returns = np.diff(np.log(closes))
    spacing = df.index[-(window + 1) :].to_series().diff().dropna().median()
    bar_seconds = spacing.total_seconds()
    if bar_seconds <= 0:
        raise ValueError("realized volatility needs distinct, ascending timestamps")
    return float(returns.std(ddof=1) * math.sqrt(SECONDS_PER_YEAR / bar_seconds))
