"""Ensembles of zoo models: four combiners, chosen out of sample, and a comparison table.

Rows (usable bars in time order) are split ``train ──purge── validation ──purge── test``
(``labels.purged_split``, purge = horizon rows). On *train*, every base model
(``ml_integration.zoo``) is fit on ``labels.purged_folds`` — expanding, time-ordered, purged —
to give out-of-fold (OOF) probabilities, then fit on all of *train*. The combiners:

* ``soft``: the mean of the models' P(up);
* ``weighted``: a weighted mean with configurable weights (:data:`DEFAULT_WEIGHTS`),
  renormalised over the models present; a weight of 0 removes a model;
* ``majority``: each model votes for the side its P(up) favours; the side with more votes wins
  and P(up) is the mean P(up) of the models that voted for it (0.5 on a tie). Its *consensus*
  figure is the share of models agreeing × their mean confidence (their P of that side);
* ``stacking``: an L1 logistic regression on the models' logit P(up), fit on the OOF rows only
  (never on a model's own training rows, where it looks better than it is); a model's weight
  is learned and may come out exactly 0 (the LSTM's often does).

The combiner served is chosen on *validation* by **log loss** (a proper score that punishes
confident mistakes hardest; Brier is reported beside it) unless one is named. Every model and
combiner is then scored on *test* (``comparison table``: accuracy, precision, recall, F1, AUC,
Brier, each next to the majority-class accuracy and the base-rate Brier, with the intervals of
``evaluation``). The confidence map (``calibration.ConfidenceCalibrator``) is fit on the chosen
combiner's validation and test probabilities (out of sample, time-ordered) and, with
``final_fit``, the base models are refit on every row so the served ensemble knows the most
recent market (the combiner's weights stay those fit out of sample).

Serving: :class:`EnsemblePricePrediction` is the default predictor (forest, boosting and LSTM
magnitude, ATR, Kelly inputs) with the direction probability and confidence taken from the
ensemble. Its models are saved with joblib in ``ensemble.joblib`` beside the default model's
files; the directory is sealed, and the sha256 is checked before anything is unpickled.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.validation import check_is_fitted

from common.checks import refuse_unknown_keys
from ml_integration.artifacts import library_versions
from ml_integration.calibration import ConfidenceCalibrator
from ml_integration.candles import epoch_seconds, validate_candles
from ml_integration.context import Reference
from ml_integration.evaluation import DirectionReport, brier_score, direction_report, log_loss
from ml_integration.features import MODEL_COLUMNS, MODEL_FEATURES, compute_feature_matrix
from ml_integration.labels import LABEL_KINDS, class_labels, purged_folds, purged_split
from ml_integration.prediction import MLPricePrediction, Prediction
from ml_integration.zoo import BASE_MODELS, available_models, canonical_name, make_model

__all__ = [
    "COMBINERS",
    "DEFAULT_WEIGHTS",
    "ENSEMBLE_FILE",
    "ComparisonRow",
    "Ensemble",
    "EnsembleConfig",
    "EnsemblePricePrediction",
    "MajorityVoting",
    "Resampled",
    "SoftVoting",
    "Stacking",
    "WeightedVoting",
    "format_table",
    "oof_probabilities",
    "tournament_ensemble",
    "train_ensemble",
]

log = logging.getLogger(__name__)

COMBINERS: tuple[str, ...] = ("soft", "weighted", "majority", "stacking")
ENSEMBLE_FILE = "ensemble.joblib"
#: The libraries whose objects ``ensemble.joblib`` pickles (a pickle is read back reliably only
#: by the versions that wrote it), recorded in the model's metadata.
ZOO_DISTRIBUTIONS = (
    "scikit-learn", "xgboost", "xgboost-cpu", "lightgbm", "catboost", "imbalanced-learn", "joblib",
)  # fmt: skip
COMPARISON_FILE = "comparison.json"
_ATR = MODEL_FEATURES.index("atr_14")

#: Weighted voting's default weights (the systems this project replaces); models absent from a
#: run are dropped and the rest renormalised; a model not listed gets 0.
DEFAULT_WEIGHTS: dict[str, float] = {
    "random_forest": 0.20,
    "xgboost": 0.25,
    "lstm": 0.20,
    "logistic_regression": 0.15,
    "svm": 0.20,
}


@dataclass(frozen=True)
class EnsembleConfig:
    """What ``tvgw train --ensemble`` trains (see the module docstring)."""

    models: tuple[str, ...] = BASE_MODELS
    combiner: str = "auto"
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    label: str = "binary"
    #: three-class sideways band, lookahead profit or triple-barrier width (fraction of the close)
    label_threshold: float = 0.005
    #: triple-barrier width in ATR(14) multiples instead of ``label_threshold``
    barrier_atr: float | None = None
    class_weight: str | None = None
    smote: bool = False
    n_folds: int = 3
    validation_fraction: float = 0.15
    test_fraction: float = 0.15
    final_fit: bool = True
    seed: int = 0
    #: per-model constructor arguments over the zoo's defaults, keyed by zoo name
    params: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(canonical_name(m) for m in self.models))
        object.__setattr__(self, "weights", {canonical_name(k): float(v) for k, v in self.weights.items()})
        object.__setattr__(self, "params", {canonical_name(k): dict(v) for k, v in self.params.items()})
        checks = [
            (bool(self.models), "models must name at least one model"),
            (self.combiner in ("auto", *COMBINERS), f"combiner must be auto or {', '.join(COMBINERS)}"),
            (self.label in LABEL_KINDS, f"label must be one of {', '.join(LABEL_KINDS)}"),
            (self.class_weight in (None, "balanced"), "class_weight must be None or 'balanced'"),
            (all(w >= 0 for w in self.weights.values()), "weights must be >= 0"),
            (self.n_folds >= 1, "n_folds must be >= 1"),
            (self.label_threshold >= 0, "label_threshold must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"invalid ensemble config: {message}")

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> EnsembleConfig:
        refuse_unknown_keys("ensemble options", values, cls)
        data = dict(values)
        if isinstance(data.get("models"), str):
            data["models"] = tuple(m for m in data["models"].split(",") if m.strip())
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Resampled(ClassifierMixin, BaseEstimator):
    """Fits ``estimator`` on SMOTE-oversampled copies of the rows it is *fit* on; prediction
    passes rows through untouched. Wrapping the model (rather than the data) is what keeps
    SMOTE on training rows: validation and test rows only ever reach ``predict_proba``."""

    def __init__(self, estimator: Any = None, seed: int = 0):
        self.estimator = estimator
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray) -> Resampled:
        from imblearn.over_sampling import SMOTE

        minority = int(np.bincount(np.asarray(y, dtype=int)).min())
        sampler = SMOTE(random_state=self.seed, k_neighbors=max(1, min(5, minority - 1)))
        x_res, y_res = sampler.fit_resample(np.asarray(X, dtype=float), np.asarray(y, dtype=int))
        self.n_resampled_ = len(y_res)
        self.estimator_ = clone(self.estimator).fit(x_res, y_res)
        self.classes_ = self.estimator_.classes_
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        return np.asarray(self.estimator_.predict_proba(X))


def _up(model: Any, x: np.ndarray) -> np.ndarray:
    """P(class 1) of a fitted classifier (whatever the order of its ``classes_``)."""
    proba = np.asarray(model.predict_proba(x))
    classes = list(getattr(model, "classes_", [0, 1]))
    return proba[:, classes.index(1)] if 1 in classes else np.zeros(len(x))


def oof_probabilities(
    factories: dict[str, Callable[[], Any]],
    x: np.ndarray,
    y: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, dict[str, float]]:
    """(n, models) P(up) of each row predicted by a model fit only on earlier rows (NaN for
    rows no fold predicts), and each model's seconds."""
    out = np.full((len(x), len(factories)), np.nan)
    seconds: dict[str, float] = {}
    for j, (name, factory) in enumerate(factories.items()):
        t0 = time.perf_counter()
        for train, test in folds:
            out[test, j] = _up(factory().fit(x[train], y[train]), x[test])
        seconds[name] = time.perf_counter() - t0
    return out, seconds


