"""The direction model: which columns it reads, which learners, and how they are blended — each
chosen out of sample, inside the training rows.

An outside evaluation found the project's forest on 77 columns a little weaker than a plain
forest on fifteen simple features: most columns are redundant or slow regime descriptors
(long moving-average gaps, calendar) that a forest fits to the training months and that do not
carry over. So:

1. **Columns** (:func:`select_columns`): a forest is fit on an early part of the rows and each
   column's *permutation importance* is measured on a later, purged validation slice: how much
   the Brier score worsens when that column alone is shuffled. Columns whose shuffling does not
   hurt are dropped (a column the forest leans on in training that does not carry over shows a
   zero or negative importance here). At least ``min_features`` columns are kept. The 80+ set
   stays computed; only what the models read is chosen.
2. **Learners**: a RandomForestClassifier and an L2-regularised logistic regression on the kept
   columns, and optionally a HistGradientBoostingClassifier (``learners``; off by default: on a
   180-day BTC window it took most of the training time and got weight 0).
   Serving never imports sklearn: the trees are compiled to numpy (``trees``) and the
   regression is a dot product.
3. **Blend** (:func:`blend_weights`): weights on out-of-fold, time-ordered predictions
   (:func:`cross_fitted_predictions`, folds from ``labels.purged_folds``): the point of a 0.1
   grid over the simplex with the lowest log loss. A learner that does not help gets weight 0
   (and is then not evaluated when serving).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ml_integration.labels import purged_folds
from ml_integration.trees import (
    CompiledTrees,
    compile_forest_classifier,
    compile_hist_gradient_boosting_classifier,
)

__all__ = [
    "LEARNERS",
    "DirectionModel",
    "DirectionParams",
    "LogisticModel",
    "blend_weights",
    "cross_fitted_predictions",
    "fit_learners",
    "make_forest",
    "one_openmp_thread",
    "select_columns",
]

#: The blended learners, in the order of every per-learner array.
LEARNERS = ("forest", "boosting", "logistic")
#: Share of the rows the selection forest is fit on, and where its validation slice ends (the
#: rows after that are left to the out-of-fold predictions the calibrators learn from).
_SELECTION_FIT, _SELECTION_END = 0.3, 0.5
_PERMUTATION_REPEATS = 3


@dataclass(frozen=True)
class DirectionParams:
    """The learners' hyperparameters (``prediction.ModelConfig`` holds them flat)."""

    n_estimators: int = 200
    max_depth: int = 8
    min_samples_leaf: int = 30
    boost_max_iter: int = 150
    boost_learning_rate: float = 0.05
    boost_max_depth: int = 3
    logistic_c: float = 0.05
    min_features: int = 10
    select_features: bool = True
    learners: tuple[str, ...] = ("forest", "logistic")
    n_jobs: int = 2
    random_state: int = 0


