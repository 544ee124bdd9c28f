"""Features computed once over a whole history and cut per window are the very numbers each
window's own computation gives (what lets a walk-forward compute them once)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml_integration.candles import epoch_seconds, read_candle_file
from ml_integration.context import Reference
from ml_integration.feature_span import FeatureSpan
from ml_integration.features import LOOKBACK
from ml_integration.synthetic import synthetic_candles
from tests.conftest import shared_candle_file


def _own(frame: pd.DataFrame, reference: Reference | None) -> FeatureSpan:
    return FeatureSpan.compute(frame.to_numpy(), epoch_seconds(frame.index), 3600, reference=reference)


def _assert_cuts_equal_own(
    frame: pd.DataFrame, cuts: list[tuple[int, int]], reference: Reference | None
) -> None:
    span = _own(frame, reference)
    for lo, hi in cuts:
        matrix, extra = span.cut(lo, hi)
        own = _own(frame.iloc[lo:hi], reference)
        np.testing.assert_array_equal(matrix, own.matrix, err_msg=f"features of cut {lo}..{hi}")
        np.testing.assert_array_equal(extra, own.extra, err_msg=f"context of cut {lo}..{hi}")
        assert np.isfinite(matrix[LOOKBACK:]).any()  # the comparison is of numbers, not of NaN alone


def test_a_cut_equals_its_own_computation_across_one_bar_holes():
    """Holes of one bar (filled) inside, just before and just after the cut's first window, and
    a longer hole (rows over it invalid), with the btc family's reference candles."""
    frame = synthetic_candles(3000, seed=3, n_gaps=0)
    btc = synthetic_candles(3000, seed=4, n_gaps=0)
    btc.index = frame.index
    holes = [500, 700, 899, 1001, 1150, 1400, 1401, 1402]  # 1400-1402: a three-bar hole
    frame = frame.drop(frame.index[holes])
    reference = Reference.from_frame(btc.drop(btc.index[[650, 1100]]))
    cuts = [(498, 2000), (500, 1700), (690, 2100), (897, 2500), (0, 1200), (1000, len(frame))]
    _assert_cuts_equal_own(frame, cuts, reference)
    # the cut blanks the rows whose window starts before it (without that, they would differ),
    # counted in bars of time: the hole filled at 700 makes the cut's row 198 the 200th bar
    span = _own(frame, reference)
    matrix, _ = span.cut(690, 2100)
    assert np.isnan(matrix[: LOOKBACK - 2]).all() and np.isfinite(span.matrix[690 : 690 + LOOKBACK - 2]).all()
    assert np.isfinite(matrix[LOOKBACK - 2]).all()


@pytest.mark.shared_data
def test_a_cut_of_real_btc_candles_equals_its_own_computation():
    """Binance's BTC/USDT history with its real holes: the walk-forward year's windows."""
    frame = read_candle_file(shared_candle_file("BTC_USDT-1h.json"))
    start = int(frame.index.searchsorted(pd.Timestamp("2021-01-01", tz="UTC")))
    frame = frame.iloc[start:]
    cuts = [(k * 720, k * 720 + 4520) for k in range(0, 8, 3)]
    _assert_cuts_equal_own(frame, cuts, None)


def test_a_cut_outside_the_rows_is_refused():
    frame = synthetic_candles(400, seed=5, n_gaps=0)
    with pytest.raises(ValueError, match="outside"):
        _own(frame, None).cut(300, 500)
