"""Features: count and families, no look-ahead, tail == full computation, gap policy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml_integration.features import FEATURE_FAMILIES, FEATURE_NAMES, LOOKBACK, FeatureEngineering


def _perturb_after(frame: pd.DataFrame, t: int, seed: int) -> pd.DataFrame:
    """Replace every bar after position t with different (still valid) candles."""
    rng = np.random.default_rng(seed)
    changed = frame.copy()
    n = len(frame) - t - 1
    factor = np.exp(np.cumsum(rng.normal(0, 0.03, n)))
    body = frame.iloc[t + 1 :]
    opens, closes = body["open"].to_numpy() * factor, body["close"].to_numpy() * factor[::-1]
    highs = np.maximum(opens, closes) * (1 + rng.uniform(0.001, 0.05, n))
    lows = np.minimum(opens, closes) * (1 - rng.uniform(0.001, 0.05, n))
    changed.iloc[t + 1 :] = np.column_stack([opens, highs, lows, closes, rng.uniform(1, 1000, n)])
    return changed


def test_more_than_80_features_in_every_family():
    assert len(FEATURE_NAMES) >= 80
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    families = set(FEATURE_FAMILIES.values())
    assert families == {
        "returns",
        "oscillators",
        "trend",
        "volume",
        "lags_and_stats",
        "volatility",
        "calendar",
    }
    for required in (
        "rsi_14",
        "macd",
        "bb_pctb_20",
        "atr_14",
        "sma_20_50_cross",
        "obv_20",
        "ad_20",
        "close_vwap_24",
        "williams_r_14",
        "cci_20",
        "stoch_k_14",
        "hour_sin",
        "weekday_cos",
        "day_sin",
        "month_cos",
        "log_ret_1_lag_3",
        "ret_skew_20",
        "ret_kurt_50",
        "parkinson_20",
        "garman_klass_20",
        "vol_of_vol_50",
    ):
        assert required in FEATURE_NAMES


@pytest.mark.parametrize("t", [LOOKBACK + 10, 900, 1800])
def test_no_feature_at_or_before_t_moves_when_the_future_changes(candles, t):
    engine = FeatureEngineering()
    before = engine.create_features(candles)
    after = engine.create_features(_perturb_after(candles, t, seed=t))
    past_before, past_after = before.iloc[: t + 1].to_numpy(), after.iloc[: t + 1].to_numpy()
    np.testing.assert_array_equal(np.isnan(past_before), np.isnan(past_after))
    np.testing.assert_array_equal(past_before[~np.isnan(past_before)], past_after[~np.isnan(past_after)])
    # the perturbation is strong enough to be seen: the test would catch a leak
    future_moved = ~np.isclose(
        before.iloc[t + 1 :].to_numpy(), after.iloc[t + 1 :].to_numpy(), equal_nan=True
    )
    assert future_moved.any(axis=0).mean() > 0.85


def test_tail_computation_equals_full_history(candles):
    engine = FeatureEngineering()
    full = engine.create_features(candles)
    tail = engine.create_features(candles.iloc[-(LOOKBACK + 23) :])
    np.testing.assert_allclose(tail.iloc[-24:].to_numpy(), full.iloc[-24:].to_numpy(), rtol=1e-12, atol=1e-12)


def test_first_valid_row_is_lookback_minus_one(candles):
    features = FeatureEngineering().create_features(candles).to_numpy()
    assert np.isnan(features[: LOOKBACK - 1]).all()
    assert np.isfinite(features[LOOKBACK - 1 :]).all()


def test_windows_straddling_a_gap_are_invalid_and_recover_after(candles):
    holed = candles.drop(candles.index[1000:1006])  # a 6-hour outage after position 999
    features = FeatureEngineering().create_features(holed)
    valid = features.notna().all(axis=1).to_numpy()
    assert valid[999]  # last row before the gap
    assert not valid[1000 : 1000 + LOOKBACK - 1].any()  # every window that spans the hole
    assert valid[1000 + LOOKBACK - 1 :].all()  # the window has moved past it
    tolerant = FeatureEngineering(max_missing_bars=6).create_features(holed)
    assert tolerant.notna().all(axis=1).to_numpy()[1000:].all()


def test_the_models_read_no_exact_duplicate_feature(candles):
    """The 80+ set keeps its families, but no two columns the models read are copies of each
    other (``williams_r_14`` = ``stoch_k_14`` − 100 and ``bb_pctb_n`` = ``close_z_n`` / 4 + 0.5
    were); a new twin shows up here as a correlation of 1."""
    from ml_integration.features import DUPLICATE_FEATURES, MODEL_FEATURES

    table = FeatureEngineering().create_features(candles).dropna()
    assert set(DUPLICATE_FEATURES) <= set(FEATURE_NAMES) and not set(DUPLICATE_FEATURES) & set(MODEL_FEATURES)
    np.testing.assert_allclose(table["williams_r_14"], table["stoch_k_14"] - 100, atol=1e-9)
    for n in (20, 50):
        np.testing.assert_allclose(table[f"bb_pctb_{n}"], table[f"close_z_{n}"] / 4 + 0.5, atol=1e-9)
    corr = np.corrcoef(table[MODEL_FEATURES].to_numpy().T)
    np.fill_diagonal(corr, 0.0)
    worst = np.unravel_index(np.nanargmax(np.abs(corr)), corr.shape)
    assert np.nanmax(np.abs(corr)) < 0.9999, [MODEL_FEATURES[i] for i in worst]


def _reference(candles: pd.DataFrame):  # type: ignore[no-untyped-def]
    """BTC's candles for the ``btc`` family: another seed's walk on the same hours."""
    from ml_integration.context import Reference
    from ml_integration.synthetic import synthetic_candles

    btc = synthetic_candles(len(candles), seed=99, n_gaps=0)
    btc.index = candles.index
    return btc, Reference.from_frame(btc)


@pytest.mark.parametrize("t", [LOOKBACK + 10, 901, 1802, 1803])
def test_no_context_feature_at_or_before_t_moves_when_the_future_changes(candles, t):
    """The baseline's columns, the higher timeframes (only completed 4h and daily bars: t = 1802
    and 1803 are rows inside and at the end of a 4h bar), the week's calendar and the market's
    relation to BTC (its own future rewritten, BTC's kept)."""
    from ml_integration.candles import epoch_seconds
    from ml_integration.context import EXTRA_FEATURES, extra_matrix

    _, reference = _reference(candles)
    changed = _perturb_after(candles, t, seed=t)
    stamps = epoch_seconds(candles.index)
    before = extra_matrix(candles.to_numpy(), stamps, 3600, reference=reference)
    after = extra_matrix(changed.to_numpy(), stamps, 3600, reference=reference)
    np.testing.assert_array_equal(np.isnan(before[: t + 1]), np.isnan(after[: t + 1]))
    past = ~np.isnan(before[: t + 1])
    np.testing.assert_array_equal(before[: t + 1][past], after[: t + 1][past])
    # strong enough to be seen in every column that reads the market's own prices (the
    # calendar's cannot move, nor BTC's own returns)
    moved = ~np.isclose(before[t + 1 :], after[t + 1 :], equal_nan=True)
    fixed = [i for i, name in enumerate(EXTRA_FEATURES) if "hour" in name or name == "weekend"
             or name.startswith("btc_ret_")]  # fmt: skip
    prices = [i for i in range(len(EXTRA_FEATURES)) if i not in fixed]
    assert moved[:, prices].any(axis=0).all()


@pytest.mark.parametrize("t", [LOOKBACK + 10, 1803])
def test_no_btc_feature_at_or_before_t_moves_when_btcs_future_changes(candles, t):
    """The alt's relation to BTC at bar t reads BTC's bars up to t only: rewriting BTC's bars
    after t moves no column at or before t, and moves every ``btc`` column after it."""
    from ml_integration.candles import epoch_seconds
    from ml_integration.context import BTC_FEATURES, EXTRA_FEATURES, Reference, extra_matrix

    btc, reference = _reference(candles)
    rewritten = Reference.from_frame(_perturb_after(btc, t, seed=t))
    stamps = epoch_seconds(candles.index)
    before = extra_matrix(candles.to_numpy(), stamps, 3600, reference=reference)
    after = extra_matrix(candles.to_numpy(), stamps, 3600, reference=rewritten)
    np.testing.assert_array_equal(before[: t + 1], after[: t + 1])
    family = [EXTRA_FEATURES.index(name) for name in BTC_FEATURES]
    assert np.isfinite(before[t, family]).all()  # the past that did not move was real numbers
    moved = ~np.isclose(before[t + 1 :], after[t + 1 :], equal_nan=True)
    assert moved[:, family].any(axis=0).all()
    others = [i for i in range(len(EXTRA_FEATURES)) if i not in family]
    assert not moved[:, others].any()  # and only the btc family reads BTC


@pytest.mark.parametrize("t", [LOOKBACK + 80, 1803])
def test_btc_features_at_or_before_t_are_the_same_when_btcs_bars_after_t_are_missing(candles, t):
    """What serving sees when BTC's newest candles have not arrived yet (or a backtest's BTC file
    ends early): BTC's bars after t removed leave every column at or before t as it was (so
    nothing at t was read from BTC's later bars), and the btc family after t is NaN, never BTC's
    last close carried forward. An empty reference is the same as none: NaN throughout."""
    from ml_integration.candles import epoch_seconds
    from ml_integration.context import BTC_FEATURES, EXTRA_FEATURES, Reference, extra_matrix

    btc, reference = _reference(candles)
    stamps = epoch_seconds(candles.index)
    family = [EXTRA_FEATURES.index(name) for name in BTC_FEATURES]
    full = extra_matrix(candles.to_numpy(), stamps, 3600, reference=reference)
    cut = extra_matrix(candles.to_numpy(), stamps, 3600, reference=Reference.from_frame(btc.iloc[: t + 1]))
    np.testing.assert_array_equal(cut[: t + 1], full[: t + 1])
    assert np.isfinite(full[t, family]).all() and np.isfinite(full[t + 1 :, family][:, :3]).all()
    assert np.isnan(cut[t + 1 :, family]).all()
    others = [i for i in range(len(EXTRA_FEATURES)) if i not in family]
    np.testing.assert_array_equal(cut[:, others], full[:, others])  # only the btc family reads BTC
    empty = extra_matrix(candles.to_numpy(), stamps, 3600, reference=Reference.from_frame(btc.iloc[:0]))
    assert np.isnan(empty[:, family]).all()
    np.testing.assert_array_equal(empty[:, others], full[:, others])


def test_btc_features_follow_btc_by_open_time_and_are_nan_without_it(candles):
    """BTC's bar is matched to the alt's by open time (a missing BTC bar is not shifted into
    its neighbour's place), its one-bar holes are filled as the alt's are, and without BTC's
    candles the family is NaN (so it is not a tournament candidate)."""
    from ml_integration.candles import epoch_seconds
    from ml_integration.context import BTC_FEATURES, EXTRA_FEATURES, Reference, extra_matrix

    btc, reference = _reference(candles)
    stamps = epoch_seconds(candles.index)
    family = [EXTRA_FEATURES.index(name) for name in BTC_FEATURES]
    full = extra_matrix(candles.to_numpy(), stamps, 3600, reference=reference)
    close = btc["close"].to_numpy()
    row = 1500
    assert full[row, EXTRA_FEATURES.index("btc_ret_4")] == pytest.approx(np.log(close[row] / close[row - 4]))
    one = extra_matrix(
        candles.to_numpy(), stamps, 3600, reference=Reference.from_frame(btc.drop(btc.index[1000]))
    )
    np.testing.assert_array_equal(one[:1000, family], full[:1000, family])
    assert np.isfinite(one[1000:, family][LOOKBACK:]).all()
    two = extra_matrix(
        candles.to_numpy(), stamps, 3600, reference=Reference.from_frame(btc.drop(btc.index[1000:1002]))
    )
    assert np.isnan(two[1000 : 1000 + 24, family]).any(axis=1).all()  # never another bar's close
    assert np.isnan(extra_matrix(candles.to_numpy(), stamps, 3600)[:, family]).all()


def test_a_higher_timeframe_bar_is_read_only_once_complete(candles):
    """The 4h return at a row inside a 4h bar is the previous *completed* bar's; it changes only
    at the row whose close completes the next one (open time hh:00 with (hh + 1) % 4 == 0)."""
    from ml_integration.candles import epoch_seconds
    from ml_integration.context import EXTRA_FEATURES, extra_matrix

    stamps = epoch_seconds(candles.index)
    ret = extra_matrix(candles.to_numpy(), stamps, 3600)[:, EXTRA_FEATURES.index("htf_4h_ret_1")]
    hours = (stamps // 3600) % 24
    rows = np.arange(LOOKBACK + 8, len(stamps) - 1)
    completes = (hours[rows] + 1) % 4 == 0
    changed = ret[rows] != ret[rows - 1]
    assert changed[completes].all() and not changed[~completes].any()
    close = candles["close"].to_numpy()
    row = rows[completes][0]
    assert ret[row] == pytest.approx(np.log(close[row] / close[row - 4]))


def test_context_tail_computation_equals_full_history(candles):
    from ml_integration.candles import epoch_seconds
    from ml_integration.context import extra_matrix

    values, stamps = candles.to_numpy(), epoch_seconds(candles.index)
    full = extra_matrix(values, stamps, 3600)
    tail = extra_matrix(values[-(LOOKBACK + 23) :], stamps[-(LOOKBACK + 23) :], 3600)
    np.testing.assert_allclose(tail[-24:], full[-24:], rtol=1e-12, atol=1e-12)


def test_one_missing_bar_is_filled_and_a_longer_hole_is_not(candles):
    """One lost hour (Binance has them) no longer makes the 200 windows over it invalid: the
    bar is filled flat at the previous close; two missing bars still invalidate the windows."""
    one = candles.drop(candles.index[1000])
    features = FeatureEngineering().create_features(one).to_numpy()
    assert np.isfinite(features[999:]).all()
    two = candles.drop(candles.index[1000:1002])
    assert not np.isfinite(FeatureEngineering().create_features(two).to_numpy()[1000]).all()
    # the filled bar is built from the bar before it: no row before the hole moved
    full = FeatureEngineering().create_features(candles).to_numpy()
    np.testing.assert_array_equal(features[:1000], full[:1000])
