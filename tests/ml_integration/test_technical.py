"""The technical score on candles where the answer is known, its symmetry, and no look-ahead."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from engine.hybrid import HYBRID_ENTRY_SCORE, ml_bonus
from ml_integration.candles import read_candle_file
from ml_integration.technical import (
    COMPONENTS,
    MAX_SCORE,
    TECHNICAL_MIN_ROWS,
    technical_components,
    technical_score,
)
from tests.conftest import shared_candle_file

ALLOWED_POINTS = {
    "rsi": {0.0, 1.0, 2.0},
    "bollinger": {0.0, 1.5},
    "volume": {0.0, 1.0},
    "reversal": {0.0, 1.5},
    "macd": {0.0, 1.0},
    "stochastic": {0.0, 1.0},
    "support_resistance": {0.0, 1.0},
}


def frame(rows: list[tuple[float, float, float, float, float]]) -> pd.DataFrame:
    """Candles from (open, high, low, close, volume) tuples, hourly from 2024-01-01 UTC."""
    index = pd.date_range("2024-01-01", periods=len(rows), freq="1h", tz="UTC")
    return pd.DataFrame(rows, columns=["open", "high", "low", "close", "volume"], index=index, dtype=float)


def random_walk(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.012, n)))
    open_ = np.concatenate([[100.0], close[:-1]]) * (1 + rng.normal(0, 0.002, n))
    high = np.maximum(open_, close) * (1 + rng.exponential(0.004, n))
    low = np.minimum(open_, close) * (1 - rng.exponential(0.004, n))
    volume = rng.lognormal(3, 0.5, n)
    return frame(list(zip(open_, high, low, close, volume, strict=True)))


def steady_bar(open_: float, close: float) -> tuple[float, float, float, float, float]:
    return (open_, max(open_, close) * 1.001, min(open_, close) * 0.999, close, 100.0)


def hammer_at_support(*, close_vs_support: float = 1.005) -> tuple[pd.DataFrame, float]:
    """A textbook buy setup, and the support level it tests.

    40 bars fall 1% each and set a low (the support); 5 bars bounce 1% each; 20 bars drift down
    to 3% above the support; then a hammer on triple volume gaps down to 1% above the support,
    pierces it by 1.5% and closes ``close_vs_support`` x the support.
    """
    rows = []
    price = 100.0
    for _ in range(70):  # long enough for every indicator's window (TECHNICAL_MIN_ROWS)
        rows.append(steady_bar(price, price * 0.99))
        price *= 0.99
    support = min(r[2] for r in rows)
    for _ in range(5):
        rows.append(steady_bar(price, price * 1.01))
        price *= 1.01
    step = (support * 1.03 / price) ** (1 / 20)
    for _ in range(20):
        rows.append(steady_bar(price, price * step))
        price *= step
    close = support * close_vs_support
    rows.append((support * 1.01, max(support * 1.012, close), support * 0.985, close, 300.0))
    return frame(rows), support


def mirrored(df: pd.DataFrame) -> pd.DataFrame:
    """Prices reflected around a level: rises become falls, highs become lows."""
    level = 2 * float(df["high"].max())
    return pd.DataFrame(
        {
            "open": level - df["open"],
            "high": level - df["low"],
            "low": level - df["high"],
            "close": level - df["close"],
            "volume": df["volume"],
        },
        index=df.index,
    )


def test_an_oversold_hammer_at_support_scores_high_for_a_buy_and_low_for_a_sell() -> None:
    df, _ = hammer_at_support()
    buy = technical_score(df, "buy")
    sell = technical_score(df, "sell")
    assert buy.components == {
        "rsi": 2.0,
        "bollinger": 1.5,
        "volume": 1.0,
        "reversal": 1.5,
        "macd": 0.0,
        "stochastic": 1.0,
        "support_resistance": 1.0,
    }
    assert buy.score == 8.0
    # A seller gets only the direction-blind volume spike and the still-falling MACD histogram.
    assert sell.components["volume"] == sell.components["macd"] == 1.0
    assert sell.score == 2.0
    assert buy.score + ml_bonus(0.46) >= HYBRID_ENTRY_SCORE
    assert sell.score + ml_bonus(0.80) < HYBRID_ENTRY_SCORE


@pytest.mark.parametrize(
    ("close_vs_support", "points"), [(1.0, 1.0), (1.0099, 1.0), (1.012, 0.0), (0.995, 0.0)]
)
def test_support_counts_a_close_up_to_one_percent_above_it_and_not_below(
    close_vs_support: float, points: float
) -> None:
    df, _ = hammer_at_support(close_vs_support=close_vs_support)
    assert technical_score(df, "buy").components["support_resistance"] == points


def test_the_hammer_needs_its_shape() -> None:
    df, _ = hammer_at_support()
    last = df.index[-1]
    # The same bar closing at its low is no hammer (a long body, no lower wick).
    df.loc[last, "close"] = df.loc[last, "low"]
    assert technical_score(df, "buy").components["reversal"] == 0.0


def test_a_hammer_without_a_decline_before_it_is_not_a_reversal() -> None:
    rows = [(100.0, 100.5, 99.5, 100.0, 100.0)] * 80
    rows.append((100.0, 100.1, 97.0, 99.9, 100.0))
    assert technical_score(frame(rows), "buy").components["reversal"] == 0.0


def test_bullish_engulfing_is_a_reversal_and_bearish_engulfing_mirrors_it() -> None:
    rows = [(100.0, 100.5, 99.5, 100.0, 100.0)] * 80
    rows.append((100.0, 100.1, 98.9, 99.0, 100.0))  # a red bar
    rows.append((98.9, 100.6, 98.8, 100.5, 100.0))  # a larger green bar covering it
    df = frame(rows)
    assert technical_score(df, "buy").components["reversal"] == 1.5
    assert technical_score(df, "sell").components["reversal"] == 0.0
    assert technical_score(mirrored(df), "sell").components["reversal"] == 1.5


def test_volume_spike_is_judged_against_the_bars_before_it() -> None:
    rows = [(100.0, 100.5, 99.5, 100.0, 100.0)] * 80
    at = frame([*rows, (100.0, 100.5, 99.5, 100.0, 150.0)])
    below = frame([*rows, (100.0, 100.5, 99.5, 100.0, 149.0)])
    assert technical_score(at, "buy").components["volume"] == 1.0
    assert technical_score(at, "sell").components["volume"] == 1.0
    assert technical_score(below, "buy").components["volume"] == 0.0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_sell_mirrors_every_buy_rule(seed: int) -> None:
    df = random_walk(400, seed)
    buy = technical_components(df, "buy")
    sell = technical_components(mirrored(df), "sell")
    # The 1% support band is a ratio, so it does not reflect exactly; every other rule does.
    same = [c for c in COMPONENTS if c != "support_resistance"]
    pd.testing.assert_frame_equal(buy[same], sell[same])
    assert buy[same].iloc[TECHNICAL_MIN_ROWS:].to_numpy().sum() > 0  # the rules did fire


@pytest.mark.parametrize("seed", [4, 5])
def test_points_are_only_the_documented_values(seed: int) -> None:
    for side in ("buy", "sell"):
        table = technical_components(random_walk(600, seed), side).iloc[TECHNICAL_MIN_ROWS - 1 :]
        for name, allowed in ALLOWED_POINTS.items():
            assert set(table[name].unique()) <= allowed, name
        assert table["score"].between(0, MAX_SCORE).all()
        assert table["score"].to_numpy() == pytest.approx(table[list(COMPONENTS)].sum(axis=1).to_numpy())


def test_rows_without_enough_history_are_blank() -> None:
    table = technical_components(random_walk(80, 6), "buy")
    assert table.iloc[: TECHNICAL_MIN_ROWS - 1].isna().all().all()
    assert table.iloc[TECHNICAL_MIN_ROWS - 1 :].notna().all().all()


def _assert_no_look_ahead(df: pd.DataFrame, cuts: list[int]) -> None:
    for side in ("buy", "sell"):
        full = technical_components(df, side)
        for t in cuts:
            past = df.iloc[:t]
            alone = technical_score(past, side)
            # The vectorised table over the whole frame (future included) agrees at bar t-1...
            row = full.iloc[t - 1]
            assert alone.score == pytest.approx(float(row["score"]), abs=1e-12), (side, t)
            assert alone.components == {c: float(row[c]) for c in COMPONENTS}, (side, t)
            # ...and a different future, appended then cut off again, changes nothing.
            other_future = random_walk(50, t).set_axis(
                pd.date_range(df.index[t - 1], periods=51, freq="1h", tz="UTC")[1:]
            )
            replaced = pd.concat([past, other_future])
            assert technical_score(replaced.iloc[:t], side) == alone


def test_no_look_ahead_on_generated_candles() -> None:
    _assert_no_look_ahead(random_walk(300, 8), [TECHNICAL_MIN_ROWS, 81, 120, 200, 299])


@pytest.mark.shared_data
def test_no_look_ahead_and_sane_scores_on_real_btc_candles() -> None:
    df = read_candle_file(shared_candle_file("BTC_USDT-1h.json")).iloc[-3000:]
    _assert_no_look_ahead(df.iloc[:600], [TECHNICAL_MIN_ROWS, 150, 333, 599])
    scores = technical_components(df, "buy")["score"].dropna()
    # Real markets are rarely a textbook setup: most hours score low, a few score high.
    assert scores.median() <= 3.0
    assert scores.max() >= 5.0


def test_too_few_rows_and_bad_side_are_named() -> None:
    df = random_walk(60, 10)
    with pytest.raises(ValueError, match=f"needs at least {TECHNICAL_MIN_ROWS} candles, got 49"):
        technical_score(df.iloc[:49], "buy")
    with pytest.raises(ValueError, match="side must be 'buy' or 'sell', got 'long'"):
        technical_score(df, "long")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("p", "bonus"),
    [
        (1.0, 2.0),
        (0.70, 2.0),
        (0.6999, 1.0),
        (0.60, 1.0),
        (0.5999, 0.5),
        (0.50, 0.5),
        (0.4999, 0.0),
        (0.45, 0.0),
        (0.4499, -1.0),
        (0.0, -1.0),
    ],
)
def test_ml_bonus_table(p: float, bonus: float) -> None:
    assert ml_bonus(p) == bonus


@pytest.mark.parametrize("p", [-0.01, 1.01, math.nan, math.inf])
def test_ml_bonus_refuses_non_probabilities(p: float) -> None:
    with pytest.raises(ValueError, match="probability in \\[0, 1\\]"):
        ml_bonus(p)


def test_hybrid_entry_score() -> None:
    assert HYBRID_ENTRY_SCORE == 6.0
