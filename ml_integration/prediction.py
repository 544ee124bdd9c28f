"""``MLPricePrediction``: direction, magnitude and LSTM models trained together, served fast.

Training (``train_models``), in time order on the usable rows (full gap-free feature window,
full 24-bar sequence, a label):

    train ──purge── calibration ──purge── test        (purge = horizon rows)

* Validation. The direction model (``direction``) is fit on every row before the test slice's
  purge gap: permutation importance on a purged slice inside those rows chooses its columns,
  then a forest and a regularised logistic regression (and optionally a boosted classifier)
  are fit in expanding, purged, time-ordered folds (``labels.purged_folds``) over the later
  half. Their out-of-fold predictions fit the blend weights, Platt scaling (the blend → a
  calibrated P(up); its intercept only when the data support a lean) and the confidence
  calibrator (``calibration``: P(predicted side right | |2p − 1|)): cross-fitted, never on rows
  a learner was fit on. The magnitude models: a HistGradientBoostingRegressor (forward log
  return) on *train*, the LSTM on *train* with early stopping on *calibration*; the LSTM's
  weight in their blend is learned on *calibration* (least squares, clipped; it may be 0).
  Every reported metric is measured on *test*, after the purge gap, next to its baseline
  (``evaluation``): the report describes models that never saw the test rows.
* Final fit (``ModelConfig.final_fit``, on by default): the direction learners (same columns)
  and the boosting regressor are then refit on every usable row up to the last bar, so the
  served model knows the most recent market; the blend weights and calibrators are refit on
  the out-of-fold predictions plus the validation blend's *test* predictions (out of fold as
  well: each was made by learners fit on earlier rows only). The LSTM keeps its validation fit
  (it does not touch the probability).

Serving (``predict``) touches only the last ``LOOKBACK + 23`` candles, computes features in
numpy, walks the compiled trees (``trees``) and runs the LSTM in numpy (``lstm``): no
TensorFlow, no sklearn, no pandas work per call beyond slicing.

Combination (the outer dict's fields):

* ``direction_probability`` p: the calibrated blend's probability that the close in
  ``horizon`` bars is above the current close;
* ``ensemble_magnitude``: ``w × GB + (1 − w) × LSTM`` forward log return (``w``: the configured
  ``gb_weight``, or the one learned out of sample);
* ``confidence``: the out-of-sample probability that the side p favours is right, given
  |2p − 1| (``calibration.ConfidenceCalibrator``); about 0.5 where the model has no edge, so
  ``ml_gate``'s threshold means what it says;
* ``agreement``: the share of the two regression models whose sign matches the classifier's
  side (a quality-grade component only; it no longer moves confidence);
* ``signal_strength``: the signed expected move, the mean of the classifier-implied move
  (2p − 1) × (mean absolute move in training) and the ensemble magnitude.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from common.checks import refuse_unknown_keys
from ml_integration.artifacts import library_versions
from ml_integration.calibration import ConfidenceCalibrator, PlattCalibrator
from ml_integration.candles import (
    COLUMNS,
    check_candle_values,
    epoch_seconds,
    filled_bar_times,
    infer_timeframe_seconds,
    validate_candles,
)
from ml_integration.context import EXTENDED_FEATURES, EXTRA_FEATURES, FAMILY_COLUMNS, Reference, extra_matrix
from ml_integration.direction import (
    LEARNERS,
    DirectionModel,
    DirectionParams,
    LogisticModel,
    blend_weights,
    cross_fitted_predictions,
    fit_learners,
    one_openmp_thread,
    select_columns,
)
from ml_integration.direction import make_forest as direction_forest
from ml_integration.evaluation import brier_score, calibration_by_decile, direction_report, magnitude_report
from ml_integration.exceptions import CandleDataError, GapInWindowError, NotTrainedError
from ml_integration.feature_span import FeatureSpan
from ml_integration.features import (
    FEATURE_NAMES,
    LOOKBACK,
    MODEL_COLUMNS,
    MODEL_FEATURES,
    compute_feature_matrix,
)
from ml_integration.labels import Labels, TimeSplit, make_labels, purged_split
from ml_integration.lstm import LSTMConfig, NumpyLSTM, build_sequences, sequence_ready
from ml_integration.tournament import (
    CANDIDATES,
    COMBINER_CANDIDATES,
    Tournament,
    TournamentConfig,
    run_tournament,
)
from ml_integration.trees import CompiledTrees, compile_forest_classifier, compile_hist_gradient_boosting

__all__ = [
    "ConfidenceCalibrator",
    "Design",
    "MLPricePrediction",
    "ModelConfig",
    "PlattCalibrator",
    "Prediction",
    "make_forest",
]

_FORMAT_VERSION = 3
_ATR = MODEL_FEATURES.index("atr_14")


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of the three models and of the split."""

    n_estimators: int = 200
    max_depth: int = 8
    min_samples_leaf: int = 30
    gb_max_iter: int = 200
    gb_learning_rate: float = 0.05
    gb_max_depth: int = 5
    #: Weight of the boosting regressor in the magnitude blend (the LSTM has 1 − it). None: learned
    #: by least squares on the calibration slice, clipped to [0, 1] (the LSTM's may be 0).
    gb_weight: float | None = None
    #: The direction blend (``direction``): its boosted classifier and logistic regression.
    direction_boost_max_iter: int = 150
    direction_boost_learning_rate: float = 0.05
    direction_boost_max_depth: int = 3
    logistic_c: float = 0.05
    direction_learners: tuple[str, ...] = DirectionParams.learners
    #: Choose the columns the direction learners read by permutation importance (``direction``).
    select_features: bool = True
    min_features: int = 10
    #: Purged, time-ordered folds whose out-of-fold predictions fit the blend and calibrators.
    calibration_folds: int = 3
    use_lstm: bool = True
    lstm: LSTMConfig = field(default_factory=LSTMConfig)
    test_fraction: float = 0.15
    calibration_fraction: float = 0.15
    max_missing_bars: int = 0
    min_edge: float = 0.03
    n_jobs: int = 2
    random_state: int = 0
    #: Refit the forest and boosting model on every usable row after validation (the report
    #: keeps the validation figures); False serves the validation models themselves.
    final_fit: bool = True
    #: The tournament's candidates (``tournament.CANDIDATES``); empty: serve the default blend
    #: without a tournament (what models trained before it did).
    tournament: tuple[str, ...] = CANDIDATES
    tournament_folds: int = 4
    #: The default blend's columns chosen beforehand (positions in a ``MODEL_FEATURES`` row);
    #: empty: chosen here by permutation importance. A walk-forward chooses them once per refit
    #: schedule and hands them to the windows between (``backtest.models``).
    direction_columns: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """The config a dict describes: a model's stored ``config`` (JSON, so its tuples came
        back as lists) or a training run's ``model`` options. Keys it does not know, here or in
        ``lstm``, are refused; what it leaves out keeps its default."""
        refuse_unknown_keys("model options", data, cls)
        values = dict(data)
        lstm = values.get("lstm", {})
        if not isinstance(lstm, LSTMConfig):
            refuse_unknown_keys("LSTM options", lstm, LSTMConfig)
            lstm = LSTMConfig(**{**lstm, "units": tuple(lstm.get("units", LSTMConfig().units))})
        values["lstm"] = lstm
        values["direction_learners"] = tuple(values.get("direction_learners", DirectionParams.learners))
        if "tournament" in values:  # JSON gives a list; a model saved before the tournament has none
            values["tournament"] = tuple(values["tournament"])
        if "direction_columns" in values:
            values["direction_columns"] = tuple(int(c) for c in values["direction_columns"])
        return cls(**values)

    def direction_params(self) -> DirectionParams:
        return DirectionParams(
            n_estimators=self.n_estimators, max_depth=self.max_depth, min_samples_leaf=self.min_samples_leaf,
            boost_max_iter=self.direction_boost_max_iter,
            boost_learning_rate=self.direction_boost_learning_rate,
            boost_max_depth=self.direction_boost_max_depth, logistic_c=self.logistic_c,
            min_features=self.min_features, select_features=self.select_features,
            learners=self.direction_learners, n_jobs=self.n_jobs, random_state=self.random_state,
        )  # fmt: skip