# --- combiners ---------------------------------------------------------------------------------
class SoftVoting:
    """P(up) = the mean of the models' P(up)."""

    name = "soft"

    def fit(self, probs: np.ndarray, y: np.ndarray, names: list[str]) -> SoftVoting:
        self.names_ = list(names)
        return self

    def predict(self, probs: np.ndarray) -> np.ndarray:
        return np.asarray(probs, dtype=float).mean(axis=1)


class WeightedVoting:
    """P(up) = Σ wᵢ·P(up)ᵢ with the configured weights renormalised over the models present."""

    name = "weighted"

    def __init__(self, weights: dict[str, float] | None = None):
        self.weights = dict(DEFAULT_WEIGHTS if weights is None else weights)

    def fit(self, probs: np.ndarray, y: np.ndarray, names: list[str]) -> WeightedVoting:
        raw = np.array([self.weights.get(n, 0.0) for n in names], dtype=float)
        if raw.sum() <= 0:
            raise ValueError(f"weighted voting: no positive weight among the models present {names}")
        self.names_ = list(names)
        self.weights_ = raw / raw.sum()
        return self

    def predict(self, probs: np.ndarray) -> np.ndarray:
        return np.asarray(probs, dtype=float) @ self.weights_


class MajorityVoting:
    """Each model votes for its side; P(up) is the mean P(up) of the winning side's voters
    (0.5 on a tie). :meth:`consensus` = share agreeing × their mean confidence."""

    name = "majority"

    def fit(self, probs: np.ndarray, y: np.ndarray, names: list[str]) -> MajorityVoting:
        self.names_ = list(names)
        return self

    @staticmethod
    def _votes(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = np.asarray(probs, dtype=float)
        up = p >= 0.5
        n_up = up.sum(axis=1)
        side_up = n_up * 2 > p.shape[1]
        tie = n_up * 2 == p.shape[1]
        agree = np.where(side_up[:, None], up, ~up)
        return p, agree, tie

    def predict(self, probs: np.ndarray) -> np.ndarray:
        p, agree, tie = self._votes(probs)
        mean_agreeing = (p * agree).sum(axis=1) / np.maximum(agree.sum(axis=1), 1)
        return np.where(tie, 0.5, mean_agreeing)

    def consensus(self, probs: np.ndarray) -> np.ndarray:
        """Share of models on the winning side × their mean P of that side (0 on a tie)."""
        p, agree, tie = self._votes(probs)
        side_p = np.where(agree, np.where(p >= 0.5, p, 1 - p), 0.0)
        share = agree.sum(axis=1) / p.shape[1]
        confidence = side_p.sum(axis=1) / np.maximum(agree.sum(axis=1), 1)
        return np.where(tie, 0.0, share * confidence)


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=float), 1e-4, 1 - 1e-4)
    return np.log(q / (1 - q))


