"""MLPricePrediction end to end on synthetic candles, persistence and leakage of fitting."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml_integration.exceptions import CandleDataError, ModelIntegrityError, NotTrainedError
from ml_integration.prediction import MLPricePrediction
from ml_integration.strategy import MLTradingStrategy

from .conftest import TINY


def test_predict_returns_the_public_fields(trained, candles):
    out = trained.predictor.predict(candles).to_dict()
    assert set(out) == {
        "direction_probability",
        "magnitude_prediction",
        "lstm_prediction",
        "ensemble_magnitude",
        "confidence",
        "signal_strength",
        "top_features",
    }
    assert 0 < out["direction_probability"] < 1 and 0 <= out["confidence"] <= 1
    w = trained.predictor.fitted_.gb_weight  # learned out of sample (TINY leaves it to the data)
    assert 0.0 <= w <= 1.0 and trained.training_report["magnitude_weights"]["boosting"] == w
    expected = w * out["magnitude_prediction"] + (1 - w) * out["lstm_prediction"]
    assert out["ensemble_magnitude"] == pytest.approx(expected)
    assert out["top_features"][0]["weight"] >= out["top_features"][-1]["weight"]


def test_holdout_report_has_baselines_and_intervals(trained):
    report = trained.training_report
    direction = report["holdout"]["direction"]
    for key in ("accuracy", "majority_accuracy", "auc", "brier", "base_rate_brier", "log_loss"):
        assert np.isfinite(direction[key])
    low, high = direction["accuracy_ci"]
    assert low <= direction["accuracy"] <= high
    split = report["split"]
    assert split["purge_gap_rows"] >= report["horizon"]
    assert report["training_window"][1] < report["calibration_window"][0] < report["test_window"][0]


def test_report_checks_the_lean_and_calibration_and_the_served_model_is_recent(trained, candles):
    """Platt's lean check (mean predicted p next to the up-rate that followed), calibration by
    decile of the probability and of the confidence on the test slice, and a served model fit
    up to the last usable bar (not the first 70%)."""
    report = trained.training_report
    holdout = report["holdout"]
    lean = holdout["lean"]
    assert lean["realised_up_rate"] == pytest.approx(holdout["direction"]["test_up_rate"])
    assert 0 < lean["mean_predicted_p"] < 1 and 0 <= lean["calibration_up_rate"] <= 1
    for key in ("probability_calibration", "confidence_calibration"):
        bins = holdout[key]
        assert sum(b["n"] for b in bins) == holdout["direction"]["n"]
        assert [b["mean_predicted"] for b in bins] == sorted(b["mean_predicted"] for b in bins)
    assert report["served_model_window"][0] <= report["training_window"][0]
    assert report["served_model_window"][1] > report["test_window"][0]
    last_label = candles.index[-1 - report["horizon"]]
    assert pd.Timestamp(report["served_model_window"][1]) >= last_label - pd.Timedelta(hours=1)


def test_save_and_load_give_identical_predictions(trained, candles, tmp_path):
    trained.save_strategy(tmp_path / "m")
    loaded = MLTradingStrategy().load_strategy(tmp_path / "m")
    assert loaded.predictor.predict(candles) == trained.predictor.predict(candles)


def test_a_tampered_artifact_is_refused(trained, tmp_path):
    folder = trained.save_strategy(tmp_path / "m")
    target = folder / "forest.npz"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match=r"forest\.npz: sha256"):
        MLTradingStrategy().load_strategy(folder)


def test_missing_or_extra_files_are_refused(trained, tmp_path):
    folder = trained.save_strategy(tmp_path / "m")
    (folder / "evil.pkl").write_bytes(b"not recorded")
    with pytest.raises(ModelIntegrityError, match="unexpected files"):
        MLTradingStrategy().load_strategy(folder)
    (folder / "evil.pkl").unlink()
    (folder / "boosting.npz").unlink()
    with pytest.raises(ModelIntegrityError, match=r"boosting\.npz is missing"):
        MLTradingStrategy().load_strategy(folder)


def test_untrained_model_says_so(candles):
    with pytest.raises(NotTrainedError, match="train_models"):
        MLPricePrediction().predict(candles)


def test_serving_refuses_bad_candles(trained, candles):
    bad = candles.copy()
    bad.iloc[-3, bad.columns.get_loc("close")] = np.nan
    with pytest.raises(CandleDataError, match="NaN or infinite value at row"):
        trained.predictor.predict(bad)
    with pytest.raises(CandleDataError, match="too few rows: 100 candles"):
        trained.predictor.predict(candles.iloc[-100:])
    four_hourly = candles.iloc[::4]
    with pytest.raises(CandleDataError, match="spaced 14400 s apart"):
        trained.predictor.predict(four_hourly)


@pytest.mark.slow  # trains twice to compare
def test_calibrator_and_models_never_see_test_rows(candles):
    """Changing every candle in the test slice (and its label window) leaves the models the
    report describes (the direction blend's columns, learners and weights, Platt, confidence
    map, boosting) and the LSTM's scaler unchanged: they were fit on earlier rows only. The
    served blend and calibrators do change: after validation they are refit up to the last bar
    (on purpose; ``final_fit``)."""
    config = TINY
    first = MLPricePrediction(config)
    report = first.train_models(candles, 5)
    test_start = candles.index.get_loc(pd.Timestamp(report["test_window"][0]))
    changed = candles.copy()
    rng = np.random.default_rng(1)
    tail = changed.iloc[test_start:]
    factor = np.exp(np.cumsum(rng.normal(0, 0.02, len(tail))))[:, None]
    changed.iloc[test_start:, :4] = tail.iloc[:, :4].to_numpy() * factor
    second = MLPricePrediction(config)
    second.train_models(changed, 5)
    a, b = first.validation_, second.validation_
    assert a.calibrator == b.calibrator and a.confidence == b.confidence
    assert a.direction.columns == b.direction.columns and a.direction.weights == b.direction.weights
    np.testing.assert_array_equal(a.direction.forest.threshold, b.direction.forest.threshold)
    np.testing.assert_array_equal(a.direction.logistic.coef, b.direction.logistic.coef)
    np.testing.assert_array_equal(a.boosting.value, b.boosting.value)
    np.testing.assert_array_equal(first.fitted_.lstm.x_mean, second.fitted_.lstm.x_mean)
    np.testing.assert_array_equal(first.fitted_.lstm.x_scale, second.fitted_.lstm.x_scale)
    assert first.fitted_.lstm.y_scale == second.fitted_.lstm.y_scale
    assert first.fitted_.info["holdout"] != second.fitted_.info["holdout"]  # the test slice did change
    assert first.fitted_.calibrator != second.fitted_.calibrator  # served: refit on the latest rows
    served_a, served_b = first.fitted_.direction.forest, second.fitted_.direction.forest
    assert not np.array_equal(served_a.threshold, served_b.threshold)
