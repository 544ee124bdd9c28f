"""A seeded OHLCV generator for tests and demos, shaped like real exchange history.

Prices follow a regime-switching random walk (calm range, up-trend, down-trend, turbulent)
with clustered volatility; each bar's high/low come from a simulated intrabar path, volume
rises with the size of the move, and a few blocks of bars are deleted to imitate exchange
outages. The same seed always gives the same frame, so tests are reproducible.

Models trained on this data learn the generator, not a market: the training pipeline marks
such models ``synthetic`` in their metadata and every signal they produce says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml_integration.candles import COLUMNS, timeframe_seconds

__all__ = [
    "anchored",
    "garch_candles",
    "planted_edge_candles",
    "planted_week_candles",
    "synthetic_candles",
    "synthetic_history",
]

#: (drift per bar, volatility per bar) of each regime.
_REGIMES = np.array([[0.0, 0.004], [0.0012, 0.006], [-0.0012, 0.007], [0.0, 0.015]])
_STAY = 0.985  # chance of staying in the current regime each bar


def synthetic_candles(
    n_bars: int = 2000,
    *,
    seed: int = 0,
    timeframe: str = "1h",
    start: str = "2023-01-01",
    start_price: float = 30_000.0,
    n_gaps: int = 3,
    max_gap_bars: int = 12,
) -> pd.DataFrame:
    """``n_bars`` candles (before gaps are cut) as a validated-shape candle frame."""
    if n_bars < 10:
        raise ValueError(f"n_bars must be >= 10, got {n_bars}")
    rng = np.random.default_rng(seed)
    regimes = _regime_path(rng, n_bars)
    drift, vol = _REGIMES[regimes, 0], _REGIMES[regimes, 1]
    # clustered volatility: a slow random multiplier around 1
    cluster = np.exp(np.convolve(rng.normal(0, 0.15, n_bars), np.ones(24) / np.sqrt(24), mode="same"))
    returns = drift + vol * cluster * rng.standard_t(df=5, size=n_bars) / np.sqrt(5 / 3)
    close = start_price * np.exp(np.cumsum(returns))
    open_ = np.concatenate([[start_price], close[:-1]]) * np.exp(rng.normal(0, 0.0003, n_bars))
    spread = np.abs(rng.normal(0, 1, (2, n_bars))) * vol * cluster * 0.6
    high = np.maximum(open_, close) * np.exp(spread[0])
    low = np.minimum(open_, close) * np.exp(-spread[1])
    volume = 50.0 * np.exp(rng.normal(0, 0.4, n_bars)) * (1 + 60 * np.abs(returns))
    step = timeframe_seconds(timeframe)
    stamps = pd.Timestamp(start, tz="UTC").value // 1_000_000_000 + step * np.arange(n_bars, dtype=np.int64)
    keep = _gap_mask(rng, n_bars, n_gaps, max_gap_bars)
    index = pd.DatetimeIndex(pd.to_datetime(stamps[keep], unit="s", utc=True), name="time")
    values = np.column_stack([open_, high, low, close, volume])[keep]
    return pd.DataFrame(values, index=index, columns=list(COLUMNS))


def synthetic_history(
    n_bars: int, *, seed: int, timeframe: str, now_s: float, end_price: float | None = None
) -> pd.DataFrame:
    """``n_bars`` gap-free synthetic candles of ``timeframe`` whose last bar is the one open at
    ``now_s``: the candle store's history when there is no network, so that a model trained
    with ``--synthetic`` on any timeframe can serve offline.

    ``end_price`` anchors it: every price is scaled so that the last close is ``end_price``
    (returns, and so every feature the models read, are unchanged: they are ratios). The
    offline quickstart anchors it at the price the user's chart shows, so that an alert with a
    real price passes the gateway's price check against this history."""
    step = timeframe_seconds(timeframe)
    first = (int(now_s) // step - (n_bars - 1)) * step
    start = pd.Timestamp(first, unit="s", tz="UTC").isoformat()
    frame = synthetic_candles(n_bars, seed=seed, timeframe=timeframe, start=start, n_gaps=0)
    return frame if end_price is None else anchored(frame, end_price)


def anchored(frame: pd.DataFrame, end_price: float) -> pd.DataFrame:
    """``frame`` with open, high, low and close scaled so that its last close is ``end_price``."""
    if not (np.isfinite(end_price) and end_price > 0):
        raise ValueError(f"the synthetic history's last price must be a positive number, got {end_price!r}")
    scale = end_price / float(frame["close"].iloc[-1])
    out = frame.copy()
    prices = ["open", "high", "low", "close"]
    out[prices] = out[prices] * scale
    return out


def planted_edge_candles(
    n_bars: int = 4000, *, edge: float = 0.5, seed: int = 0, start: str = "2023-01-01", vol: float = 0.005
) -> pd.DataFrame:
    """Gap-free hourly candles whose next bar is predictable by a known amount, for testing
    that what the strategy acts on (calibration, confidence, Kelly) earns its place: returns
    follow r_t = −edge·r_(t−1) + noise, so the direction one bar ahead leans against the last
    bar's move. ``edge`` 0 is a random walk: nothing to learn, and nothing may be traded."""
    if not 0 <= edge < 1:
        raise ValueError(f"edge must be in [0, 1), got {edge}")
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, vol, n_bars)
    returns = np.empty(n_bars)
    returns[0] = noise[0]
    for i in range(1, n_bars):  # an AR(1) recursion is sequential by nature
        returns[i] = -edge * returns[i - 1] + noise[i]
    close = 100.0 * np.exp(np.cumsum(returns))
    open_ = np.concatenate([[100.0], close[:-1]])
    wick = np.abs(rng.normal(0.0, vol * 0.5, (2, n_bars)))
    high, low = np.maximum(open_, close) * np.exp(wick[0]), np.minimum(open_, close) * np.exp(-wick[1])
    volume = 50.0 * np.exp(rng.normal(0.0, 0.4, n_bars))
    index = pd.date_range(start, periods=n_bars, freq="1h", tz="UTC", name="time")
    values = np.column_stack([open_, high, low, close, volume])
    return pd.DataFrame(values, index=index, columns=list(COLUMNS))