class Design(NamedTuple):
    """The training design of a candle frame (see :meth:`MLPricePrediction.design`)."""

    df: pd.DataFrame
    timeframe_sec: int
    matrix: np.ndarray
    labels: Labels
    rows: np.ndarray
    split: TimeSplit
    #: ``context.EXTRA_FEATURES`` for every row (the baseline's columns and context families)
    extra: np.ndarray


@dataclass(frozen=True)
class Prediction:
    """What the models say about the bar after the last candle given."""

    direction_probability: float
    raw_probability: float
    magnitude_prediction: float
    lstm_prediction: float | None
    ensemble_magnitude: float
    confidence: float
    agreement: float
    signal_strength: float
    top_features: list[tuple[str, float]]
    feature_values: dict[str, float]
    candle_time: pd.Timestamp
    close: float
    atr: float
    #: Open times of bars missing from the candles read and filled flat (``candles.fill_short_gaps``).
    filled_bars: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "direction_probability": self.direction_probability,
            "magnitude_prediction": self.magnitude_prediction,
            "lstm_prediction": self.lstm_prediction,
            "ensemble_magnitude": self.ensemble_magnitude,
            "confidence": self.confidence,
            "signal_strength": self.signal_strength,
            "top_features": [{"name": n, "weight": w} for n, w in self.top_features],
        }


@dataclass
class _Fitted:
    #: None for a lean ``no_model`` (``train_models(lean=True)``): nothing fit, nothing served
    direction: DirectionModel | None
    boosting: CompiledTrees | None
    lstm: NumpyLSTM | None
    gb_weight: float
    calibrator: PlattCalibrator
    confidence: ConfidenceCalibrator
    horizon: int
    timeframe_sec: int
    typical_move: float
    atr_percentiles: list[float]
    importances: list[tuple[str, float]]
    info: dict[str, Any] = field(default_factory=dict)
    #: What the direction probability comes from: "trees" (``direction``, calibrated), or
    #: "no_model" (the tournament found no edge: ``base_rate`` and no opinion).
    direction_kind: str = "trees"
    base_rate: float = 0.5

    @property
    def reads_extra(self) -> bool:
        """Whether the direction model reads ``context.EXTRA_FEATURES`` columns."""
        return self.extra_columns != ()

    @property
    def extra_columns(self) -> tuple[int, ...]:
        """The ``context.EXTRA_FEATURES`` positions the direction model reads."""
        if self.direction_kind != "trees" or self.direction is None:
            return ()
        return tuple(j - len(MODEL_FEATURES) for j in self.direction.columns if j >= len(MODEL_FEATURES))

    @property
    def reads_reference(self) -> bool:
        """Whether the direction model reads the ``btc`` family (so serving needs the reference
        market's candles)."""
        return any(j in FAMILY_COLUMNS["btc"] for j in self._direction_columns())

    def _direction_columns(self) -> tuple[int, ...]:
        return self.direction.columns if self.direction_kind == "trees" and self.direction else ()


@dataclass(frozen=True)
class _Validation:
    """The models the hold-out report describes: the direction blend fit on every row before the
    test slice (its weights and calibrators on out-of-fold predictions there), the boosting
    regressor on *train*."""

    direction: DirectionModel
    boosting: CompiledTrees
    calibrator: PlattCalibrator
    confidence: ConfidenceCalibrator


def _fit_calibrators(
    raw: np.ndarray, went_up: np.ndarray, horizon: int
) -> tuple[PlattCalibrator, ConfidenceCalibrator]:
    """Platt scaling and the confidence map, both from out-of-fold blended probabilities."""
    platt = PlattCalibrator.fit(raw, went_up, horizon=horizon)
    return platt, ConfidenceCalibrator.fit(platt(raw), went_up)


