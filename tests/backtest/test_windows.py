"""The walk-forward plan: purge and embargo hold for every window, and a window's models are
trained on candles that end before the embargo."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest

from backtest.errors import BacktestInputError
from backtest.models import WindowInputs, train_window
from backtest.windows import parse_duration, plan_windows
from ml_integration.baseline import baseline_features
from ml_integration.synthetic import synthetic_candles

HOUR = pd.Timedelta(hours=1)


@pytest.fixture(scope="module")
def index() -> pd.DatetimeIndex:
    return pd.date_range("2023-01-01", periods=24 * 400, freq="1h", tz="UTC")


@pytest.mark.parametrize(("embargo", "test_days"), [(5, 30), (24, 7), (48, 45)])
def test_windows_roll_without_overlap_and_keep_the_embargo(index, embargo, test_days):
    windows = plan_windows(
        index,
        step_s=3600,
        train=pd.Timedelta(days=180),
        test=pd.Timedelta(days=test_days),
        embargo_bars=embargo,
        warmup_bars=200,
        min_train_bars=400,
    )
    assert windows[0].data_start >= index[0]
    for before, after in pairwise(windows):
        assert after.test_start == before.test_end  # contiguous, no bar traded twice
    for w in windows:
        assert w.train_end + embargo * HOUR == w.test_start
        assert w.train_end - w.train_start == pd.Timedelta(days=180)
        assert w.data_start == w.train_start - 200 * HOUR
    assert windows[-1].test_end == index[-1] + HOUR


def test_a_window_is_trained_on_candles_ending_before_its_embargo():
    """The models of a window never see a bar at or after ``train_end``: rewrite every later bar
    (the test window) and the trained forest is the same."""
    frame = synthetic_candles(1900, seed=5, n_gaps=0)
    window = plan_windows(
        frame.index,
        step_s=3600,
        train=pd.Timedelta(days=40),
        test=pd.Timedelta(days=14),
        embargo_bars=5,
        warmup_bars=200,
        min_train_bars=400,
    )[0]
    changed = frame.copy()
    later = changed.index >= window.train_end
    changed.loc[later, ["open", "high", "low", "close"]] *= 3.0  # a strong, different future
    one = train_window(_inputs(frame), window, horizon=5, model_config=None, step_s=3600)
    two = train_window(_inputs(changed), window, horizon=5, model_config=None, step_s=3600)
    x = baseline_features(frame).to_numpy()[-10:]
    # (equal up to the order two threads add the trees' votes in)
    np.testing.assert_allclose(one.baseline.predict_up(x), two.baseline.predict_up(x), rtol=0, atol=1e-12)
    assert one.train_up_rate == two.train_up_rate
    # and the perturbation matters: it moves a model trained on the later bars
    shift = 24 * 14 * HOUR
    late = replace(
        window,
        data_start=window.data_start + shift,
        train_start=window.train_start + shift,
        train_end=window.train_end + shift,
    )
    three = train_window(_inputs(changed), late, horizon=5, model_config=None, step_s=3600)
    four = train_window(_inputs(frame), late, horizon=5, model_config=None, step_s=3600)
    assert np.abs(three.baseline.predict_up(x) - four.baseline.predict_up(x)).max() > 1e-3


def _inputs(frame: pd.DataFrame, model_config=None):  # type: ignore[no-untyped-def]
    """The walk-forward's inputs, computed once over the *whole* frame (the future included)."""
    return WindowInputs.compute(frame, None, start=0, step_s=3600, model_config=model_config)


@pytest.mark.slow
def test_the_strategy_fit_on_features_computed_once_never_sees_the_future():
    """The full strategy of a window reads its features cut from a computation over the whole
    history (``WindowInputs``): rewrite every bar from ``train_end`` on (a different random walk,
    not a level shift) and the served model is the same; the same rewrite from two weeks
    earlier, inside the training rows, moves it (the test can fail)."""
    from tests.backtest.conftest import TINY_NO_LSTM

    config = replace(TINY_NO_LSTM, tournament=(), final_fit=False, calibration_folds=2)
    frame = synthetic_candles(1900, seed=5, n_gaps=0)
    window = plan_windows(frame.index, step_s=3600, train=pd.Timedelta(days=40), test=pd.Timedelta(days=14),
                          embargo_bars=5, warmup_bars=200, min_train_bars=400)[0]  # fmt: skip
    probe = frame.iloc[-400:]

    def served(rewritten_from: pd.Timestamp):  # type: ignore[no-untyped-def]
        rng = np.random.default_rng(1)
        changed = frame.copy()
        later = changed.index >= rewritten_from
        walk = np.exp(np.cumsum(rng.normal(0, 0.02, int(later.sum()))))[:, None]
        changed.loc[later, ["open", "high", "low", "close"]] *= walk
        model = train_window(_inputs(changed, config), window, horizon=5, model_config=config, step_s=3600)
        return model.strategy.predictor.direction_probabilities(probe)

    never = served(frame.index[-1] + HOUR)
    np.testing.assert_array_equal(never, served(window.train_end))
    assert np.nanmax(np.abs(never - served(window.train_end - 24 * 14 * HOUR))) > 1e-3


def test_trading_before_enough_history_names_the_start_that_works(index):
    with pytest.raises(BacktestInputError, match=r"needs candles from .* move --start to 2023-07-08"):
        plan_windows(
            index,
            step_s=3600,
            train=pd.Timedelta(days=180),
            test=pd.Timedelta(days=30),
            embargo_bars=5,
            warmup_bars=200,
            min_train_bars=400,
            start=pd.Timestamp("2023-03-01", tz="UTC"),
        )


@pytest.mark.parametrize("text", ["180", "d", "-3d", "1.5d", "3y"])
def test_durations_must_be_whole_days_weeks_or_hours(text):
    with pytest.raises(BacktestInputError, match="like 180d"):
        parse_duration(text, "--train-window")


def test_durations_parse():
    assert parse_duration("180d", "x") == pd.Timedelta(days=180)
    assert parse_duration("4w", "x") == pd.Timedelta(weeks=4)
    assert parse_duration("36h", "x") == pd.Timedelta(hours=36)
