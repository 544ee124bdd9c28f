"""Combiners, out-of-fold stacking, SMOTE on training rows only, the comparison table, and the
ensemble served through the strategy's one signal."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from ml_integration.ensemble import (
    COMBINERS,
    ENSEMBLE_FILE,
    EnsembleConfig,
    EnsemblePricePrediction,
    MajorityVoting,
    Resampled,
    SoftVoting,
    Stacking,
    WeightedVoting,
    format_table,
    oof_probabilities,
    train_ensemble,
)
from ml_integration.exceptions import ModelIntegrityError
from ml_integration.labels import purged_folds
from ml_integration.store import load_latest_strategy, save_version
from ml_integration.strategy import MLTradingStrategy
from ml_integration.synthetic import planted_edge_candles
from ml_integration.zoo import make_model
from tests.ml_integration.conftest import TINY
from tests.ml_integration.zoo_data import (  # noqa: F401 (one_thread is autouse)
    FAST_MODELS,
    TINY_PARAMS,
    edge_rows,
    one_thread,
)


def _config(**overrides):
    return EnsembleConfig(**{"models": FAST_MODELS, "params": TINY_PARAMS, "final_fit": False, **overrides})


# --- combiners on hand-made probabilities -------------------------------------------------------
def test_majority_consensus_is_share_agreeing_times_mean_confidence():
    probs = np.array([[0.8, 0.7, 0.4], [0.3, 0.2, 0.6], [0.6, 0.4, 0.5]])
    names = ["a", "b", "c"]
    majority = MajorityVoting().fit(probs, np.array([1, 0, 1]), names)
    # row 0: up wins 2 of 3, their mean P(up) 0.75 → consensus 2/3 × 0.75 = 0.5
    # row 1: down wins 2 of 3, their mean P(down) 0.75 → 0.5; P(up) = mean(0.3, 0.2) = 0.25
    # row 2: 0.5 counts as up (p ≥ 0.5): up wins 2 of 3 with P(up) 0.6 and 0.5 → 2/3 × 0.55
    assert majority.consensus(probs) == pytest.approx([0.5, 0.5, 2 / 3 * 0.55])
    assert majority.predict(probs) == pytest.approx([0.75, 0.25, 0.55])
    tie = np.array([[0.9, 0.3]])
    assert majority.predict(tie) == pytest.approx([0.5]) and majority.consensus(tie) == pytest.approx([0.0])


def test_weighted_voting_renormalises_and_a_zero_weight_removes_a_model():
    names = ["random_forest", "xgboost", "lstm"]
    weights = {"random_forest": 0.2, "xgboost": 0.6, "lstm": 0.0, "svm": 0.2}  # svm is absent
    voting = WeightedVoting(weights).fit(np.zeros((1, 3)), np.zeros(1), names)
    assert voting.weights_ == pytest.approx([0.25, 0.75, 0.0])
    probs = np.array([[0.4, 0.8, 0.1], [0.4, 0.8, 0.99]])
    out = voting.predict(probs)
    assert out == pytest.approx([0.25 * 0.4 + 0.75 * 0.8] * 2)  # the LSTM's column moved nothing
    soft = SoftVoting().fit(probs, np.zeros(2), names).predict(probs)
    assert soft[0] != pytest.approx(soft[1])  # ...where an unweighted mean does move
    with pytest.raises(ValueError, match="no positive weight"):
        WeightedVoting({"svm": 1.0}).fit(np.zeros((1, 3)), np.zeros(1), names)


def test_stacking_refuses_rows_that_are_not_out_of_fold():
    with pytest.raises(ValueError, match="out-of-fold"):
        Stacking().fit(np.array([[0.4, np.nan], [0.6, 0.7]]), np.array([0, 1]), ["a", "b"])


# --- out-of-fold predictions -------------------------------------------------------------------------
class RowRecorder(ClassifierMixin, BaseEstimator):
    """A test classifier whose first column is the row number: it remembers which rows it was
    fit on, and predicts 0.5."""

    seen: list[set[int]] = []  # noqa: RUF012 (shared on purpose: one list per test run)

    def fit(self, X, y):
        RowRecorder.seen.append({int(v) for v in X[:, 0]})
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        return np.full((len(X), 2), 0.5)


def test_oof_rows_are_predicted_only_by_models_fit_on_earlier_rows():
    n, gap = 120, 5
    x = np.column_stack([np.arange(n), np.zeros(n)])
    folds = purged_folds(n, n_folds=3, gap=gap)
    RowRecorder.seen = []
    oof, _ = oof_probabilities({"recorder": RowRecorder}, x, np.zeros(n, dtype=int), folds)
    assert np.isnan(oof[: folds[0][1][0], 0]).all()  # the first block has no earlier rows
    assert np.isfinite(oof[folds[0][1][0] :, 0]).all()
    for trained_on, (_, test) in zip(RowRecorder.seen, folds, strict=True):
        assert max(trained_on) < test[0] - gap + 1  # every training row ends a gap before the block


def test_stacking_meta_learner_is_fit_on_out_of_fold_rows_only():
    """A memorising forest is perfect on its own training rows and useless elsewhere: a
    meta-learner fit on in-sample predictions would lean on it; fit out of fold, it does not."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 6))
    y = (rng.random(600) < 0.5).astype(int)  # pure noise: nothing to learn
    params = {
        "random_forest": {"n_estimators": 30, "max_depth": None, "min_samples_leaf": 1, "n_jobs": 1},
        "logistic_regression": {"C": 1.0},
    }
    config = EnsembleConfig(models=("rf", "lr"), params=params, combiner="stacking", final_fit=False)
    _, report = train_ensemble(x, y, 1, config)
    # in-sample its weight comes out near 4.7 (its logits "explain" every training label)
    assert abs(report["stacking_weights"]["random_forest"]) < 1.0
    assert report["split"]["oof_rows"] < report["split"]["train_rows"]