class Stacking:
    """An L1 logistic regression on the models' logit P(up). Fit it on out-of-fold rows only:
    ``fit`` refuses rows holding NaN, the mark of a row no fold predicted."""

    name = "stacking"

    def __init__(self, C: float = 0.5):
        self.C = C

    def fit(self, probs: np.ndarray, y: np.ndarray, names: list[str]) -> Stacking:
        from sklearn.linear_model import LogisticRegression

        p = np.asarray(probs, dtype=float)
        if not np.isfinite(p).all():
            raise ValueError("stacking: the meta-learner's rows must all be out-of-fold predictions")
        self.names_ = list(names)
        self.meta_ = LogisticRegression(C=self.C, l1_ratio=1.0, solver="liblinear").fit(_logit(p), y)
        return self

    @property
    def weights(self) -> dict[str, float]:
        """Each model's learned coefficient on its logit (0: the model was left out)."""
        return {n: float(w) for n, w in zip(self.names_, self.meta_.coef_[0], strict=True)}

    def predict(self, probs: np.ndarray) -> np.ndarray:
        return np.asarray(self.meta_.predict_proba(_logit(probs))[:, 1])


Combiner = SoftVoting | WeightedVoting | MajorityVoting | Stacking


def make_combiner(name: str, weights: dict[str, float] | None = None) -> Combiner:
    if name == "soft":
        return SoftVoting()
    if name == "weighted":
        return WeightedVoting(weights)
    if name == "majority":
        return MajorityVoting()
    if name == "stacking":
        return Stacking()
    raise ValueError(f"unknown combiner {name!r}; known: {', '.join(COMBINERS)}")


