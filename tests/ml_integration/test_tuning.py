"""Tuning by purged time-series CV (grid, random, Optuna), its cache, Optuna resumption, and
batch training on a Dask cluster giving the same models as a local run.

Estimators come from small local factories over scikit-learn (the tuning module takes any
factory); they count their fits so that "not refit" is observed, not assumed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from ml_integration.labels import purged_folds
from ml_integration.tuning import SPACES, tune

SPACE = {"C": [0.01, 0.1, 1.0], "fit_intercept": [True, False]}


def planted(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose label leans on the first column: a model has something to find."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    y = (x[:, 0] + rng.normal(size=n) > 0).astype(np.int64)
    return x, y


class CountingFactory:
    """Logistic regressions, counting how many were fit (to see refits), optionally raising
    ``Interrupted`` at fit number ``stop_at`` (a study killed part-way)."""

    def __init__(self, stop_at: int | None = None):
        self.fits = 0
        self.stop_at = stop_at

    def __call__(self, params: dict[str, Any]) -> Any:
        factory = self

        class Counted(LogisticRegression):
            def fit(self, x: np.ndarray, y: np.ndarray, sample_weight: Any = None) -> Any:
                factory.fits += 1
                if factory.stop_at is not None and factory.fits >= factory.stop_at:
                    raise Interrupted(f"stopped at fit {factory.fits}")
                return super().fit(x, y, sample_weight)

        return Counted(**params)


class Interrupted(Exception):
    pass


def _tune(tmp_path: Path, method: str, factory: Any, **kw: Any) -> Any:
    x, y = kw.pop("data", planted())
    return tune(
        "logistic_regression", x, y, method=method, factory=factory, space=kw.pop("space", SPACE),
        gap=5, n_folds=3, cache_dir=tmp_path / "tuning", **{"n_trials": 3, **kw},
    )  # fmt: skip


@pytest.mark.parametrize(("method", "trials"), [("grid", 6), ("random", 3), ("optuna", 3)])
def test_each_method_returns_params_from_the_space(tmp_path, method, trials):
    factory = CountingFactory()
    result = _tune(tmp_path, method, factory)
    assert result.n_trials == trials == len(result.trials)
    assert factory.fits == trials * 3  # every trial scored on all three purged folds
    for params in [result.best_params, *(t["params"] for t in result.trials)]:
        assert set(params) == set(SPACE)
        assert all(params[k] in SPACE[k] for k in SPACE)
    assert result.best_score == min(t["score"] for t in result.trials)
    # the planted edge is found, and the report says so against the same folds' base rate
    assert result.best_score < result.base_rate_score - 0.05
    assert 0.68 < result.base_rate_score < 0.71  # log loss of a ~50% base rate


def test_brier_scoring_and_base_rate(tmp_path):
    result = _tune(tmp_path, "grid", CountingFactory(), scoring="brier")
    assert result.scoring == "brier"
    assert result.best_score < result.base_rate_score < 0.26


class IndexRecorder:
    """A classifier whose first column is the row number: records which rows it trained on
    and which it was asked to predict."""

    def __init__(self, log: list[tuple[int, int]]):
        self.log = log

    def fit(self, x: np.ndarray, y: np.ndarray) -> IndexRecorder:
        self.last_train_row = int(x[:, 0].max())
        self.rate = float(np.mean(y))
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        self.log.append((self.last_train_row, int(x[:, 0].min())))
        return np.column_stack([np.full(len(x), 1 - self.rate), np.full(len(x), self.rate)])


def test_purged_folds_leave_the_gap_and_keep_time_order(tmp_path):
    n, gap = 400, 7
    x = np.column_stack([np.arange(n), np.zeros(n)]).astype(float)
    y = np.arange(n) % 2
    log: list[tuple[int, int]] = []
    result = tune("recorder", x, y, method="grid", factory=lambda p: IndexRecorder(log), space={"k": [1]},
                  gap=gap, n_folds=4, cache_dir=tmp_path)  # fmt: skip
    assert result.n_folds == 4 and len(log) == 4
    for last_train, first_test in log:
        # rows last_train+1 .. first_test-1 are purged: at least the label horizon
        assert first_test - last_train - 1 >= gap
    assert [first for _, first in log] == sorted(first for _, first in log)  # never shuffled


def test_cache_is_reused_and_retune_refits(tmp_path):
    factory = CountingFactory()
    first = _tune(tmp_path, "random", factory)
    fits = factory.fits
    again = _tune(tmp_path, "random", factory)
    assert again.cached and factory.fits == fits  # read back, nothing refit
    assert again.best_params == first.best_params and again.best_score == first.best_score
    retuned = _tune(tmp_path, "random", factory, retune=True)
    assert not retuned.cached and factory.fits == 2 * fits
    other_data = _tune(tmp_path, "random", factory, data=planted(seed=1))
    assert not other_data.cached and factory.fits == 3 * fits  # a new data fingerprint is a new search
    assert len(list((tmp_path / "tuning").glob("*.json"))) == 2


@pytest.mark.parametrize(
    "content", ["{not json", json.dumps({"format": 0, "key": "x", "result": {}}), json.dumps([1, 2])]
)
def test_a_corrupt_or_incompatible_cache_is_ignored_with_a_warning(tmp_path, content):
    factory = CountingFactory()
    first = _tune(tmp_path, "grid", factory)
    (path,) = (tmp_path / "tuning").glob("*.json")
    path.write_text(content)
    with pytest.warns(UserWarning, match=r"ignoring the tuning cache .*; tuning again"):
        again = _tune(tmp_path, "grid", factory)
    assert not again.cached and factory.fits == 2 * 6 * 3
    assert again.best_params == first.best_params
    assert _tune(tmp_path, "grid", factory).cached  # and the rewritten file is good again


def test_an_interrupted_optuna_study_resumes(tmp_path):
    folds = 3
    interrupted = CountingFactory(stop_at=4 * folds + 1)  # dies inside the fifth trial
    with pytest.raises(Interrupted):
        _tune(tmp_path, "optuna", interrupted, n_trials=8)
    assert not list((tmp_path / "tuning").glob("*.json"))  # nothing half-done is cached
    resumed = CountingFactory()
    result = _tune(tmp_path, "optuna", resumed, n_trials=8)
    assert result.n_trials == 8
    assert resumed.fits == 4 * folds  # the four finished trials were kept, not run again
    extended = CountingFactory()
    more = _tune(tmp_path, "optuna", extended, n_trials=10)  # a larger budget extends the study
    assert more.n_trials == 10 and extended.fits == 2 * folds
    assert (tmp_path / "tuning" / "optuna.db").is_file()


def test_options_are_checked_with_clear_errors(tmp_path):
    x, y = planted(200)
    with pytest.raises(ValueError, match="gap"):
        tune("logistic_regression", x, y, factory=CountingFactory(), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="method must be"):
        tune("logistic_regression", x, y, method="bayes", gap=5, cache_dir=tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no default search space for 'mystery'"):
        tune("mystery", x, y, gap=5, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="empty"):
        tune("logistic_regression", x, y, space={"C": []}, gap=5, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="too few"):
        tune("logistic_regression", x[:20], y[:20], gap=10, cache_dir=tmp_path)


def test_default_spaces_cover_the_zoo_and_fit_a_forest(tmp_path):
    assert set(SPACES) == {
        "random_forest", "hist_gradient_boosting", "xgboost", "lightgbm", "catboost", "svm",
        "logistic_regression", "lstm",
    }  # fmt: skip
    x, y = planted(400)
    space = {k: v[:2] for k, v in SPACES["random_forest"].items()}
    result = tune("random_forest", x, y, method="random", n_trials=2, space=space, gap=5, n_folds=2,
                  factory=lambda p: RandomForestClassifier(random_state=0, n_jobs=1, **p),
                  cache_dir=tmp_path)  # fmt: skip
    assert result.n_trials == 2 and result.best_score < result.base_rate_score


def test_given_folds_are_used_as_they_are(tmp_path):
    x, y = planted(300)
    folds = purged_folds(300, n_folds=2, gap=3)
    result = tune("logistic_regression", x, y, method="grid", space={"C": [1.0]}, folds=folds,
                  factory=CountingFactory(), cache_dir=tmp_path)  # fmt: skip
    assert result.n_folds == 2 and result.gap is None
