"""The technical score (0..9) of the hybrid mode, and the ML bonus added to it.

In hybrid mode an alert is entered when ``technical score + ml_bonus(p) >= 6``. The
technical score normally comes with the alert (the Pine script computes it); when the alert
carries none, the gateway computes it here from the stored candles with the same rules, so
both paths mean the same thing.

Rules for a **buy** (a **sell** mirrors each one), read at the frame's last bar:

============================  ======  ==============================================================
component                     points  fires when
============================  ======  ==============================================================
``rsi``                       2 / 1   Wilder RSI(14) <= 30 (2 points), else <= 40 (1 point).
                                      Sell: >= 70 / >= 60.
``bollinger``                 1.5     close at or below the lower Bollinger band (20 bars, 2
                                      population std). Sell: at or above the upper band.
``volume``                    1       volume >= 1.5x the mean volume of the 20 bars *before* it
                                      (the spike is not part of its own baseline). Same for a sell.
``reversal``                  1.5     a hammer after a decline, or a bullish engulfing bar (below).
                                      Sell: a shooting star after an advance, or bearish engulfing.
``macd``                      1       MACD(12, 26, 9) histogram higher than on the bar before (a
                                      bullish cross is such a rise through zero). Sell: lower.
``stochastic``                1       slow %K(14, 3) was <= 20 on the bar before and turned up.
                                      Sell: was >= 80 and turned down.
``support_resistance``        1       close at or up to 1% above the lowest low of the 50 bars
                                      before it (support). Sell: at or up to 1% below their highest
                                      high (resistance).
============================  ======  ==============================================================

A *hammer*: the bar has a range, its lower wick is at least twice its body, its upper wick
is at most a quarter of its range, and the close before it was below the close three bars
before that (a decline to reverse). *Bullish engulfing*: the previous bar fell, this one rose,
and this body covers the previous body (open <= previous close, close >= previous open) and is
larger. The total is capped at 9 (the components add up to exactly 9 at most).

Support is the low of the bars *before* the last one because the last bar's own low is no
level: a hammer's wick always sits below its close, and would hide the support it tested. A
close below that support has broken it and scores nothing.

No look-ahead: every value at bar t uses bars up to t only, so :func:`technical_components` over
a long frame agrees row by row with :func:`technical_score` over the frame cut at each row. The
indicators are the ML features' own (:mod:`common.indicators`: finite-window EMAs, so a
value does not depend on where the history starts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from common.indicators import bollinger_bands, macd, require_ohlcv, rolling_mean, rsi, stochastic_k

__all__ = [
    "COMPONENTS",
    "MAX_SCORE",
    "TECHNICAL_MIN_ROWS",
    "TechnicalScore",
    "technical_components",
    "technical_score",
]

Side = Literal["buy", "sell"]

#: Enter a hybrid trade at this total (technical score + ML bonus) or above.
MAX_SCORE = 9.0
#: Rows before every component has a value: the MACD histogram's finite-window EMAs (26-bar EMA
#: over 54 bars, then its 9-bar signal over 20 more) and the bar before it (the rise is compared).
TECHNICAL_MIN_ROWS = 75
COMPONENTS: tuple[str, ...] = (
    "rsi",
    "bollinger",
    "volume",
    "reversal",
    "macd",
    "stochastic",
    "support_resistance",
)


@dataclass(frozen=True)
class TechnicalScore:
    """The score in [0, 9] and the points each component contributed (all components listed)."""

    score: float
    components: dict[str, float]


def _check_side(side: str) -> None:
    if side not in ("buy", "sell"):
        raise ValueError(f"side must be 'buy' or 'sell', got {side!r}")


def _reversal(df: pd.DataFrame, side: Side) -> pd.Series:
    o, h, low, c = df["open"], df["high"], df["low"], df["close"]
    body = (c - o).abs()
    rng = h - low
    lower_wick = np.minimum(o, c) - low
    upper_wick = h - np.maximum(o, c)
    prev_o, prev_c = o.shift(1), c.shift(1)
    prev_body = (prev_c - prev_o).abs()
    if side == "buy":
        pin = (lower_wick >= 2 * body) & (upper_wick <= 0.25 * rng)
        trend = prev_c < c.shift(4)
        engulfing = (prev_c < prev_o) & (c > o) & (o <= prev_c) & (c >= prev_o) & (body > prev_body)
    else:
        pin = (upper_wick >= 2 * body) & (lower_wick <= 0.25 * rng)
        trend = prev_c > c.shift(4)
        engulfing = (prev_c > prev_o) & (c < o) & (o >= prev_c) & (c <= prev_o) & (body > prev_body)
    return ((rng > 0) & pin & trend) | engulfing


def technical_components(df: pd.DataFrame, side: Side) -> pd.DataFrame:
    """The points of each component and the total ``score``, for every bar of ``df``.

    Rows before the first bar with :data:`TECHNICAL_MIN_ROWS` bars of history are NaN. This is
    the vectorised form for backtests; :func:`technical_score` reads its last row.
    """
    _check_side(side)
    require_ohlcv(df, min_rows=TECHNICAL_MIN_ROWS, purpose="the technical score")
    close, volume = df["close"].astype(float), df["volume"].astype(float)
    c, h, low = close.to_numpy(), df["high"].to_numpy(dtype=float), df["low"].to_numpy(dtype=float)
    rsi_v = pd.Series(rsi(c, 14), index=df.index)
    lower, upper = (pd.Series(band, index=df.index) for band in bollinger_bands(c, 20, 2.0))
    line, signal = macd(c, 12, 26, 9)
    hist = pd.Series(line - signal, index=df.index)
    k = pd.Series(rolling_mean(stochastic_k(h, low, c, 14), 3), index=df.index)  # slow %K(14, 3)
    baseline = volume.shift(1).rolling(20).mean()
    if side == "buy":
        rsi_points = np.where(rsi_v <= 30, 2.0, np.where(rsi_v <= 40, 1.0, 0.0))
        band = close <= lower
        momentum = hist > hist.shift(1)
        stoch = (k.shift(1) <= 20) & (k > k.shift(1))
        support = df["low"].shift(1).rolling(50).min()
        level = (close >= support) & (close <= support * 1.01)
    else:
        rsi_points = np.where(rsi_v >= 70, 2.0, np.where(rsi_v >= 60, 1.0, 0.0))
        band = close >= upper
        momentum = hist < hist.shift(1)
        stoch = (k.shift(1) >= 80) & (k < k.shift(1))
        resistance = df["high"].shift(1).rolling(50).max()
        level = (close <= resistance) & (close >= resistance * 0.99)
    points = pd.DataFrame(
        {
            "rsi": rsi_points,
            "bollinger": band.astype(float) * 1.5,
            "volume": ((baseline > 0) & (volume >= 1.5 * baseline)).astype(float),
            "reversal": _reversal(df, side).astype(float) * 1.5,
            "macd": momentum.astype(float),
            "stochastic": stoch.astype(float),
            "support_resistance": level.astype(float),
        },
        index=df.index,
    )
    points["score"] = points[list(COMPONENTS)].sum(axis=1).clip(upper=MAX_SCORE)
    points.iloc[: TECHNICAL_MIN_ROWS - 1] = np.nan
    return points


def technical_score(df: pd.DataFrame, side: Side) -> TechnicalScore:
    """The technical score of a ``side`` entry at the last bar of ``df`` (rules in the module
    docstring). Needs at least :data:`TECHNICAL_MIN_ROWS` candles, ascending."""
    last = technical_components(df, side).iloc[-1]
    return TechnicalScore(
        score=float(last["score"]), components={name: float(last[name]) for name in COMPONENTS}
    )