def make_forest(cfg: ModelConfig) -> Any:
    """The direction forest of ``cfg``, unfitted: the blend's own definition
    (:func:`ml_integration.direction.make_forest`), so the forest tuning searches
    (``n_estimators``, ``max_depth``, ``min_samples_leaf``) is the one served."""
    return direction_forest(cfg.direction_params())


def _ranked_importances(direction: DirectionModel, importance: dict[int, float]) -> list[tuple[str, float]]:
    """The columns the blend reads, by permutation importance (without a selection step: by
    the size of their standardised logistic coefficient), largest first, at most fifteen."""
    if importance:
        weights = {j: importance[j] for j in direction.columns}
    else:
        weights = {j: abs(float(c)) for j, c in zip(direction.columns, direction.logistic.coef, strict=True)}
    ranked = sorted(direction.columns, key=lambda j: -weights[j])
    return [(MODEL_FEATURES[j], float(weights[j])) for j in ranked[:15]]


def _baseline_direction(
    x: np.ndarray, y: np.ndarray, cfg: ModelConfig
) -> tuple[DirectionModel, list[tuple[str, float]]]:
    """The plain baseline forest as a served direction model: compiled trees reading its own
    columns of an extended row, no logistic part; and its impurity importances."""
    from ml_integration.baseline import BaselineModel

    columns = FAMILY_COLUMNS["baseline"]
    model = BaselineModel(n_jobs=cfg.n_jobs, random_state=cfg.random_state).fit(x[:, list(columns)], y)
    zero = np.zeros(len(columns))
    direction = DirectionModel(
        columns=columns, forest=compile_forest_classifier(model.forest_), boosting=None,
        logistic=LogisticModel(mean=zero, scale=zero + 1.0, coef=zero, intercept=0.0),
        weights=(1.0, 0.0, 0.0),
    )  # fmt: skip
    ranked = sorted(zip(columns, model.forest_.feature_importances_, strict=True), key=lambda t: -t[1])
    return direction, [(EXTENDED_FEATURES[j], float(w)) for j, w in ranked[:15]]


def learned_gb_weight(actual: np.ndarray, gb: np.ndarray, lstm: np.ndarray) -> float:
    """The boosting regressor's weight w in ``w·GB + (1 − w)·LSTM`` minimising the squared error
    on rows neither model was fit on, clipped to [0, 1]: 1 (the LSTM's weight 0) when the LSTM
    adds nothing the boosting model does not, 0 when it alone is better."""
    diff = np.asarray(gb, dtype=float) - np.asarray(lstm, dtype=float)
    denominator = float(diff @ diff)
    if denominator <= 0:
        return 1.0
    return float(np.clip((np.asarray(actual, dtype=float) - lstm) @ diff / denominator, 0.0, 1.0))


#: The libraries whose numbers a model's artifacts hold, recorded in its metadata.
MODEL_DISTRIBUTIONS = ("numpy", "pandas", "scikit-learn", "tensorflow-cpu", "keras")