# --- the comparison table ------------------------------------------------------------------------
@dataclass(frozen=True)
class ComparisonRow:
    """One model's or combiner's test-slice figures: ``evaluation.direction_report`` (accuracy,
    AUC, Brier, log loss with intervals, next to the majority class and the base-rate Brier)
    plus precision, recall and F1 of the up class at p ≥ 0.5, and the seconds it cost."""

    name: str
    kind: str
    precision: float
    recall: float
    f1: float
    seconds: float
    direction: DirectionReport

    def to_dict(self) -> dict[str, Any]:
        """One flat row (what ``comparison.json`` stores and :func:`format_table` prints)."""
        head = {"name": self.name, "kind": self.kind, "precision": self.precision, "recall": self.recall}
        return {**head, "f1": self.f1, "seconds": self.seconds, **self.direction.to_dict()}


def comparison_row(
    name: str, kind: str, y: np.ndarray, p: np.ndarray, train_up_rate: float, *, block: int, seconds: float
) -> ComparisonRow:
    """The row of ``name`` on labels ``y`` and probabilities ``p``."""
    from sklearn.metrics import f1_score, precision_score, recall_score

    called = (p >= 0.5).astype(int)
    return ComparisonRow(
        name=name,
        kind=kind,
        precision=float(precision_score(y, called, zero_division=0)),
        recall=float(recall_score(y, called, zero_division=0)),
        f1=float(f1_score(y, called, zero_division=0)),
        seconds=seconds,
        direction=direction_report(y, p, train_up_rate, block=block),
    )