@dataclass(frozen=True)
class LogisticModel:
    """P(up) = sigmoid(coef · (x − mean) / scale + intercept); the standardisation is the
    training rows'."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, c: float) -> LogisticModel:
        from sklearn.linear_model import LogisticRegression

        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        model = LogisticRegression(C=c, max_iter=500).fit(np.clip((x - mean) / scale, -5, 5), y)
        return cls(
            mean=mean, scale=scale, coef=model.coef_[0].astype(float), intercept=float(model.intercept_[0])
        )

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = np.clip((np.asarray(x, dtype=float) - self.mean) / self.scale, -5, 5) @ self.coef + self.intercept
        return 0.5 * (np.tanh(0.5 * z) + 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist(), "coef": self.coef.tolist(),
                "intercept": self.intercept}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogisticModel:
        arrays = {key: np.asarray(data[key], dtype=float) for key in ("mean", "scale", "coef")}
        return cls(**arrays, intercept=float(data["intercept"]))


@dataclass(frozen=True)
class DirectionModel:
    """The blend of the three learners on ``columns`` (positions in a ``MODEL_FEATURES`` row)."""

    columns: tuple[int, ...]
    forest: CompiledTrees
    boosting: CompiledTrees | None  # None: not among the configured learners
    logistic: LogisticModel
    weights: tuple[float, ...] = (1.0, 0.0, 0.0)

    def learner_predictions(self, x: np.ndarray) -> np.ndarray:
        """P(up) of each learner (columns in :data:`LEARNERS` order) for ``MODEL_FEATURES`` rows."""
        sub = np.asarray(x, dtype=float)[:, list(self.columns)]
        boosted = self.boosting.predict(sub) if self.boosting is not None else np.full(len(sub), 0.5)
        return np.column_stack([self.forest.predict(sub), boosted, self.logistic.predict(sub)])

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The blended, uncalibrated P(up); learners with weight 0 are not evaluated."""
        sub = np.asarray(x, dtype=float)[:, list(self.columns)]
        learners: tuple[CompiledTrees | LogisticModel | None, ...] = (
            self.forest,
            self.boosting,
            self.logistic,
        )
        out = np.zeros(len(sub))
        for weight, learner in zip(self.weights, learners, strict=True):
            if weight > 0 and learner is not None:
                out += weight * learner.predict(sub)
        return out

    def with_weights(self, weights: tuple[float, ...]) -> DirectionModel:
        return DirectionModel(self.columns, self.forest, self.boosting, self.logistic, weights)

    def save(self, folder: Path) -> dict[str, Any]:
        """Write the trees (``forest.npz``, ``direction_boosting.npz``); return the rest as JSON."""
        self.forest.save(folder / "forest.npz")
        if self.boosting is not None:
            self.boosting.save(folder / "direction_boosting.npz")
        return {
            "columns": list(self.columns),
            "weights": list(self.weights),
            "logistic": self.logistic.to_dict(),
        }

    @classmethod
    def load(cls, folder: Path, data: dict[str, Any]) -> DirectionModel:
        return cls(
            columns=tuple(int(c) for c in data["columns"]),
            forest=CompiledTrees.load(folder / "forest.npz"),
            boosting=CompiledTrees.load(boosted)
            if (boosted := folder / "direction_boosting.npz").exists()
            else None,
            logistic=LogisticModel.from_dict(data["logistic"]),
            weights=tuple(float(w) for w in data["weights"]),
        )


def make_forest(params: DirectionParams) -> Any:
    """The blend's RandomForestClassifier, unfitted: the one definition training and tuning share."""
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(
        n_estimators=params.n_estimators, max_depth=params.max_depth,
        min_samples_leaf=params.min_samples_leaf, max_features="sqrt", n_jobs=params.n_jobs,
        random_state=params.random_state,
    )  # fmt: skip


def _forest(x: np.ndarray, y: np.ndarray, params: DirectionParams) -> CompiledTrees:
    return compile_forest_classifier(make_forest(params).fit(x, y))


def _boosting(x: np.ndarray, y: np.ndarray, params: DirectionParams) -> CompiledTrees:
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(
        max_iter=params.boost_max_iter, learning_rate=params.boost_learning_rate,
        max_depth=params.boost_max_depth, min_samples_leaf=50, l2_regularization=1.0,
        early_stopping=False, random_state=params.random_state,
    )  # fmt: skip
    with one_openmp_thread():
        model.fit(x, y)
    return compile_hist_gradient_boosting_classifier(model)