class MLPricePrediction:
    """Direction (a calibrated, out-of-fold-weighted blend on selected columns), magnitude
    (gradient boosting) and an LSTM."""

    def __init__(self, config: ModelConfig | None = None, **overrides: Any):
        base = config or ModelConfig()
        refuse_unknown_keys("MLPricePrediction options", overrides, ModelConfig)
        self.config = replace(base, **overrides)
        if self.config.gb_weight is not None and not 0 <= self.config.gb_weight <= 1:
            raise ValueError(f"gb_weight must be in [0, 1], got {self.config.gb_weight}")
        self.fitted_: _Fitted | None = None
        self.validation_: _Validation | None = None
        self.tournament_: Tournament | None = None
        #: the served ensemble when a zoo combiner won (the strategy serves it; see ``ensemble``)
        self.tournament_ensemble_: Any = None

    # --- training ----------------------------------------------------------------------------
    @property
    def sequence_length(self) -> int:
        return self.config.lstm.sequence_length if self.config.use_lstm else 1

    @property
    def rows_needed(self) -> int:
        """Candles a prediction needs: the feature lookback plus the LSTM sequence."""
        return LOOKBACK + self.sequence_length - 1

    def design(
        self, df: pd.DataFrame, horizon: int, *, timeframe_sec: int | None = None,
        features: tuple[np.ndarray, np.ndarray] | None = None, reference: Reference | None = None,
    ) -> Design:  # fmt: skip
        """What :meth:`train_models` fits on: features, labels, the usable rows (full gap-free
        window and sequence, a label) and their purged time split. Tuning searches on
        ``rows[split.train]`` only, so the hold-out report stays out of sample.

        ``features``: ``(feature rows, context rows)`` of ``df`` already computed
        (``feature_span.FeatureSpan.cut``: the same numbers); ``reference``: the candles the
        ``btc`` context family reads (``context``)."""
        df = validate_candles(df, min_rows=self.rows_needed + horizon + 100)
        tf = timeframe_sec or infer_timeframe_seconds(df.index)
        cfg = self.config
        if features is None:
            span = FeatureSpan.compute(
                df.to_numpy(), epoch_seconds(df.index), tf, max_missing_bars=cfg.max_missing_bars,
                reference=reference,
            )  # fmt: skip
            features = (span.matrix, span.extra)
        full, extra = features
        if len(full) != len(df) or len(extra) != len(df):
            raise ValueError(f"features: {len(full)} and {len(extra)} rows given for {len(df)} candles")
        matrix = full[:, MODEL_COLUMNS]
        labels = make_labels(df, horizon, timeframe_sec=tf, max_missing_bars=cfg.max_missing_bars)
        ready = sequence_ready(np.isfinite(matrix).all(axis=1), self.sequence_length)
        rows = np.flatnonzero(ready & labels.valid)
        if len(rows) < 200:
            raise CandleDataError(
                f"too few usable rows to train: {len(rows)} of {len(df)} candles have a full gap-free "
                f"window and a label (need 200; gaps or a short history?)"
            )
        split = purged_split(
            len(rows),
            test_fraction=cfg.test_fraction,
            calibration_fraction=cfg.calibration_fraction,
            gap=horizon,
        )
        return Design(df, tf, matrix, labels, rows, split, extra)

    def train_models(
        self,
        df: pd.DataFrame,
        target_periods: int = 5,
        *,
        timeframe_sec: int | None = None,
        on_stage: Callable[[str], None] | None = None,
        features: tuple[np.ndarray, np.ndarray] | None = None,
        reference: Reference | None = None,
        lean: bool = False,
    ) -> dict[str, Any]:
        """Fit the three models on ``df`` (see the module docstring for the split) and return
        the hold-out report as a dict (also kept in ``self.fitted_.info``). ``on_stage`` is
        called with the name of each stage as it starts (for progress bars); ``features`` and
        ``reference``: see :meth:`design`.

        The tournament (when configured) runs first, on the columns chosen for the default
        blend. ``lean``: when it serves ``no_model``, nothing else is fit (no direction blend,
        magnitude models or hold-out figures of models nobody would serve): a walk-forward's
        windows, which only need what is served."""
        stage = on_stage or (lambda name: None)
        stage("features")
        started = time.perf_counter()
        horizon = int(target_periods)
        df, tf, matrix, labels, rows, split, extra = self.design(
            df, horizon, timeframe_sec=timeframe_sec, features=features, reference=reference
        )
        cfg = self.config
        x, y_dir, y_mag = matrix[rows], labels.direction[rows], labels.forward_return[rows]
        tr, cal, te = split.train, split.calibration, split.test
        timings: dict[str, float] = {}
        # the direction blend for the report is fit on every row before the test slice's purge gap
        before_test = np.arange(cal[-1] + 1)
        t0 = time.perf_counter()
        columns, importance = self._columns(x[before_test], y_dir[before_test], horizon)
        timings["column_selection_s"] = time.perf_counter() - t0
        tournament, x_ext = None, x
        if cfg.tournament:
            stage("tournament")
            t0 = time.perf_counter()
            x_ext = np.hstack([x, extra[rows]])
            tournament = run_tournament(
                x_ext, y_dir, blend_columns=columns, params=cfg.direction_params(), horizon=horizon,
                config=TournamentConfig(candidates=cfg.tournament, n_folds=cfg.tournament_folds),
            )  # fmt: skip
            timings["tournament_s"] = time.perf_counter() - t0
        self.tournament_ = tournament
        if lean and tournament is not None and tournament.winner == "no_model":
            report = self._serve_no_model(tournament, y_dir, split, tf, horizon)
            return self._record(df, rows, split, before_test, None, columns, tournament, report, timings,
                                started, reference)  # fmt: skip
        stage("random forest")
        t0 = time.perf_counter()
        direction, oof_rows, oof = self._fit_direction(x[before_test], y_dir[before_test], horizon, columns)
        calibrator, confidence = _fit_calibrators(
            oof @ np.asarray(direction.weights), y_dir[oof_rows], horizon
        )
        timings["direction_s"] = time.perf_counter() - t0
        stage("gradient boosting")
        boosting, timings["gradient_boosting_s"] = self._fit_boosting(x[tr], y_mag[tr])
        lstm_model, gb_weight = None, 1.0
        if cfg.use_lstm:
            stage("lstm")
            lstm_model, timings["lstm_s"] = self._fit_lstm(matrix, rows, tr, cal, y_mag)
            gb_weight = self._gb_weight(lstm_model, boosting, matrix, rows, cal, x, y_mag)
        importances = _ranked_importances(direction, importance)
        self.validation_ = _Validation(direction, boosting, calibrator, confidence)
        self.fitted_ = self._fitted(direction, boosting, lstm_model, gb_weight, calibrator, confidence,
                                    horizon, tf, matrix[rows[tr], _ATR], y_mag[tr], importances)  # fmt: skip
        stage("evaluation")
        report = self._holdout(matrix, rows, split, x, y_dir, y_mag, oof_rows)
        if cfg.final_fit:
            stage("final fit")
            t0 = time.perf_counter()
            # the test rows were predicted by the blend fit before them: out of fold as well
            seen = np.concatenate([oof_rows, te])
            preds = np.vstack([oof, direction.learner_predictions(x[te])])
            weights = blend_weights(preds, y_dir[seen], cfg.direction_learners)
            calibrator, confidence = _fit_calibrators(preds @ np.asarray(weights), y_dir[seen], horizon)
            direction = fit_learners(x, y_dir, direction.columns, cfg.direction_params()).with_weights(
                weights
            )
            boosting, _ = self._fit_boosting(x, y_mag)
            self.fitted_ = self._fitted(direction, boosting, lstm_model, gb_weight, calibrator, confidence,
                                        horizon, tf, matrix[rows, _ATR], y_mag, importances)  # fmt: skip
            timings["final_fit_s"] = time.perf_counter() - t0
        if tournament is not None:
            self._serve_winner(tournament, x_ext, y_dir, split, report)
        return self._record(df, rows, split, before_test, oof_rows, direction.columns, tournament, report,
                            timings, started, reference, gb_weight=gb_weight)  # fmt: skip

    def _record(
        self, df: pd.DataFrame, rows: np.ndarray, split: TimeSplit, before_test: np.ndarray,
        oof_rows: np.ndarray | None, columns: tuple[int, ...], tournament: Tournament | None,
        report: dict[str, Any], timings: dict[str, float], started: float, reference: Reference | None,
        *, gb_weight: float = 1.0,
    ) -> dict[str, Any]:  # fmt: skip
        """The fitted model's ``info``: its windows, choices, hold-out figures and timings."""
        fitted, cfg = self._require(), self.config
        tr, cal, te = split.train, split.calibration, split.test
        times = df.index[rows]
        served = np.arange(len(rows)) if cfg.final_fit else tr
        fitted.info = {
            "horizon": fitted.horizon,
            "timeframe_sec": fitted.timeframe_sec,
            "n_candles": len(df),
            "n_usable_rows": len(rows),
            "split": split.describe(),
            "training_window": [str(times[tr[0]]), str(times[tr[-1]])],
            "calibration_window": [str(times[cal[0]]), str(times[cal[-1]])],
            "test_window": [str(times[te[0]]), str(times[te[-1]])],
            "direction_training_window": [str(times[before_test[0]]), str(times[before_test[-1]])],
            "direction_out_of_fold_window": (
                None if oof_rows is None else [str(times[oof_rows[0]]), str(times[oof_rows[-1]])]
            ),
            "served_model_window": [str(times[served[0]]), str(times[served[-1]])],
            "selected_features": [EXTENDED_FEATURES[j] for j in columns],
            "served_direction": tournament.winner if tournament is not None else "default_blend",
            "direction_weights": (
                None
                if fitted.direction is None
                else dict(zip(LEARNERS, fitted.direction.weights, strict=True))
            ),
            "magnitude_weights": {"boosting": gb_weight, "lstm": 1.0 - gb_weight if cfg.use_lstm else 0.0},
            "reads_reference": fitted.reads_reference,
            "reference_given": reference is not None,
            "holdout": report,
            "tournament": tournament.report() if tournament is not None else None,
            "timings_s": {**timings, "total_s": time.perf_counter() - started},
            "library_versions": library_versions(*MODEL_DISTRIBUTIONS),
        }
        return dict(fitted.info)

    def _serve_no_model(
        self, tournament: Tournament, y: np.ndarray, split: TimeSplit, tf: int, horizon: int
    ) -> dict[str, Any]:
        """The lean ``no_model`` state: the base rate of the rows it learns from, no trees; and
        its out-of-sample figures on the test slice's rows (the tournament's predictions)."""
        learn = np.arange(len(y)) if self.config.final_fit else np.arange(split.calibration[-1] + 1)
        self.validation_ = None
        self.fitted_ = _Fitted(
            direction=None, boosting=None, lstm=None, gb_weight=1.0, calibrator=PlattCalibrator(),
            confidence=tournament.confidence(), horizon=horizon, timeframe_sec=tf, typical_move=0.0,
            atr_percentiles=[], importances=[], direction_kind="no_model", base_rate=float(np.mean(y[learn])),
        )  # fmt: skip
        report: dict[str, Any] = {}
        self._tournament_holdout(tournament, y, split, report)
        return report

    def _tournament_holdout(
        self, tournament: Tournament, y: np.ndarray, split: TimeSplit, report: dict[str, Any]
    ) -> None:
        """The served candidate's out-of-sample figures on the test slice's rows: its tournament
        predictions there (when at least 50 were scored)."""
        winner = tournament.winner
        test = np.isin(tournament.scored_rows, split.test)
        if test.sum() >= 50:
            report["direction"] = direction_report(
                tournament.y_scored[test], tournament.predictions[winner][test],
                float(np.mean(y[: split.test[0]])), block=max(24, tournament.horizon),
            ).to_dict()  # fmt: skip
            report["direction_model"] = f"{winner} (tournament predictions on the test slice's rows)"

    def _serve_winner(
        self, tournament: Tournament, x: np.ndarray, y: np.ndarray, split: TimeSplit, report: dict[str, Any]
    ) -> None:
        """Serve the tournament's winner: the default blend stays as fitted (its calibrators on
        its own out-of-fold predictions, as before); any other winner is fit on the rows the
        served model learns from (all of them with ``final_fit``), its confidence calibrated on
        its tournament predictions, and the hold-out figures become its out-of-sample ones on
        the test slice's rows. A zoo combiner's ensemble is built by the strategy
        (``served_ensemble``), which serves it through ``EnsemblePricePrediction``."""
        fitted = self._require()
        winner = tournament.winner
        if winner == "default_blend":
            return
        learn = np.arange(len(y)) if self.config.final_fit else np.arange(split.calibration[-1] + 1)
        fitted.confidence = tournament.confidence()
        if winner == "no_model":
            fitted.direction_kind, fitted.base_rate = "no_model", float(np.mean(y[learn]))
            fitted.importances = []
        elif winner == "baseline_forest":
            fitted.direction, fitted.importances = _baseline_direction(x[learn], y[learn], self.config)
            fitted.calibrator = PlattCalibrator()  # the plain forest's own probabilities, as scored
        elif winner.startswith("blend+"):
            oof = tournament.oof[winner][tournament.oof_rows]
            weights = blend_weights(oof, y[tournament.oof_rows], self.config.direction_learners)
            assert fitted.direction is not None  # the default blend, fit before the tournament's verdict
            columns = (*fitted.direction.columns, *FAMILY_COLUMNS[winner.split("+", 1)[1]])
            fitted.direction = fit_learners(
                x[learn], y[learn], columns, self.config.direction_params()
            ).with_weights(weights)
            fitted.calibrator = PlattCalibrator.fit(
                oof @ np.asarray(weights), y[tournament.oof_rows], horizon=fitted.horizon
            )
        elif winner in COMBINER_CANDIDATES:
            from ml_integration.ensemble import tournament_ensemble

            model_columns = np.arange(len(MODEL_FEATURES))
            self.tournament_ensemble_ = tournament_ensemble(
                tournament, x[:, model_columns], y, self.config.direction_params(), learn=learn
            )
        self._tournament_holdout(tournament, y, split, report)

    def _columns(
        self, x: np.ndarray, y: np.ndarray, horizon: int
    ) -> tuple[tuple[int, ...], dict[int, float]]:
        """The default blend's columns (given by the config, or chosen by permutation importance
        on ``x``'s earlier rows) and their importances (empty when given)."""
        if self.config.direction_columns:
            return tuple(self.config.direction_columns), {}
        return select_columns(x, y, gap=horizon, params=self.config.direction_params())

    def _fit_direction(
        self, x: np.ndarray, y: np.ndarray, horizon: int, columns: tuple[int, ...]
    ) -> tuple[DirectionModel, np.ndarray, np.ndarray]:
        """Out-of-fold predictions, blend weights and the learners fit on all of ``x`` on
        ``columns``; with the out-of-fold rows and per-learner predictions the calibrators
        learn from."""
        params = self.config.direction_params()
        oof_rows, oof = cross_fitted_predictions(
            x, y, columns, params, n_folds=self.config.calibration_folds, gap=horizon
        )
        weights = blend_weights(oof, y[oof_rows], params.learners)
        return fit_learners(x, y, columns, params).with_weights(weights), oof_rows, oof

    def _gb_weight(
        self, lstm: NumpyLSTM, boosting: CompiledTrees, matrix: np.ndarray, rows: np.ndarray,
        cal: np.ndarray, x: np.ndarray, y_mag: np.ndarray,
    ) -> float:  # fmt: skip
        """The configured boosting weight, or the one learned on the calibration slice (the
        boosting model never saw it; the LSTM used it only to stop early)."""
        if self.config.gb_weight is not None:
            return float(self.config.gb_weight)
        lstm_cal = lstm.predict(build_sequences(matrix, rows[cal], self.sequence_length))
        return learned_gb_weight(y_mag[cal], boosting.predict(x[cal]), lstm_cal)

    def _fit_boosting(self, x: np.ndarray, y: np.ndarray) -> tuple[CompiledTrees, float]:
        from sklearn.ensemble import HistGradientBoostingRegressor

        t0 = time.perf_counter()
        cfg = self.config
        model = HistGradientBoostingRegressor(
            max_iter=cfg.gb_max_iter,
            learning_rate=cfg.gb_learning_rate,
            max_depth=cfg.gb_max_depth,
            min_samples_leaf=50,
            l2_regularization=1.0,
            early_stopping=False,
            random_state=cfg.random_state,
        )
        with one_openmp_thread():
            model.fit(x, y)
        return compile_hist_gradient_boosting(model), time.perf_counter() - t0

    def _fit_lstm(
        self, matrix: np.ndarray, rows: np.ndarray, tr: np.ndarray, cal: np.ndarray, y_mag: np.ndarray
    ) -> tuple[NumpyLSTM, float]:
        from ml_integration.lstm import train_lstm

        t0 = time.perf_counter()
        seq_len = self.sequence_length
        model, _keras = train_lstm(
            build_sequences(matrix, rows[tr], seq_len),
            y_mag[tr],
            build_sequences(matrix, rows[cal], seq_len),
            y_mag[cal],
            self.config.lstm,
        )
        return model, time.perf_counter() - t0

    def _fitted(
        self, direction: DirectionModel, boosting: CompiledTrees, lstm: NumpyLSTM | None, gb_weight: float,
        calibrator: PlattCalibrator, confidence: ConfidenceCalibrator, horizon: int, tf: int,
        atr: np.ndarray, moves: np.ndarray, importances: list[tuple[str, float]],
    ) -> _Fitted:  # fmt: skip
        """The served state; ``atr`` and ``moves`` are the rows the served boosting model was fit on."""
        return _Fitted(
            direction=direction,
            boosting=boosting,
            lstm=lstm,
            gb_weight=gb_weight,
            calibrator=calibrator,
            confidence=confidence,
            horizon=horizon,
            timeframe_sec=tf,
            typical_move=float(np.mean(np.abs(moves))),
            atr_percentiles=[float(v) for v in np.percentile(atr, [5, 20, 50, 80, 95])],
            importances=importances,
        )

    def _holdout(
        self,
        matrix: np.ndarray,
        rows: np.ndarray,
        split: Any,
        x: np.ndarray,
        y_dir: np.ndarray,
        y_mag: np.ndarray,
        oof_rows: np.ndarray,
    ) -> dict[str, Any]:
        """Test-slice figures of the validation models (the direction blend fit on the rows
        before the test slice and calibrated out of fold there, the boosting regressor on
        train), whatever is served afterwards."""
        fitted, valid = self._require(), self.validation_
        assert valid is not None
        te = split.test
        raw = valid.direction.predict(x[te])
        calibrated = valid.calibrator(raw)
        confidence = valid.confidence(calibrated)
        right = ((calibrated >= 0.5) == (y_dir[te] == 1)).astype(float)
        train_up = float(y_dir[: split.calibration[-1] + 1].mean())
        gb = valid.boosting.predict(x[te])
        report: dict[str, Any] = {
            "direction": direction_report(
                y_dir[te], calibrated, train_up, block=max(24, fitted.horizon)
            ).to_dict(),
            "direction_uncalibrated_brier": brier_score(y_dir[te], raw),
            # Platt's lean check: a standing directional lean shows as a mean p far from the
            # up-rate that followed.
            "lean": {
                "mean_predicted_p": float(np.mean(calibrated)),
                "realised_up_rate": float(np.mean(y_dir[te])),
                "calibration_up_rate": float(np.mean(y_dir[oof_rows])),
                "train_up_rate": train_up,
                "platt_intercept": valid.calibrator.b,
            },
            "probability_calibration": [asdict(b) for b in calibration_by_decile(y_dir[te], calibrated)],
            "confidence_calibration": [asdict(b) for b in calibration_by_decile(right, confidence)],
            "confidence_brier": brier_score(right, confidence),
            "magnitude_gb": magnitude_report(y_mag[te], gb).to_dict(),
        }
        if fitted.lstm is not None:
            lstm = fitted.lstm.predict(build_sequences(matrix, rows[te], self.sequence_length))
            w = fitted.gb_weight
            report["magnitude_lstm"] = magnitude_report(y_mag[te], lstm).to_dict()
            report["magnitude_ensemble"] = magnitude_report(y_mag[te], w * gb + (1 - w) * lstm).to_dict()
        return report

    # --- prediction ---------------------------------------------------------------------------
    def _require(self) -> _Fitted:
        if self.fitted_ is None:
            raise NotTrainedError("MLPricePrediction is not trained: call train_models() or load_models()")
        return self.fitted_

    @property
    def horizon(self) -> int:
        return self._require().horizon

    def feature_tail(
        self, df: pd.DataFrame, features: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, pd.DatetimeIndex]:
        """The feature rows the models read (last ``sequence_length`` rows), and the validated
        candle values and times they came from. Raises :class:`GapInWindowError` when the
        window has a hole.

        ``features``: :func:`compute_feature_matrix` rows already computed over a longer
        history ending at the last candle of ``df`` (a replay computes them once for the whole
        period). They are the same numbers the tail would give, because every feature is
        finite-window (``features``); only their last ``sequence_length`` rows are read."""
        fitted = self._require()
        need = self.rows_needed
        if not isinstance(df, pd.DataFrame) or len(df) < need:
            size = len(df) if isinstance(df, pd.DataFrame) else 0
            raise CandleDataError(f"too few rows: {size} candles, need at least {need} (the longest window)")
        missing_columns = [c for c in COLUMNS if c not in df.columns]
        if missing_columns or not isinstance(df.index, pd.DatetimeIndex) or str(df.index.tz) != "UTC":
            validate_candles(df.iloc[-need:])  # raises the precise error
        tail = df.iloc[-need:]
        values = (
            tail.to_numpy(dtype=float)
            if list(tail.columns) == list(COLUMNS)
            else (tail[list(COLUMNS)].to_numpy(dtype=float))
        )
        check_candle_values(values, tail.index)
        stamps = epoch_seconds(tail.index)
        step = infer_timeframe_seconds(tail.index)
        if step != fitted.timeframe_sec:
            raise CandleDataError(
                f"candles are spaced {step} s apart; the model was trained on {fitted.timeframe_sec} s bars"
            )
        if features is None:
            features = compute_feature_matrix(
                values, stamps, fitted.timeframe_sec, max_missing_bars=self.config.max_missing_bars
            )
        elif len(features) < self.sequence_length or features.shape[1] != len(FEATURE_NAMES):
            raise ValueError(f"features: need at least {self.sequence_length} rows of {len(FEATURE_NAMES)}")
        matrix = features[-self.sequence_length :, MODEL_COLUMNS]
        if not np.isfinite(matrix).all():
            missing = int((stamps[-1] - stamps[0]) // fitted.timeframe_sec + 1 - len(stamps))
            raise GapInWindowError(
                f"the last {need} candles straddle a gap of {missing} missing bar(s); "
                f"features over a hole are not trusted",
                len(df) - 1,
                tail.index[-1],
            )
        return matrix, values, tail.index

    def predict(
        self, df: pd.DataFrame, *, features: np.ndarray | None = None, reference: Reference | None = None
    ) -> Prediction:
        """The prediction for the bar after the last candle of ``df`` (what to do about it is
        the strategy's one signal, :meth:`MLTradingStrategy.generate_signal`; ``features``: see
        :meth:`feature_tail`; ``reference``: the candles of the ``btc`` family, needed when the
        model reads it)."""
        return self._predict_tail(*self.feature_tail(df, features), reference=reference)

    def _predict_tail(
        self,
        matrix: np.ndarray,
        values: np.ndarray,
        times: pd.DatetimeIndex,
        *,
        reference: Reference | None = None,
    ) -> Prediction:
        """:meth:`predict` on an already computed feature tail (a subclass that reads the same
        tail for its own model computes it once)."""
        fitted = self._require()
        close = float(values[-1, 3])
        last = matrix[-1:]
        row = self._extended_last(last, values, times, reference)
        trees = fitted.direction if fitted.direction_kind == "trees" else None
        raw = float(trees.predict(row)[0]) if trees is not None else fitted.base_rate
        p = float(fitted.calibrator(np.array([raw]))[0]) if trees is not None else raw
        gb = float(fitted.boosting.predict(last)[0]) if fitted.boosting is not None else 0.0
        lstm = float(fitted.lstm.predict(matrix[None])[0]) if fitted.lstm is not None else None
        w = fitted.gb_weight if lstm is not None else 1.0
        ensemble = w * gb + (1 - w) * (lstm or 0.0)
        side = 1.0 if p >= 0.5 else -1.0
        votes = [gb] + ([lstm] if lstm is not None else [])
        agreement = float(np.mean([np.sign(v) == side for v in votes]))
        confidence = float(fitted.confidence(p))
        strength = 0.5 * ((2 * p - 1) * fitted.typical_move + ensemble)
        return Prediction(
            direction_probability=p,
            raw_probability=raw,
            magnitude_prediction=gb,
            lstm_prediction=lstm,
            ensemble_magnitude=ensemble,
            confidence=confidence,
            agreement=agreement,
            signal_strength=strength,
            top_features=fitted.importances[:5],
            feature_values={
                n: float(row[0, EXTENDED_FEATURES.index(n)])
                for n, _ in fitted.importances[:5]
                if EXTENDED_FEATURES.index(n) < row.shape[1]
            },
            candle_time=times[-1],
            close=close,
            atr=float(matrix[-1, _ATR] * close),
            filled_bars=tuple(
                pd.Timestamp(t, unit="s", tz="UTC").isoformat()
                for t in filled_bar_times(epoch_seconds(times), fitted.timeframe_sec)
            ),
        )

    def _extended_last(
        self, last: np.ndarray, values: np.ndarray, times: pd.DatetimeIndex, reference: Reference | None
    ) -> np.ndarray:
        """The last feature row, extended with ``context.EXTRA_FEATURES`` when the served
        direction model reads them (computed on the same candle tail, and ``reference``'s)."""
        fitted = self._require()
        if not fitted.reads_extra:
            return last
        extra = extra_matrix(
            values, epoch_seconds(times), fitted.timeframe_sec, max_missing_bars=self.config.max_missing_bars,
            reference=reference,
        )[-1:]  # fmt: skip
        if not np.isfinite(extra[:, list(fitted.extra_columns)]).all():
            what = (
                "" if reference is not None or not fitted.reads_reference else " (no reference candles given)"
            )
            raise GapInWindowError(
                f"the last {len(values)} candles cannot give the context features the model reads{what}",
                len(values) - 1, times[-1],
            )  # fmt: skip
        return np.hstack([last, extra])

    def direction_probabilities(self, df: pd.DataFrame, *, reference: Reference | None = None) -> np.ndarray:
        """Calibrated P(up) for every row of ``df`` at once (NaN where the row has no full,
        gap-free window), for scoring a model over a whole test period.

        The same numbers :meth:`predict` gives one row at a time: features are causal
        and finite-window (``features``), so a row's value does not depend on how much history
        precedes it, and the forest and calibrator are the ones serving uses."""
        fitted = self._require()
        frame = validate_candles(df)
        values, stamps = frame.to_numpy(), epoch_seconds(frame.index)
        matrix = compute_feature_matrix(
            values, stamps, fitted.timeframe_sec, max_missing_bars=self.config.max_missing_bars
        )[:, MODEL_COLUMNS]
        read = matrix
        if fitted.reads_extra:
            extra = extra_matrix(
                values, stamps, fitted.timeframe_sec, max_missing_bars=self.config.max_missing_bars,
                reference=reference,
            )  # fmt: skip
            matrix = np.hstack([matrix, extra])
            read = np.hstack([read, extra[:, list(fitted.extra_columns)]])
        out = np.full(len(frame), np.nan)
        ok = np.isfinite(read).all(axis=1)
        if ok.any():
            trees = fitted.direction if fitted.direction_kind == "trees" else None
            out[ok] = fitted.calibrator(trees.predict(matrix[ok])) if trees is not None else fitted.base_rate
        return out

    # --- persistence --------------------------------------------------------------------------
    def write_artifacts(self, directory: str | Path) -> dict[str, Any]:
        """Write the model files into ``directory`` and return their metadata (not sealed)."""
        fitted = self._require()
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        direction = fitted.direction.save(folder) if fitted.direction is not None else None
        if fitted.boosting is not None:
            fitted.boosting.save(folder / "boosting.npz")
        if fitted.lstm is not None:
            fitted.lstm.save(folder / "lstm.npz")
        model = {
            "format_version": _FORMAT_VERSION,
            "config": self.config.to_dict(),
            "features": MODEL_FEATURES,
            "horizon": fitted.horizon,
            "timeframe_sec": fitted.timeframe_sec,
            "direction": direction,
            "gb_weight": fitted.gb_weight,
            "calibrator": asdict(fitted.calibrator),
            "confidence": fitted.confidence.to_dict(),
            "typical_move": fitted.typical_move,
            "atr_percentiles": fitted.atr_percentiles,
            "importances": fitted.importances,
            "direction_kind": fitted.direction_kind,
            "base_rate": fitted.base_rate,
            "extra_features": list(EXTRA_FEATURES),
        }
        (folder / "model.json").write_text(json.dumps(model, indent=2))
        return {"model": fitted.info}

    def read_artifacts(self, directory: str | Path, metadata: dict[str, Any]) -> MLPricePrediction:
        """Load files that :func:`artifacts.verify` has already checked."""
        folder = Path(directory)
        model = json.loads((folder / "model.json").read_text())
        if model.get("format_version") != _FORMAT_VERSION:
            raise NotTrainedError(
                f"{folder}: model format {model.get('format_version')} is not supported (this version reads "
                f"format {_FORMAT_VERSION}); retrain it with `tvgw train`"
            )
        saved_extra = list(model.get("extra_features", EXTRA_FEATURES))
        # context families are appended: an older model's extra columns keep their positions
        if model["features"] != MODEL_FEATURES or saved_extra != list(EXTRA_FEATURES[: len(saved_extra)]):
            raise NotTrainedError(
                f"{folder}: trained with a different feature set; retrain with this version"
            )
        self.config = ModelConfig.from_dict(model["config"])
        lstm_path = folder / "lstm.npz"
        self.fitted_ = _Fitted(
            direction=DirectionModel.load(folder, model["direction"])
            if model["direction"] is not None
            else None,
            boosting=CompiledTrees.load(boosted) if (boosted := folder / "boosting.npz").exists() else None,
            lstm=NumpyLSTM.load(lstm_path) if lstm_path.exists() else None,
            gb_weight=float(model["gb_weight"]),
            calibrator=PlattCalibrator(**model["calibrator"]),
            confidence=ConfidenceCalibrator.from_dict(model["confidence"]),
            horizon=int(model["horizon"]),
            timeframe_sec=int(model["timeframe_sec"]),
            typical_move=float(model["typical_move"]),
            atr_percentiles=[float(v) for v in model["atr_percentiles"]],
            importances=[(str(n), float(w)) for n, w in model["importances"]],
            info=dict(metadata.get("model", {})),
            direction_kind=str(model.get("direction_kind", "trees")),
            base_rate=float(model.get("base_rate", 0.5)),
        )
        return self

    def warm_up(self) -> None:
        """Run the numpy paths once so the first real call does not pay first-use costs."""
        fitted = self._require()
        n = self.rows_needed
        close = np.linspace(100.0, 101.0, n)
        candles = np.column_stack([close, close * 1.001, close * 0.999, close, np.ones(n)])
        compute_feature_matrix(
            candles, np.arange(n, dtype=np.int64) * fitted.timeframe_sec, fitted.timeframe_sec
        )
        x = np.zeros((1, len(EXTENDED_FEATURES)))
        if fitted.direction is not None:
            fitted.direction.learner_predictions(x)
        if fitted.boosting is not None:
            fitted.boosting.predict(x[:, : len(MODEL_FEATURES)])
        if fitted.lstm is not None:
            fitted.lstm.predict(np.zeros((1, self.sequence_length, len(MODEL_FEATURES))))
