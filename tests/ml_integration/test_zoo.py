"""The model zoo: every base model fits and predicts probabilities; a missing library is
skipped with one log line; class weights move the base rate."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ml_integration.evaluation import rank_auc
from ml_integration.zoo import (
    BASE_MODELS,
    LIBRARIES,
    ModelUnavailableError,
    available_models,
    canonical_name,
    make_model,
)
from tests.ml_integration.zoo_data import TINY_PARAMS, edge_rows, one_thread  # noqa: F401 (autouse)


def test_the_contract_names():
    assert BASE_MODELS == (
        "random_forest",
        "hist_gradient_boosting",
        "xgboost",
        "lightgbm",
        "catboost",
        "svm",
        "logistic_regression",
        "lstm",
    )
    assert canonical_name("xgb") == "xgboost" and canonical_name("RF") == "random_forest"
    with pytest.raises(ValueError, match="unknown model 'forest'"):
        canonical_name("forest")


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "lstm" else n for n in BASE_MODELS]
)
def test_each_available_model_fits_and_predicts_probabilities(name):
    if name not in available_models([name]):
        pytest.skip(f"{name}'s library ({LIBRARIES[name]}) is not installed")
    x, y = edge_rows()
    cut = int(len(y) * 0.7)
    model = make_model(name, TINY_PARAMS.get(name), seed=1).fit(x[:cut], y[:cut])
    proba = model.predict_proba(x[cut:])
    assert proba.shape == (len(y) - cut, 2)
    assert np.all((proba >= 0) & (proba <= 1)) and np.allclose(proba.sum(axis=1), 1.0)
    p_up = proba[:, list(model.classes_).index(1)]
    assert p_up.std() > 1e-3, "the probabilities do not depend on the rows"
    if name != "lstm":  # the tiny LSTM (2 epochs) is only checked to be a probability
        # the planted edge is learnable: column 1 must be P(up), not P(down) (AUC would be < 0.5)
        assert rank_auc(y[cut:], p_up) > 0.55


def test_a_missing_library_is_skipped_with_one_log_line(caplog):
    libraries = {**LIBRARIES, "xgboost": "tvgw_no_such_module", "catboost": "tvgw_no_such_module_either"}
    with caplog.at_level(logging.WARNING, logger="ml_integration.zoo"):
        names = available_models(["rf", "hgb", "xgb", "cat", "lr"], libraries=libraries)
    assert names == ["random_forest", "hist_gradient_boosting", "logistic_regression"]
    lines = [r for r in caplog.records if r.name == "ml_integration.zoo"]
    assert len(lines) == 1
    assert "xgboost" in lines[0].getMessage() and "catboost" in lines[0].getMessage()


def test_every_model_imported_is_silent(caplog):
    with caplog.at_level(logging.WARNING, logger="ml_integration.zoo"):
        available_models(["rf", "lr"])
    assert not caplog.records


def test_make_model_refusals_name_the_problem():
    with pytest.raises(ValueError, match="class_weight must be None or 'balanced'"):
        make_model("rf", class_weight="inverse")
    assert issubclass(ModelUnavailableError, ImportError)


@pytest.mark.parametrize("name", ["logistic_regression", "xgboost", "random_forest"])
def test_balanced_class_weight_raises_the_minority_probability(name):
    if name not in available_models([name]):
        pytest.skip(f"{name}'s library is not installed")
    x, y = edge_rows()
    rng = np.random.default_rng(0)
    keep = (y == 0) | (rng.random(len(y)) < 0.25)  # up-moves become a ~20% minority
    xs, ys = x[keep], y[keep]
    plain = make_model(name, TINY_PARAMS.get(name)).fit(xs, ys).predict_proba(xs)[:, 1].mean()
    balanced = make_model(name, TINY_PARAMS.get(name), class_weight="balanced").fit(xs, ys)
    assert balanced.predict_proba(xs)[:, 1].mean() > plain + 0.1
