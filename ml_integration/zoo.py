"""The model zoo: eight direction classifiers behind one factory, each optional.

``make_model(name, params, seed=..., class_weight=...)`` returns an unfitted scikit-learn
compatible binary classifier (``fit(X, y)``, ``predict_proba(X)[:, 1]`` = P(class 1)); the
ensemble (``ml_integration.ensemble``) and the tuner (``ml_integration.tuning``) build every
model through it, so a hyperparameter means the same thing in both. ``params`` are the
library's own constructor arguments and override the defaults below.

Each model's library is imported through :func:`import_library`; a model whose library is
missing is left out of :func:`available_models` with one log line, and ``make_model`` names
the package to install. Defaults are sized for the reference machine (2 cores: ``n_jobs`` 2).

Why the wrappers:

* ``svm``: an SVC has no probabilities of its own. :class:`PlattSVM` fits Platt's sigmoid on
  the SVM's decision values of *later* rows than it was trained on (``labels.purged_folds``),
  never on its own training rows, where the margins are overconfident.
* ``lstm``: :class:`LSTMClassifier` wraps the project's sequence model (``ml_integration.lstm``,
  trained with Keras, served by the numpy forward pass): the rows of ``X`` are taken as
  consecutive bars and each row's sequence is the ``sequence_length`` rows ending at it.
* ``class_weight="balanced"``: passed natively where the library has it (forest, boosting,
  LightGBM, SVM, logistic regression; CatBoost's ``auto_class_weights``) and as balanced
  sample weights for XGBoost.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.validation import check_is_fitted

from ml_integration.lstm import LSTMConfig, NumpyLSTM

__all__ = [
    "ALIASES",
    "BASE_MODELS",
    "LIBRARIES",
    "LSTMClassifier",
    "ModelUnavailableError",
    "PlattSVM",
    "available_models",
    "canonical_name",
    "import_library",
    "make_model",
]

log = logging.getLogger(__name__)

BASE_MODELS: tuple[str, ...] = (
    "random_forest",
    "hist_gradient_boosting",
    "xgboost",
    "lightgbm",
    "catboost",
    "svm",
    "logistic_regression",
    "lstm",
)

#: The library each model imports (a missing one removes that model only).
LIBRARIES: dict[str, str] = {
    "random_forest": "sklearn",
    "hist_gradient_boosting": "sklearn",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "catboost": "catboost",
    "svm": "sklearn",
    "logistic_regression": "sklearn",
    "lstm": "keras",
}

#: Short names accepted by the command line (``--models rf,xgb,lstm``).
ALIASES: dict[str, str] = {
    "rf": "random_forest",
    "hgb": "hist_gradient_boosting",
    "gb": "hist_gradient_boosting",
    "xgb": "xgboost",
    "lgbm": "lightgbm",
    "lgb": "lightgbm",
    "cat": "catboost",
    "lr": "logistic_regression",
    "logreg": "logistic_regression",
}


class ModelUnavailableError(ImportError):
    """The model's library is not installed: install the ``models`` extra
    (``pip install 'tvgw[models]'``; ``tvgw[train]`` for the LSTM) or leave the model out."""


def canonical_name(name: str) -> str:
    """``"xgb"`` → ``"xgboost"``; raises ``ValueError`` naming the known models otherwise."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in BASE_MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(BASE_MODELS)} (or {', '.join(ALIASES)})")
    return key


def import_library(module: str) -> Any:
    """The one place the zoo imports an optional library (tests point it at a missing one)."""
    if module == "keras":
        from ml_integration.exceptions import MissingTrainExtraError
        from ml_integration.lstm import require_keras

        try:
            return require_keras()  # also quiets TensorFlow's start-up chatter
        except MissingTrainExtraError as exc:
            raise ImportError(str(exc)) from exc
    return importlib.import_module(module)


def _library_error(name: str, libraries: Mapping[str, str]) -> str | None:
    try:
        import_library(libraries[name])
    except ImportError as exc:
        return f"{name} ({libraries[name]}: {exc})"
    return None


def available_models(
    names: tuple[str, ...] | list[str] = BASE_MODELS, *, libraries: Mapping[str, str] = LIBRARIES
) -> list[str]:
    """The models of ``names`` whose library imports, in order. The missing ones are named in
    one log line (a warning), not an error: each model is optional."""
    wanted = [canonical_name(n) for n in names]
    missing = {n: _library_error(n, libraries) for n in dict.fromkeys(wanted)}
    skipped = [why for why in missing.values() if why]
    if skipped:
        log.warning("model zoo: skipping %s", "; ".join(skipped))
    return [n for n in wanted if not missing[n]]