def one_openmp_thread() -> Any:
    """A context in which OpenMP learners (scikit-learn's histogram boosting) use one thread.

    Measured on the reference machine (2 cores shared by several jobs, load ~10): a 200-iteration
    HistGradientBoostingRegressor on 4,000 × 77 rows took 4.7 s with one OpenMP thread and 68 s
    with two (LightGBM: 5.3 s against 72 s), because OpenMP threads spin-wait for a core another
    process holds. On an idle machine the second thread saves at most half; the loss is bounded,
    the stall is not."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="openmp")


def _check_classes(y: np.ndarray) -> None:
    from ml_integration.exceptions import CandleDataError

    if len(np.unique(y)) < 2:
        raise CandleDataError("a training slice has only one direction class; use more data")


def fit_learners(
    x: np.ndarray, y: np.ndarray, columns: tuple[int, ...], params: DirectionParams
) -> DirectionModel:
    """The three learners fit on ``x[:, columns]`` (weights left at the forest alone)."""
    _check_classes(y)
    sub = x[:, list(columns)]
    return DirectionModel(
        columns=columns,
        forest=_forest(sub, y, params),
        boosting=_boosting(sub, y, params) if "boosting" in params.learners else None,
        logistic=LogisticModel.fit(sub, y, params.logistic_c),
    )


def select_columns(
    x: np.ndarray, y: np.ndarray, *, gap: int, params: DirectionParams
) -> tuple[tuple[int, ...], dict[int, float]]:
    """Columns whose permutation importance (rise in Brier score when shuffled) on a purged
    validation slice is above zero, at least ``min_features`` of them; and every column's
    importance. The forest is fit on the first 30% of the rows, the slice runs from there (after
    ``gap`` purged rows) to half of them, so the later half — where the calibrators' out-of-fold
    predictions lie — never informs the choice."""
    n_cols = x.shape[1]
    if not params.select_features:
        return tuple(range(n_cols)), {}
    n = len(x)
    fit_end, valid_end = int(n * _SELECTION_FIT), int(n * _SELECTION_END)
    valid = np.arange(fit_end + gap, valid_end)
    if fit_end < 50 or len(valid) < 50:
        return tuple(range(n_cols)), {}  # too few rows to judge columns: keep them all
    _check_classes(y[:fit_end])
    forest = _forest(x[:fit_end], y[:fit_end], params)
    xv, yv = x[valid], y[valid].astype(float)
    base = float(np.mean((forest.predict(xv) - yv) ** 2))
    rng = np.random.default_rng(params.random_state)
    importance: dict[int, float] = {}
    for j in range(n_cols):
        rises = []
        for _ in range(_PERMUTATION_REPEATS):
            shuffled = xv.copy()
            shuffled[:, j] = rng.permutation(shuffled[:, j])
            rises.append(float(np.mean((forest.predict(shuffled) - yv) ** 2)) - base)
        importance[j] = float(np.mean(rises))
    ranked = sorted(importance, key=lambda j: -importance[j])
    keep = [j for j in ranked if importance[j] > 0]
    if len(keep) < params.min_features:
        keep = ranked[: params.min_features]
    return tuple(sorted(keep)), importance


def cross_fitted_predictions(
    x: np.ndarray, y: np.ndarray, columns: tuple[int, ...], params: DirectionParams, *, n_folds: int, gap: int
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold P(up) of each learner: ``(rows, predictions)`` with ``predictions[i]`` made for
    ``rows[i]`` by learners fit only on rows before its fold, less ``gap`` purged rows
    (``purged_folds``; the first half of the rows is training only)."""
    folds = purged_folds(len(x), n_folds=n_folds, gap=gap, min_train=len(x) // 2)
    rows = np.concatenate([test for _, test in folds])
    preds = np.concatenate([fit_learners(x[train], y[train], columns, params).learner_predictions(x[test])
                            for train, test in folds])  # fmt: skip
    return rows, preds


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def blend_weights(preds: np.ndarray, y: np.ndarray, allowed: tuple[str, ...] = LEARNERS) -> tuple[float, ...]:
    """Weights (summing to 1, each a multiple of 0.1, 0 for learners not ``allowed``) with the
    lowest log loss of the blended out-of-fold ``preds`` against ``y``. Ties go to the earlier
    grid point, which favours the forest (the grid starts at the forest alone)."""
    y = np.asarray(y, dtype=float)
    free = [i for i, name in enumerate(LEARNERS) if name in allowed]
    if not free:
        raise ValueError(f"no learner allowed; choose from {LEARNERS}")
    best, best_loss = None, np.inf
    steps = range(10, -1, -1)
    for combo in itertools.product(steps, repeat=len(free)):
        if sum(combo) != 10:
            continue
        weights = np.zeros(len(LEARNERS))
        weights[free] = np.asarray(combo) / 10
        loss = _log_loss(y, preds @ weights)
        if loss < best_loss - 1e-12:
            best, best_loss = weights, loss
    assert best is not None
    return tuple(float(w) for w in best)
