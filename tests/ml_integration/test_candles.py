"""Candle validation, gap detection and file reading."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ml_integration.candles import find_gaps, frame_from_rows, read_candle_file, validate_candles
from ml_integration.exceptions import CandleDataError
from ml_integration.features import LOOKBACK, FeatureEngineering
from tests.conftest import shared_candle_file


def _corrupt(frame: pd.DataFrame, row: int, column: str, value: float) -> pd.DataFrame:
    bad = frame.copy()
    bad.iloc[row, bad.columns.get_loc(column)] = value
    return bad


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("close", np.nan, "NaN"),
        ("open", np.inf, "NaN or infinite"),
        ("low", 0.0, "non-positive price"),
        ("close", -5.0, "non-positive price"),
        ("volume", -1.0, "negative volume"),
    ],
)
def test_bad_values_are_named_with_their_row(candles, column, value, problem):
    with pytest.raises(CandleDataError, match=problem) as info:
        validate_candles(_corrupt(candles, 300, column, value))
    assert info.value.row == 300
    assert info.value.when == candles.index[300]


def test_high_below_low_is_named(candles):
    bad = candles.copy()
    bad.iloc[123, bad.columns.get_loc("high")] = bad["low"].iloc[123] * 0.99
    with pytest.raises(CandleDataError, match="high below low") as info:
        validate_candles(bad)
    assert info.value.row == 123


def test_unsorted_timestamps_are_named(candles):
    order = np.arange(len(candles))
    order[[500, 501]] = order[[501, 500]]
    with pytest.raises(CandleDataError, match="not sorted") as info:
        validate_candles(candles.iloc[order])
    assert info.value.row == 501


def test_duplicated_timestamps_are_named(candles):
    index = candles.index.to_numpy().copy()
    index[701] = index[700]
    dup = candles.set_axis(pd.DatetimeIndex(index, name="time"))
    with pytest.raises(CandleDataError, match="duplicated timestamp") as info:
        validate_candles(dup)
    assert info.value.row == 701


def test_too_few_rows_says_how_many_are_needed(candles):
    with pytest.raises(CandleDataError, match=f"too few rows: 50 candles, need at least {LOOKBACK}"):
        FeatureEngineering().create_features(candles.iloc[:50])


def test_naive_index_and_missing_columns_are_refused(candles):
    with pytest.raises(CandleDataError, match="timezone-aware UTC"):
        validate_candles(candles.tz_convert(None))
    with pytest.raises(CandleDataError, match="missing columns"):
        validate_candles(candles.drop(columns=["volume"]))


def test_find_gaps_reports_each_hole(candles):
    holed = candles.drop(candles.index[100:104]).drop(candles.index[900:901])
    gaps = find_gaps(holed.index, 3600)
    assert [(g.after, g.missing_bars) for g in gaps] == [(candles.index[99], 4), (candles.index[899], 1)]


def test_json_and_csv_files_read_back_identically(candles, tmp_path):
    rows = [
        [int(t.value // 1_000_000), *v]
        for t, v in zip(candles.index, candles.to_numpy().tolist(), strict=True)
    ]
    (tmp_path / "c.json").write_text(json.dumps(rows))
    csv = candles.copy()
    csv.insert(0, "timestamp", [r[0] for r in rows])
    csv.to_csv(tmp_path / "c.csv", index=False)
    from_json = read_candle_file(tmp_path / "c.json")
    from_csv = read_candle_file(tmp_path / "c.csv")
    np.testing.assert_allclose(from_json.to_numpy(), candles.to_numpy())
    np.testing.assert_allclose(from_csv.to_numpy(), candles.to_numpy())
    assert (from_json.index == candles.index).all() and (from_csv.index == candles.index).all()


def test_file_with_bad_row_raises(tmp_path):
    rows = [[1_700_000_000_000 + i * 3_600_000, 10, 11, 9, 10, 1] for i in range(5)]
    rows[3][2] = 8.0  # high below low
    (tmp_path / "bad.json").write_text(json.dumps(rows))
    with pytest.raises(CandleDataError, match="high below low at row 3"):
        read_candle_file(tmp_path / "bad.json")
    with pytest.raises(CandleDataError, match="expected rows of"):
        frame_from_rows([[1, 2, 3]])


@pytest.mark.shared_data
def test_real_btc_file_has_the_documented_gaps():
    frame = read_candle_file(shared_candle_file("BTC_USDT-1h.json"))
    gaps = find_gaps(frame.index, 3600)
    assert len(frame) == 45_024
    assert len(gaps) == 27
    assert sum(g.missing_bars for g in gaps) == 127
    assert max(g.missing_bars for g in gaps) == 33