def _defaults(name: str, seed: int, class_weight: str | None) -> dict[str, Any]:
    """Each model's default constructor arguments (small enough for one symbol-year on 2 cores)."""
    table: dict[str, dict[str, Any]] = {
        "random_forest": dict(n_estimators=200, max_depth=8, min_samples_leaf=30, max_features="sqrt",
                              n_jobs=2, random_state=seed, class_weight=class_weight),
        "hist_gradient_boosting": dict(max_iter=200, learning_rate=0.05, max_depth=5, min_samples_leaf=50,
                                       l2_regularization=1.0, early_stopping=False, random_state=seed,
                                       class_weight=class_weight),
        "xgboost": dict(n_estimators=200, max_depth=4, learning_rate=0.05, subsample=0.8,
                        colsample_bytree=0.8, min_child_weight=20, tree_method="hist", n_jobs=2,
                        random_state=seed, eval_metric="logloss"),
        "lightgbm": dict(n_estimators=200, num_leaves=15, learning_rate=0.05, min_child_samples=50,
                         subsample=0.8, subsample_freq=1, colsample_bytree=0.8, n_jobs=2,
                         random_state=seed, class_weight=class_weight, verbose=-1),
        "catboost": dict(iterations=200, depth=5, learning_rate=0.05, thread_count=2, random_seed=seed,
                         verbose=False, allow_writing_files=False,
                         auto_class_weights="Balanced" if class_weight == "balanced" else None),
        "svm": dict(C=1.0, gamma="scale", n_folds=2, gap=24, seed=seed, class_weight=class_weight),
        "logistic_regression": dict(C=0.1, max_iter=2000, class_weight=class_weight),
        "lstm": dict(sequence_length=24, units=(50, 30), epochs=12, batch_size=128, seed=seed),
    }  # fmt: skip
    return table[name]


def make_model(
    name: str, params: dict[str, Any] | None = None, *, seed: int = 0, class_weight: str | None = None
) -> Any:
    """An unfitted classifier for zoo model ``name`` (or an alias), ``params`` over the defaults.

    Raises ``ValueError`` for an unknown name, a ``class_weight`` other than None/"balanced",
    and :class:`ModelUnavailableError` when the model's library is missing."""
    key = canonical_name(name)
    if class_weight not in (None, "balanced"):
        raise ValueError(f"class_weight must be None or 'balanced', got {class_weight!r}")
    try:
        import_library(LIBRARIES[key])
    except ImportError as exc:
        raise ModelUnavailableError(
            f"model {key} needs the {LIBRARIES[key]} library, which does not import ({exc}); "
            f"install it (pip install 'tvgw[models]', 'tvgw[train]' for the LSTM) or leave {key} out"
        ) from exc
    kwargs = {**_defaults(key, seed, class_weight), **(params or {})}
    return _BUILDERS[key](kwargs, class_weight)


def _random_forest(kwargs: dict[str, Any], _: str | None) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(**kwargs)


def _hist_gradient_boosting(kwargs: dict[str, Any], _: str | None) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(**kwargs)


def _xgboost(kwargs: dict[str, Any], class_weight: str | None) -> Any:
    from xgboost import XGBClassifier

    model = XGBClassifier(**kwargs)
    return BalancedSampleWeights(model) if class_weight == "balanced" else model


def _lightgbm(kwargs: dict[str, Any], _: str | None) -> Any:
    from lightgbm import LGBMClassifier

    return LGBMClassifier(**kwargs)


def _catboost(kwargs: dict[str, Any], _: str | None) -> Any:
    from catboost import CatBoostClassifier

    return CatBoostClassifier(**kwargs)


def _svm(kwargs: dict[str, Any], _: str | None) -> Any:
    return PlattSVM(**kwargs)


def _logistic_regression(kwargs: dict[str, Any], _: str | None) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(**kwargs))


def _lstm(kwargs: dict[str, Any], class_weight: str | None) -> Any:
    return LSTMClassifier(**kwargs, class_weight=class_weight)


_BUILDERS = {
    "random_forest": _random_forest,
    "hist_gradient_boosting": _hist_gradient_boosting,
    "xgboost": _xgboost,
    "lightgbm": _lightgbm,
    "catboost": _catboost,
    "svm": _svm,
    "logistic_regression": _logistic_regression,
    "lstm": _lstm,
}


class BalancedSampleWeights(ClassifierMixin, BaseEstimator):
    """Fits ``estimator`` with balanced sample weights (for libraries without ``class_weight``)."""

    def __init__(self, estimator: Any = None):
        self.estimator = estimator

    def fit(self, X: np.ndarray, y: np.ndarray) -> BalancedSampleWeights:
        from sklearn.utils.class_weight import compute_sample_weight

        self.estimator_ = clone(self.estimator).fit(X, y, sample_weight=compute_sample_weight("balanced", y))
        self.classes_ = self.estimator_.classes_
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        return np.asarray(self.estimator_.predict_proba(X))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * z) + 1.0)


