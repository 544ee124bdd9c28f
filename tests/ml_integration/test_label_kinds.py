"""The zoo's label kinds on hand-built price paths: three-class, lookahead, triple barrier."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml_integration.candles import COLUMNS
from ml_integration.labels import (
    class_labels,
    lookahead_labels,
    three_class_labels,
    triple_barrier_labels,
)


def _frame(
    close: list[float], high: list[float] | None = None, low: list[float] | None = None
) -> pd.DataFrame:
    c = np.asarray(close, dtype=float)
    h = np.asarray(high if high is not None else c, dtype=float)
    lo = np.asarray(low if low is not None else c, dtype=float)
    index = pd.date_range("2024-01-01", periods=len(c), freq="1h", tz="UTC", name="time")
    return pd.DataFrame(np.column_stack([c, h, lo, c, np.ones(len(c))]), index=index, columns=list(COLUMNS))


def test_three_class_up_down_and_sideways_within_the_threshold():
    close = [100.0, 101.0, 100.2, 99.0, 99.1, 100.0]
    labels = three_class_labels(np.array(close), 1, 0.005)
    # +0.99% up, -0.79% down, -1.2% down, +0.1% sideways, +0.9% up
    assert labels[:5].tolist() == [1, -1, -1, 0, 1]


def test_lookahead_needs_the_profit_within_n_bars():
    close = np.array([100.0, 100.2, 100.6, 99.0, 99.0])
    labels = lookahead_labels(close, 2, 0.005)
    assert labels[0] == 1  # 100.6 within two bars is >= 100.5
    assert labels[1] == 0  # best close within two bars is 100.6 < 100.2 * 1.005
    assert labels[2] == 0  # never above 100.6 again


def test_triple_barrier_first_touch_up_down_and_vertical():
    close = np.full(6, 100.0)
    width = 0.01
    # row 0: bar 1 reaches the upper barrier (101) before bar 2 reaches the lower (99)
    up = triple_barrier_labels(
        np.array([100, 101.5, 100, 100, 100, 100.0]),
        np.array([100, 99.8, 98.0, 100, 100, 100.0]),
        close,
        3,
        width,
    )
    assert up[0] == 1
    # row 0: the lower barrier first, the upper later in the window
    down = triple_barrier_labels(
        np.array([100, 100.2, 102.0, 100, 100, 100.0]),
        np.array([100, 98.5, 99.5, 100, 100, 100.0]),
        close,
        3,
        width,
    )
    assert down[0] == -1
    # neither barrier within 3 bars; a touch at bar 4 is beyond the vertical barrier
    vertical = triple_barrier_labels(
        np.array([100, 100.5, 100.5, 100.5, 105, 100.0]),
        np.array([100, 99.5, 99.5, 99.5, 95, 100.0]),
        close,
        3,
        width,
    )
    assert vertical[0] == 0
    # one bar through both barriers: the order inside it is unknown, so neither
    both = triple_barrier_labels(
        np.array([100, 102, 100, 100.0]), np.array([100, 98, 100, 100.0]), close[:4], 2, width
    )
    assert both[0] == 0


def test_triple_barrier_is_causal_it_reads_only_its_window():
    rng = np.random.default_rng(4)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.004, 300)))
    high, low = close * 1.002, close * 0.998
    before = triple_barrier_labels(high, low, close, 10, 0.006)
    changed_high, changed_low = high.copy(), low.copy()
    changed_high[200:] *= 1.5  # rewrite the future from bar 200 on
    changed_low[200:] *= 0.5
    after = triple_barrier_labels(changed_high, changed_low, close, 10, 0.006)
    assert np.array_equal(before[:190], after[:190])  # windows ending before bar 200 did not move
    assert not np.array_equal(before[190:200], after[190:200])  # the perturbation does reach its windows


def test_class_labels_atr_barrier_and_binary_target():
    frame = _frame([100.0, 100.0, 100.0, 100.0], high=[100, 100.6, 100, 100], low=[100, 99.9, 100, 100])
    atr = np.full(4, 0.5)
    by_atr = class_labels(frame, "triple_barrier", 2, atr=atr, barrier_atr=1.0)  # 0.5% barriers
    by_pct = class_labels(frame, "triple_barrier", 2, threshold=0.01)  # 1% barriers: vertical
    assert by_atr.classes[0] == 1 and by_pct.classes[0] == 0
    _, usable = by_pct.binary_target()
    assert not usable[0]  # a vertical-barrier row has no up/down target
    assert not by_atr.valid[-1] and not by_atr.valid[-2]  # no full window at the end
    with pytest.raises(ValueError, match="unknown label kind"):
        class_labels(frame, "quaternary", 2)


def test_binary_kind_is_the_existing_direction():
    frame = _frame([100.0, 101.0, 100.5, 100.7, 100.7])
    labels = class_labels(frame, "binary", 1)
    assert labels.classes[:4].tolist() == [1, 0, 1, 0]
    y, usable = labels.binary_target()
    assert y[:4].tolist() == [1, 0, 1, 0] and usable[:4].all() and not usable[4]