# --- the whole training ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_ensemble():
    x, y = edge_rows()
    return train_ensemble(x, y, 1, _config())


def test_every_combiner_runs_and_gives_probabilities(trained_ensemble):
    ensemble, report = trained_ensemble
    rows = {r["name"]: r for r in report["table"]}
    assert set(COMBINERS) | set(FAST_MODELS) <= set(rows)
    x, _ = edge_rows()
    for name in COMBINERS:
        row = rows[name]
        assert row["kind"] == "combiner" and 0 <= row["brier"] <= 1 and 0 <= row["auc"] <= 1
        assert row["n"] == report["split"]["test_rows"]
    p = ensemble.predict_proba(x[-50:])
    assert p.shape == (50,) and np.all((p >= 0) & (p <= 1))
    # the planted edge is found by the served ensemble on the held-out test slice
    served = rows[report["chosen_combiner"]]
    assert served["auc_ci"][0] > 0.5 and served["brier"] < served["base_rate_brier"]


def test_the_served_combiner_has_the_lowest_validation_log_loss(trained_ensemble):
    _, report = trained_ensemble
    scores = {name: v["log_loss"] for name, v in report["validation"].items()}
    assert report["selection_metric"] == "log_loss"
    assert report["chosen_combiner"] == min(scores, key=scores.__getitem__)


def test_the_table_prints_every_figure_next_to_its_baseline(trained_ensemble):
    _, report = trained_ensemble
    text = format_table(report["table"])
    assert "major" in text and "base" in text and "stacking (combiner)" in text
    first = report["table"][0]
    for key in (
        "accuracy",
        "precision",
        "recall",
        "f1",
        "auc",
        "brier",
        "majority_accuracy",
        "base_rate_brier",
    ):
        assert key in first
    assert first["accuracy_ci"][0] <= first["accuracy"] <= first["accuracy_ci"][1]


def test_a_named_combiner_is_served_whatever_validation_says():
    x, y = edge_rows()
    ensemble, report = train_ensemble(x, y, 1, _config(combiner="majority"))
    assert report["chosen_combiner"] == "majority" and isinstance(ensemble.combiner, MajorityVoting)


# --- SMOTE -----------------------------------------------------------------------------------------------
def test_smote_oversamples_training_rows_and_never_touches_predicted_rows():
    x, y = edge_rows()
    rng = np.random.default_rng(1)
    keep = (y == 0) | (rng.random(len(y)) < 0.3)
    xs, ys = x[keep], y[keep]
    cut = int(len(ys) * 0.7)
    model = Resampled(make_model("logistic_regression"), seed=0).fit(xs[:cut], ys[:cut])
    assert model.n_resampled_ == 2 * int(np.bincount(ys[:cut]).max())  # minority raised to the majority
    test_before = xs[cut:].copy()
    proba = model.predict_proba(xs[cut:])
    assert proba.shape == (len(ys) - cut, 2)
    assert np.array_equal(xs[cut:], test_before)
    assert np.allclose(proba, model.estimator_.predict_proba(xs[cut:]))  # rows passed through as given