def planted_week_candles(
    n_bars: int = 3000, *, drift: float = 0.0015, vol: float = 0.005, seed: int = 0, start: str = "2023-01-02"
) -> pd.DataFrame:
    """Gap-free hourly candles that drift up in the first half of each week (Monday 00:00 to
    Thursday 12:00 UTC) and down in the second, by ``drift`` per bar, over normal noise: an edge
    that the hour of the day cannot see (the plain baseline's only clock) and the week's
    calendar can, for testing that a richer candidate wins the tournament when it should."""
    rng = np.random.default_rng(seed)
    index = pd.date_range(start, periods=n_bars, freq="1h", tz="UTC", name="time")
    hour_of_week = (index.day_of_week * 24 + index.hour).to_numpy()
    returns = np.where(hour_of_week < 84, drift, -drift) + rng.normal(0.0, vol, n_bars)
    close = 100.0 * np.exp(np.cumsum(returns))
    open_ = np.concatenate([[100.0], close[:-1]])
    wick = np.abs(rng.normal(0.0, vol * 0.5, (2, n_bars)))
    high, low = np.maximum(open_, close) * np.exp(wick[0]), np.minimum(open_, close) * np.exp(-wick[1])
    volume = 50.0 * np.exp(rng.normal(0.0, 0.4, n_bars))
    values = np.column_stack([open_, high, low, close, volume])
    return pd.DataFrame(values, index=index, columns=list(COLUMNS))


def garch_candles(
    n_bars: int = 8000, *, omega: float = 2e-6, alpha: float = 0.08, beta: float = 0.90, seed: int = 0,
    start: str = "2023-01-01",
) -> pd.DataFrame:  # fmt: skip
    """Gap-free hourly candles whose log returns follow a known GARCH(1,1) with normal errors,
    σ²_t = omega + alpha·r²_(t−1) + beta·σ²_(t−1), for testing that a volatility model finds
    the process's parameters and forecasts its volatility better than a naive rule."""
    if not (omega > 0 and alpha >= 0 and beta >= 0 and alpha + beta < 1):
        raise ValueError(f"need omega > 0 and a stationary alpha + beta < 1, got {omega}, {alpha}, {beta}")
    rng = np.random.default_rng(seed)
    shocks = rng.standard_normal(n_bars)
    returns = np.empty(n_bars)
    variance = omega / (1.0 - alpha - beta)
    for i in range(n_bars):  # the variance recursion is sequential by nature
        returns[i] = np.sqrt(variance) * shocks[i]
        variance = omega + alpha * returns[i] ** 2 + beta * variance
    close = 100.0 * np.exp(np.cumsum(returns))
    open_ = np.concatenate([[100.0], close[:-1]])
    wick = np.abs(rng.normal(0.0, 1.0, (2, n_bars))) * np.abs(returns) * 0.5
    high, low = np.maximum(open_, close) * np.exp(wick[0]), np.minimum(open_, close) * np.exp(-wick[1])
    volume = 50.0 * np.exp(rng.normal(0.0, 0.4, n_bars))
    index = pd.date_range(start, periods=n_bars, freq="1h", tz="UTC", name="time")
    values = np.column_stack([open_, high, low, close, volume])
    return pd.DataFrame(values, index=index, columns=list(COLUMNS))


def _regime_path(rng: np.random.Generator, n: int) -> np.ndarray:
    path = np.empty(n, dtype=np.int64)
    state = 0
    switches = rng.random(n) > _STAY
    choices = rng.integers(0, len(_REGIMES), n)
    for i in range(n):  # a Markov chain is sequential by nature; n is small in tests
        if switches[i]:
            state = int(choices[i])
        path[i] = state
    return path


def _gap_mask(rng: np.random.Generator, n: int, n_gaps: int, max_gap_bars: int) -> np.ndarray:
    keep = np.ones(n, dtype=bool)
    if n_gaps <= 0 or max_gap_bars <= 0:
        return keep
    starts = rng.integers(n // 10, n - max_gap_bars - 1, n_gaps)
    lengths = rng.integers(1, max_gap_bars + 1, n_gaps)
    for start, length in zip(starts, lengths, strict=True):
        keep[start : start + length] = False
    return keep
