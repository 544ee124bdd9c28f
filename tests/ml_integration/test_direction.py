"""The direction model's choices are made out of sample: permutation importance keeps a planted
informative column and drops noise, the blend gives a useless learner weight 0, the out-of-fold
predictions the calibrators learn from carry no in-sample fit, Platt's lean is kept only when the
data support it, and the LSTM's learned weight in the magnitude blend can be 0."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from ml_integration.calibration import ConfidenceCalibrator, PlattCalibrator
from ml_integration.direction import (
    LEARNERS,
    DirectionParams,
    blend_weights,
    cross_fitted_predictions,
    make_forest,
    select_columns,
)
from ml_integration.evaluation import rank_auc
from ml_integration.prediction import learned_gb_weight
from ml_integration.trees import compile_forest_classifier

_PARAMS = DirectionParams(n_estimators=40, max_depth=6, min_samples_leaf=20, boost_max_iter=40, n_jobs=1)


def _planted(n: int = 3000, n_cols: int = 12, informative: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_cols))
    y = (0.8 * x[:, informative] + rng.normal(size=n) > 0).astype(int)
    return x, y


def test_selection_keeps_the_planted_column_and_drops_most_noise():
    x, y = _planted()
    params = replace(_PARAMS, min_features=1)
    columns, importance = select_columns(x, y, gap=5, params=params)
    assert 3 in columns
    assert importance[3] == max(importance.values()) and importance[3] > 0.01
    noise_kept = [j for j in columns if j != 3]
    assert len(noise_kept) <= 4, (columns, importance)  # shuffling noise does not hurt out of sample


def test_selection_keeps_at_least_min_features_and_can_be_switched_off():
    x, y = _planted()
    columns, _ = select_columns(x, y, gap=5, params=replace(_PARAMS, min_features=6))
    assert len(columns) >= 6 and 3 in columns
    off = replace(_PARAMS, select_features=False)
    assert select_columns(x, y, gap=5, params=off) == (tuple(range(12)), {})


def test_selection_importances_are_those_of_predicting_every_shuffled_row_with_every_tree():
    """The selection walks only the trees that split on the shuffled column; the importances must
    be, bit for bit, those of the plain definition (every tree predicts every shuffled row)."""
    from ml_integration import direction

    x, y = _planted(n=2000, n_cols=14)
    params = replace(_PARAMS, n_estimators=30, max_depth=4, min_samples_leaf=40, min_features=1)
    _, importance = select_columns(x, y, gap=5, params=params)
    fit_end, valid_end = int(len(x) * direction._SELECTION_FIT), int(len(x) * direction._SELECTION_END)
    forest = compile_forest_classifier(make_forest(params).fit(x[:fit_end], y[:fit_end]))
    assert any(len(forest.trees_reading(j)) < 30 for j in range(14))  # some trees are skipped
    xv, yv = x[fit_end + 5 : valid_end], y[fit_end + 5 : valid_end].astype(float)
    base = float(np.mean((forest.predict(xv) - yv) ** 2))
    rng = np.random.default_rng(params.random_state)
    expected = {}
    for j in range(14):
        rises = []
        for _ in range(direction._PERMUTATION_REPEATS):
            shuffled = xv.copy()
            shuffled[:, j] = rng.permutation(shuffled[:, j])
            rises.append(float(np.mean((forest.predict(shuffled) - yv) ** 2)) - base)
        expected[j] = float(np.mean(rises))
    assert importance == expected


def test_cross_fitted_predictions_never_predict_a_row_they_were_fit_on():
    """On labels that are pure noise and columns a forest can memorise, in-sample predictions
    would look skilful; out-of-fold ones have no skill, so a calibrator fit on them says a coin
    flip. Every out-of-fold row lies after the first half (training only), once."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(2000, 8)), rng.integers(0, 2, 2000)
    rows, preds = cross_fitted_predictions(x, y, tuple(range(8)), _PARAMS, n_folds=3, gap=5)
    assert rows[0] >= 1000 and np.all(np.diff(rows) == 1) and rows[-1] == 1999
    assert preds.shape == (len(rows), len(LEARNERS))
    for k, name in enumerate(LEARNERS):
        auc = rank_auc(y[rows], preds[:, k])
        assert auc is not None and abs(auc - 0.5) < 0.05, (name, auc)
    confidence = ConfidenceCalibrator.fit(preds[:, 0], y[rows])
    assert max(confidence.rate) < 0.6


def test_blend_gives_a_useless_learner_weight_zero():
    rng = np.random.default_rng(2)
    p_true = rng.uniform(0.2, 0.8, 4000)
    y = (rng.random(4000) < p_true).astype(float)
    noise = rng.uniform(0.2, 0.8, 4000)
    weights = blend_weights(np.column_stack([noise, p_true, 0.5 + 0.5 * (noise - 0.5)]), y)
    assert weights == (0.0, 1.0, 0.0)
    assert blend_weights(np.column_stack([noise, p_true, noise]), y, allowed=("forest", "logistic"))[1] == 0.0


def test_platt_keeps_a_lean_only_when_the_data_support_it():
    rng = np.random.default_rng(3)
    raw = rng.uniform(0.4, 0.6, 3000)
    fair = (rng.random(3000) < raw).astype(int)
    assert PlattCalibrator.fit(raw, fair, horizon=5).b == 0.0
    leaning = (rng.random(3000) < raw + 0.15).astype(int)  # a real, large lean
    fitted = PlattCalibrator.fit(raw, leaning, horizon=5)
    assert fitted.b > 0.3
    assert float(np.mean(fitted(raw))) == pytest.approx(float(leaning.mean()), abs=0.02)


def test_learned_lstm_weight_is_zero_when_the_lstm_adds_nothing():
    """An LSTM that makes the boosting model's errors, only larger, adds nothing: its weight is
    clipped to 0 (and the other way round); two equally good, independent models share."""
    rng = np.random.default_rng(4)
    actual = rng.normal(0, 0.01, 2000)
    gb = actual + rng.normal(0, 0.01, 2000)
    worse = gb + 2.0 * (gb - actual)
    assert learned_gb_weight(actual, gb, worse) == 1.0  # the LSTM's weight 1 − 1 = 0
    assert learned_gb_weight(actual, worse, gb) == 0.0
    assert 0.4 < learned_gb_weight(actual, gb, actual + rng.normal(0, 0.01, 2000)) < 0.6