def test_smote_in_an_ensemble_scores_the_original_test_rows():
    x, y = edge_rows()
    rng = np.random.default_rng(2)
    keep = (y == 0) | (rng.random(len(y)) < 0.3)
    _, plain = train_ensemble(x[keep], y[keep], 1, _config(models=("lr",)))
    _, smoted = train_ensemble(x[keep], y[keep], 1, _config(models=("lr",), smote=True))
    for before, after in zip(plain["table"], smoted["table"], strict=True):
        assert after["n"] == before["n"] == plain["split"]["test_rows"]
        assert after["majority_accuracy"] == before["majority_accuracy"]  # same test labels
    lr_plain, lr_smote = plain["table"][0], smoted["table"][0]
    assert lr_smote["recall"] > lr_plain["recall"]  # the minority (up) class is called more often


# --- serving -------------------------------------------------------------------------------------------
def test_the_ensemble_is_served_through_the_strategy_signal(tmp_path):
    frame = planted_edge_candles(1500, edge=0.4, seed=2)
    strategy = MLTradingStrategy({"target_periods": 1}, model_config=TINY)
    strategy.predictor = EnsemblePricePrediction(
        TINY.__class__(**{**TINY.__dict__, "use_lstm": False}), ensemble=_config(final_fit=True)
    )
    report = strategy.train_strategy(frame, synthetic=True, symbol="BTC/USDT", timeframe="1h")
    assert report["ensemble"]["served_models_fit_on"] == "all rows"
    path = save_version(strategy, tmp_path, "BTC/USDT", "1h")
    assert (
        json.loads((path / "comparison.json").read_text())["chosen_combiner"]
        == report["ensemble"]["chosen_combiner"]
    )
    loaded = load_latest_strategy(tmp_path, "BTC/USDT", "1h")
    assert isinstance(loaded.predictor, EnsemblePricePrediction)
    window = frame.iloc[-200:]
    signal = loaded.generate_signal(window, "BTC/USDT")
    matrix, _, _ = loaded.predictor.feature_tail(window)
    assert signal.ml_probability == pytest.approx(float(loaded.predictor.ensemble_.predict_proba(matrix)[-1]))
    assert signal.ml_probability == pytest.approx(loaded.predictor.direction_probabilities(window)[-1])
    assert signal.confidence == pytest.approx(
        float(loaded.predictor.fitted_.confidence(signal.ml_probability))
    )
    # the pickled models load only after their sha256 checks out
    (path / ENSEMBLE_FILE).write_bytes((path / ENSEMBLE_FILE).read_bytes() + b"\0")
    with pytest.raises(ModelIntegrityError):
        load_latest_strategy(tmp_path, "BTC/USDT", "1h")


def test_three_class_rows_keep_only_the_decisive_moves():
    frame = planted_edge_candles(800, edge=0.3, seed=4)
    binary = EnsemblePricePrediction(ensemble=_config())
    three = EnsemblePricePrediction(ensemble=_config(label="three_class", label_threshold=0.006))
    _, y_all = binary._ensemble_rows(frame, 1, 3600)
    x_dec, y_dec = three._ensemble_rows(frame, 1, 3600)
    close = frame["close"].to_numpy()
    moves = np.abs(np.log(close[1:] / close[:-1]))
    assert 0 < len(y_dec) < len(y_all) and len(x_dec) == len(y_dec)
    assert len(y_dec) == pytest.approx(len(y_all) * np.mean(moves > 0.006), abs=3)


@pytest.mark.slow
def test_the_lstm_joins_an_ensemble_and_stacking_learns_its_weight():
    x, y = edge_rows()
    ensemble, report = train_ensemble(x, y, 1, _config(models=("lr", "lstm"), combiner="stacking"))
    assert ensemble.names == ["logistic_regression", "lstm"]
    assert set(report["stacking_weights"]) == {"logistic_regression", "lstm"}
    p = ensemble.predict_proba(x[-30:])
    assert np.all((p >= 0) & (p <= 1))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"combiner": "best"}, "combiner must be auto or"),
        ({"label": "quaternary"}, "label must be one of"),
        ({"class_weight": "inverse"}, "class_weight must be None or 'balanced'"),
        ({"weights": {"rf": -1.0}}, "weights must be >= 0"),
        ({"models": "rf,forest"}, "unknown model 'forest'"),
        ({"trees": 10}, "unknown ensemble options"),
    ],
)
def test_ensemble_config_refusals_say_what_was_wrong(options, message):
    with pytest.raises(ValueError, match=message):
        EnsembleConfig.from_mapping(options)


def test_ensemble_config_reads_aliases():
    config = EnsembleConfig.from_mapping({"models": "rf, xgb,lstm", "weights": {"xgb": 1.0}})
    assert config.models == ("random_forest", "xgboost", "lstm") and config.weights == {"xgboost": 1.0}