def _fit_platt(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, b) of P(1) = sigmoid(a·score + b), fit on held-out scores."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y)) < 2:
        return 0.0, float(np.log((y.mean() + 1e-3) / (1 - y.mean() + 1e-3)))
    model = LogisticRegression(C=1e4).fit(scores[:, None], y)
    return float(model.coef_[0, 0]), float(model.intercept_[0])


class PlattSVM(ClassifierMixin, BaseEstimator):
    """An RBF SVM (on standardised inputs) whose decision values become probabilities through
    Platt's sigmoid fit out of sample: on each of ``n_folds`` time-ordered purged folds an SVM
    is fit on the earlier rows and the sigmoid's inputs are its scores on the later ones; the
    served SVM is then fit on every row and read through that sigmoid."""

    def __init__(
        self, C: float = 1.0, gamma: str | float = "scale", n_folds: int = 2, gap: int = 24,
        seed: int = 0, class_weight: str | None = None,
    ):  # fmt: skip
        self.C = C
        self.gamma = gamma
        self.n_folds = n_folds
        self.gap = gap
        self.seed = seed
        self.class_weight = class_weight

    def _svm(self) -> Any:
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC

        svc = SVC(C=self.C, gamma=self.gamma, class_weight=self.class_weight, random_state=self.seed)
        return make_pipeline(StandardScaler(), svc)

    def fit(self, X: np.ndarray, y: np.ndarray) -> PlattSVM:
        from ml_integration.labels import purged_folds

        x, target = np.asarray(X, dtype=float), np.asarray(y).astype(int)
        scores, outcomes = [], []
        for train, test in purged_folds(len(x), n_folds=self.n_folds, gap=min(self.gap, len(x) // 10)):
            if len(np.unique(target[train])) < 2:
                continue
            scores.append(self._svm().fit(x[train], target[train]).decision_function(x[test]))
            outcomes.append(target[test])
        held_out = np.concatenate(scores) if scores else np.zeros(1)
        self.platt_ = _fit_platt(held_out, np.concatenate(outcomes) if outcomes else target[:1])
        self.svm_ = self._svm().fit(x, target)
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "svm_")
        a, b = self.platt_
        p = _sigmoid(a * self.svm_.decision_function(np.asarray(X, dtype=float)) + b)
        return np.column_stack([1 - p, p])


def _row_sequences(x: np.ndarray, sequence_length: int) -> np.ndarray:
    """(n, T, F): the ``T`` rows ending at each row; the first rows repeat row 0 before it."""
    padded = np.concatenate([np.repeat(x[:1], sequence_length - 1, axis=0), x])
    offsets = np.arange(sequence_length)
    return padded[np.arange(len(x))[:, None] + offsets[None, :]]


class LSTMClassifier(ClassifierMixin, BaseEstimator):
    """The project's LSTM (``ml_integration.lstm``) as a direction classifier.

    The network is trained (Keras, MSE on the 0/1 target) on the first
    ``1 - validation_fraction`` of the rows with early stopping on the rest, which come later
    in time; Platt's sigmoid is fit on its outputs over those later rows, so the probabilities
    come from rows the network was not fit on. Rows of ``X`` are consecutive bars; the first
    ``sequence_length - 1`` rows of a block repeat its first row as history. Prediction runs the
    numpy forward pass (no TensorFlow). ``class_weight`` is not applied (Keras' MSE here has no
    sample weights); the sigmoid absorbs the base rate."""

    def __init__(
        self, sequence_length: int = 24, units: tuple[int, ...] = (50, 30), epochs: int = 12,
        batch_size: int = 128, dropout: float = 0.2, learning_rate: float = 2e-3, patience: int = 3,
        validation_fraction: float = 0.2, seed: int = 0, class_weight: str | None = None,
    ):  # fmt: skip
        self.sequence_length = sequence_length
        self.units = units
        self.epochs = epochs
        self.batch_size = batch_size
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.seed = seed
        self.class_weight = class_weight

    def fit(self, X: np.ndarray, y: np.ndarray) -> LSTMClassifier:
        from ml_integration.lstm import train_lstm

        x, target = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
        seqs = _row_sequences(x, self.sequence_length)
        cut = max(1, min(len(x) - 1, round(len(x) * (1 - self.validation_fraction))))
        config = LSTMConfig(
            sequence_length=self.sequence_length, units=tuple(self.units), dropout=self.dropout,
            epochs=self.epochs, batch_size=self.batch_size, patience=self.patience,
            learning_rate=self.learning_rate, seed=self.seed,
        )  # fmt: skip
        network, _keras = train_lstm(seqs[:cut], target[:cut], seqs[cut:], target[cut:], config)
        self.network_: NumpyLSTM = network
        self.platt_ = _fit_platt(network.predict(seqs[cut:]), target[cut:].astype(int))
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "network_")
        a, b = self.platt_
        out = self.network_.predict(_row_sequences(np.asarray(X, dtype=float), self.sequence_length))
        p = _sigmoid(a * out + b)
        return np.column_stack([1 - p, p])