def format_table(rows: list[ComparisonRow] | list[dict[str, Any]]) -> str:
    """The comparison table as fixed-width text (what ``tvgw train --ensemble`` prints)."""
    header = (
        f"{'model':<24} {'acc':>6} {'[95% CI]':>15} {'major':>6} {'prec':>6} {'recall':>6} {'F1':>6} "
        f"{'AUC':>6} {'[95% CI]':>15} {'Brier':>7} {'base':>7} {'sec':>7}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        r = row.to_dict() if isinstance(row, ComparisonRow) else row
        label = r["name"] if r["kind"] == "model" else f"{r['name']} (combiner)"
        acc_ci, auc_ci = r["accuracy_ci"], r["auc_ci"]
        lines.append(
            f"{label:<24} {r['accuracy']:6.3f} [{acc_ci[0]:.3f}, {acc_ci[1]:.3f}] "
            f"{r['majority_accuracy']:6.3f} {r['precision']:6.3f} {r['recall']:6.3f} {r['f1']:6.3f} "
            f"{r['auc']:6.3f} [{auc_ci[0]:.3f}, {auc_ci[1]:.3f}] {r['brier']:7.4f} "
            f"{r['base_rate_brier']:7.4f} {r['seconds']:7.1f}"
        )
    return "\n".join(lines)


# --- training --------------------------------------------------------------------------------------
@dataclass
class Ensemble:
    """Fitted base models and the combiner that joins them; ``predict_proba`` gives P(up)."""

    names: list[str]
    models: list[Any]
    combiner: Combiner
    confidence: ConfidenceCalibrator
    label: str

    def base_probabilities(self, x: np.ndarray) -> np.ndarray:
        """(n, models) P(up) of each base model for rows ``x`` (consecutive bars, oldest first)."""
        return np.column_stack([_up(model, x) for model in self.models])

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """The combiner's P(up) for each row of ``x``."""
        return np.asarray(self.combiner.predict(self.base_probabilities(x)))


def _factories(names: list[str], cfg: EnsembleConfig) -> dict[str, Callable[[], Any]]:
    """One zero-argument builder per model: the zoo's model, SMOTE-wrapped when asked (not the
    LSTM: synthetic rows have no history to form a sequence from)."""

    def build(name: str) -> Callable[[], Any]:
        def factory() -> Any:
            model = make_model(name, cfg.params.get(name), seed=cfg.seed, class_weight=cfg.class_weight)
            return Resampled(model, seed=cfg.seed) if cfg.smote and name != "lstm" else model

        return factory

    return {name: build(name) for name in names}


def _fit_all(
    factories: dict[str, Callable[[], Any]], x: np.ndarray, y: np.ndarray
) -> tuple[list[Any], dict[str, float]]:
    models, seconds = [], {}
    for name, factory in factories.items():
        t0 = time.perf_counter()
        models.append(factory().fit(x, y))
        seconds[name] = time.perf_counter() - t0
    return models, seconds


def _single_threaded(model: Any) -> None:
    """Serve with one thread per model: a signal scores one row, where starting threads costs
    more than it saves, and gunicorn's workers already run in parallel."""
    inner = getattr(model, "estimator_", None)
    if inner is not None:
        _single_threaded(inner)
    get_params = getattr(model, "get_params", None)
    if get_params is None:
        return
    if "n_jobs" in get_params(deep=False):  # CatBoost refuses changes once fit; it keeps its 2
        model.set_params(n_jobs=1)


@dataclass
class _Fits:
    """The base models fit on the training rows and what they said out of sample."""

    models: list[Any]
    oof: np.ndarray  # (train rows, models): NaN where no fold predicted
    validation: np.ndarray  # (validation rows, models)
    test: np.ndarray  # (test rows, models)
    oof_seconds: dict[str, float]
    fit_seconds: dict[str, float]


def _fit_base_models(
    factories: dict[str, Callable[[], Any]], x: np.ndarray, y: np.ndarray, split: Any, n_folds: int, gap: int
) -> _Fits:
    """Out-of-fold probabilities over the training rows (purged, expanding folds), then each
    model fit on all training rows and read on the validation and test rows."""
    tr = split.train
    folds = purged_folds(len(tr), n_folds=n_folds, gap=gap)
    oof, oof_seconds = oof_probabilities(factories, x[tr], y[tr], folds)
    models, fit_seconds = _fit_all(factories, x[tr], y[tr])
    read = [np.column_stack([_up(m, x[rows]) for m in models]) for rows in (split.calibration, split.test)]
    return _Fits(models, oof, read[0], read[1], oof_seconds, fit_seconds)


def _fit_combiners(
    names: list[str], fits: _Fits, y_train: np.ndarray, weights: dict[str, float]
) -> tuple[dict[str, Combiner], dict[str, float]]:
    """Every combiner that can run, fit on the out-of-fold rows only, and its seconds."""
    combiners = {name: make_combiner(name, weights) for name in COMBINERS}
    if not any(weights.get(n, 0.0) > 0 for n in names):
        combiners.pop("weighted")
        log.warning("ensemble: weighted voting skipped, no model present has a positive weight")
    rows = np.isfinite(fits.oof).all(axis=1)
    seconds: dict[str, float] = {}
    for name, combiner in combiners.items():
        t0 = time.perf_counter()
        combiner.fit(fits.oof[rows], y_train[rows], names)
        seconds[name] = time.perf_counter() - t0
    return combiners, seconds


def _choose(
    combiners: dict[str, Combiner], probs: np.ndarray, y: np.ndarray, wanted: str
) -> tuple[str, dict[str, dict[str, float]]]:
    """The combiner to serve (``wanted``, or the lowest validation log loss for ``auto``) and
    every combiner's validation scores."""
    validation: dict[str, dict[str, float]] = {}
    for name, combiner in combiners.items():
        p = combiner.predict(probs)
        validation[name] = {"log_loss": log_loss(y, p), "brier": brier_score(y, p)}
    chosen = min(validation, key=lambda n: validation[n]["log_loss"]) if wanted == "auto" else wanted
    if chosen not in combiners:
        raise ValueError(f"combiner {chosen!r} cannot run here (no model present has a positive weight)")
    return chosen, validation


def train_ensemble(
    x: np.ndarray, y: np.ndarray, horizon: int, config: EnsembleConfig | None = None
) -> tuple[Ensemble, dict[str, Any]]:
    """Fit, combine, choose and score (module docstring) on time-ordered rows ``x``/``y`` (0/1).

    Returns the ensemble to serve and its report (the comparison table under ``table``)."""
    cfg = config or EnsembleConfig()
    names = available_models(list(cfg.models))
    if not names:
        raise ValueError(f"none of the ensemble's models {list(cfg.models)} has its library installed")
    y = np.asarray(y, dtype=np.int64)
    split = purged_split(len(y), test_fraction=cfg.test_fraction,
                         calibration_fraction=cfg.validation_fraction, gap=horizon)  # fmt: skip
    factories = _factories(names, cfg)
    fits = _fit_base_models(factories, x, y, split, cfg.n_folds, horizon)
    combiners, combiner_seconds = _fit_combiners(names, fits, y[split.train], cfg.weights)
    chosen, validation = _choose(combiners, fits.validation, y[split.calibration], cfg.combiner)
    seconds = {n: fits.oof_seconds[n] + fits.fit_seconds[n] for n in names}
    table = _table(names, combiners, fits.test, y, split, horizon, {**seconds, **combiner_seconds})
    combiner = combiners[chosen]
    out_of_sample = np.concatenate([split.calibration, split.test])
    p_oos = combiner.predict(np.vstack([fits.validation, fits.test]))
    confidence = ConfidenceCalibrator.fit(p_oos, y[out_of_sample])
    models, final_seconds = _fit_all(factories, x, y) if cfg.final_fit else (fits.models, {})
    for model in models:
        _single_threaded(model)
    stacking = combiners["stacking"]
    report = {
        "models": names,
        "skipped_models": [m for m in cfg.models if m not in names],
        "label": cfg.label,
        "selection_metric": "log_loss",
        "chosen_combiner": chosen,
        "validation": validation,
        "table": [row.to_dict() for row in table],
        "stacking_weights": stacking.weights if isinstance(stacking, Stacking) else {},
        "majority_consensus_mean": float(np.mean(MajorityVoting().consensus(fits.test))),
        "lean": {"mean_predicted_p": float(np.mean(combiner.predict(fits.test))),
                 "realised_up_rate": float(np.mean(y[split.test]))},
        "split": {**split.describe(), "oof_rows": int(np.isfinite(fits.oof).all(axis=1).sum()),
                  "oof_folds": cfg.n_folds},
        "seconds": {"oof": fits.oof_seconds, "fit": fits.fit_seconds, "combiners": combiner_seconds,
                    "final_fit": final_seconds},
        "served_models_fit_on": "all rows" if cfg.final_fit else "train rows",
    }  # fmt: skip
    return Ensemble(names, models, combiner, confidence, cfg.label), report


def tournament_ensemble(
    tournament: Any, x: np.ndarray, y: np.ndarray, params: Any, *, learn: np.ndarray
) -> Ensemble:
    """The served ensemble of a tournament won by a zoo combiner: the zoo's models refit on the
    ``learn`` rows of ``x``/``y`` (the model columns and labels of every row the tournament saw;
    ``learn``: those the served model learns from, all but the test slice without a final fit),
    the combiner fit on every out-of-fold row of the tournament (indexed in ``y``, not in
    ``learn``: they reach past it), the confidence on the winner's scored rows."""
    from ml_integration.tournament import zoo_sizes

    names = list(tournament.zoo_models)
    sizes = zoo_sizes(params)
    y = np.asarray(y)
    models = [make_model(n, sizes.get(n), seed=params.random_state).fit(x[learn], y[learn]) for n in names]
    for model in models:
        _single_threaded(model)
    rows = tournament.oof_rows
    combiner = make_combiner(tournament.winner).fit(tournament.oof["zoo"][rows], y[rows], names)
    return Ensemble(names, models, combiner, tournament.confidence(), "binary")


def _table(
    names: list[str], combiners: dict[str, Combiner], probs_test: np.ndarray, y: np.ndarray,
    split: Any, horizon: int, seconds: dict[str, float],
) -> list[ComparisonRow]:  # fmt: skip
    """Test-slice rows for every base model, then every combiner."""
    te = split.test
    up_rate = float(y[split.train].mean())
    block = max(24, horizon)
    rows = [
        comparison_row(n, "model", y[te], probs_test[:, j], up_rate, block=block, seconds=seconds[n])
        for j, n in enumerate(names)
    ]
    rows += [
        comparison_row(
            name, "combiner", y[te], c.predict(probs_test), up_rate, block=block, seconds=seconds[name]
        )
        for name, c in combiners.items()
    ]
    return rows


# --- serving ---------------------------------------------------------------------------------------
class EnsemblePricePrediction(MLPricePrediction):
    """The default predictor with its direction probability and confidence from an ensemble.

    Magnitude, ATR, the LSTM magnitude and everything else the strategy reads are the default
    model's; ``direction_probability`` is the chosen combiner's P(up) and ``confidence`` its
    out-of-sample calibrated P(side right), which also feeds Kelly's win-rate bounds."""

    def __init__(self, config: Any = None, *, ensemble: EnsembleConfig | None = None, **overrides: Any):
        # ``--ensemble`` names the served model itself: no tournament chooses another
        super().__init__(config, **{"tournament": (), **overrides})
        self.ensemble_config = ensemble or EnsembleConfig()
        self.ensemble_: Ensemble | None = None

    @classmethod
    def adopt(cls, predictor: MLPricePrediction, ensemble: Ensemble) -> EnsemblePricePrediction:
        """``predictor`` (trained) serving ``ensemble``'s direction probability and confidence:
        how a tournament won by a zoo combiner is served."""
        served = EnsembleConfig(models=tuple(ensemble.names), combiner=ensemble.combiner.name)
        out = cls(predictor.config, ensemble=served)
        out.config = predictor.config  # the constructor switched the tournament off; this one had it
        out.fitted_, out.validation_, out.tournament_ = (
            predictor.fitted_,
            predictor.validation_,
            predictor.tournament_,
        )
        out.ensemble_ = ensemble
        fitted = out._require()
        fitted.confidence = ensemble.confidence
        fitted.info["ensemble"] = {"source": "tournament", "models": ensemble.names,
                                   "chosen_combiner": ensemble.combiner.name}  # fmt: skip
        return out

    @property
    def sequence_length(self) -> int:
        """Long enough for the ensemble's LSTM too (it shares the default LSTM's length)."""
        wants_lstm = self.ensemble_.names if self.ensemble_ is not None else self.ensemble_config.models
        return self.config.lstm.sequence_length if self.config.use_lstm or "lstm" in wants_lstm else 1

    def _ensemble_config(self) -> EnsembleConfig:
        cfg = self.ensemble_config
        lstm = {**cfg.params.get("lstm", {}), "sequence_length": self.config.lstm.sequence_length}
        return replace(cfg, params={**cfg.params, "lstm": lstm})

    def train_models(
        self, df: pd.DataFrame, target_periods: int = 5, *, timeframe_sec: int | None = None,
        on_stage: Callable[[str], None] | None = None, features: tuple[np.ndarray, np.ndarray] | None = None,
        reference: Reference | None = None, lean: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        report = super().train_models(
            df, target_periods, timeframe_sec=timeframe_sec, on_stage=on_stage, features=features,
            reference=reference, lean=lean,
        )  # fmt: skip
        (on_stage or (lambda name: None))("ensemble")
        fitted = self._require()
        x, y = self._ensemble_rows(validate_candles(df), fitted.horizon, fitted.timeframe_sec)
        ensemble, ensemble_report = train_ensemble(x, y, fitted.horizon, self._ensemble_config())
        self.ensemble_ = ensemble
        fitted.confidence = ensemble.confidence
        ensemble_report["library_versions"] = library_versions(*ZOO_DISTRIBUTIONS)
        fitted.info["ensemble"] = ensemble_report
        return {**report, "ensemble": ensemble_report}

    def _model_matrix(self, frame: pd.DataFrame, tf: int) -> np.ndarray:
        """The models' feature columns for every row of a validated frame (NaN without a full,
        gap-free window)."""
        stamps = epoch_seconds(frame.index)
        full = compute_feature_matrix(
            frame.to_numpy(), stamps, tf, max_missing_bars=self.config.max_missing_bars
        )
        return full[:, MODEL_COLUMNS]

    def _ensemble_rows(self, df: pd.DataFrame, horizon: int, tf: int) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.ensemble_config
        matrix = self._model_matrix(df, tf)
        close = df["close"].to_numpy(dtype=float)
        labels = class_labels(
            df, cfg.label, horizon, threshold=cfg.label_threshold, atr=matrix[:, _ATR] * close,
            barrier_atr=cfg.barrier_atr, timeframe_sec=tf, max_missing_bars=self.config.max_missing_bars,
        )  # fmt: skip
        y, usable = labels.binary_target()
        rows = np.flatnonzero(usable & np.isfinite(matrix).all(axis=1))
        return matrix[rows], y[rows]

    def _ensemble(self) -> Ensemble:
        if self.ensemble_ is None:
            from ml_integration.exceptions import NotTrainedError

            raise NotTrainedError("the ensemble is not trained: call train_models() or load it")
        return self.ensemble_

    def predict(
        self, df: pd.DataFrame, *, features: np.ndarray | None = None, reference: Reference | None = None
    ) -> Prediction:
        matrix, values, times = self.feature_tail(df, features)
        base = self._predict_tail(matrix, values, times, reference=reference)
        fitted, ensemble = self._require(), self._ensemble()
        p = float(ensemble.predict_proba(matrix)[-1])
        side = 1.0 if p >= 0.5 else -1.0
        votes = [v for v in (base.magnitude_prediction, base.lstm_prediction) if v is not None]
        return replace(
            base, direction_probability=p, raw_probability=p, confidence=float(fitted.confidence(p)),
            agreement=float(np.mean([np.sign(v) == side for v in votes])),
            signal_strength=0.5 * ((2 * p - 1) * fitted.typical_move + base.ensemble_magnitude),
        )  # fmt: skip

    def direction_probabilities(self, df: pd.DataFrame, *, reference: Reference | None = None) -> np.ndarray:
        """The ensemble's P(up) for every row of ``df`` (NaN without a full window): the numbers
        :meth:`predict` serves one row at a time (the zoo reads no context family: ``reference``
        is not needed)."""
        fitted, ensemble = self._require(), self._ensemble()
        frame = validate_candles(df)
        matrix = self._model_matrix(frame, fitted.timeframe_sec)
        out = np.full(len(frame), np.nan)
        ok = np.isfinite(matrix).all(axis=1)
        if ok.any():
            out[ok] = ensemble.predict_proba(matrix[ok])
        return out

    def write_artifacts(self, directory: str | Path) -> dict[str, Any]:
        import joblib

        meta = super().write_artifacts(directory)
        folder = Path(directory)
        joblib.dump(self._ensemble(), folder / ENSEMBLE_FILE)
        report = self._require().info.get("ensemble", {})
        (folder / COMPARISON_FILE).write_text(json.dumps(report, indent=2, default=str))
        return meta

    def read_artifacts(self, directory: str | Path, metadata: dict[str, Any]) -> EnsemblePricePrediction:
        """Load files whose sha256 :func:`artifacts.verify` has already checked (joblib runs
        code when it loads: only a sealed, verified directory may reach it)."""
        import joblib

        super().read_artifacts(directory, metadata)
        self.ensemble_ = joblib.load(Path(directory) / ENSEMBLE_FILE)
        return self
