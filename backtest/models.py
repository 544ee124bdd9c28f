"""Per-window training: the baseline forest and the full ML strategy, each fit on one training
window only (``windows``), optionally several windows at once (joblib), with a progress bar.

Refit schedule: the model tournament and the default blend's column selection (the costly
choices) run on the first window of every ``choose_every`` windows, on that window's training
rows only; the windows until the next choice refit the chosen candidate, on the chosen columns,
on their own rows, and still check it against "no model" (the base rate), so a window whose rows
show no edge serves none. By default a choice is made again once the training rows have turned
over entirely (train window / test window: every 6 windows for 180 days / 30 days).

What a window's models are given is cut at ``train_end``: the candle frame (warm-up included)
ends there, so neither its features nor its labels can read a later bar. The full strategy is
trained by ``ml_integration`` itself (``MLTradingStrategy.train_strategy``), exactly as
``tvgw train`` trains the model the gateway serves: the backtest has no strategy of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from backtest.windows import Window
from ml_integration.baseline import BASELINE_FEATURES, BaselineModel, baseline_features
from ml_integration.candles import COLUMNS, epoch_seconds
from ml_integration.context import Reference
from ml_integration.feature_span import FeatureSpan
from ml_integration.features import MODEL_FEATURES
from ml_integration.labels import make_labels
from ml_integration.prediction import ModelConfig
from ml_integration.strategy import MLTradingStrategy

__all__ = ["WindowInputs", "WindowModels", "train_window", "train_windows"]


@dataclass
class WindowModels:
    """What one training window produced."""

    window: Window
    baseline: BaselineModel
    strategy: MLTradingStrategy | None
    train_up_rate: float
    train_rows: int
    seconds: float
    strategy_importances: list[tuple[str, float]] = field(default_factory=list)
    #: the candidate this window's strategy serves, and whether this window chose it
    served: str | None = None
    chose: bool = False
    blend_columns: tuple[int, ...] = ()


@dataclass(frozen=True)
class WindowInputs:
    """What every window's models read, computed once for the whole walk-forward: the baseline's
    feature rows (with the caller's extra columns) for every candle, and the full strategy's
    features and context columns from row ``start`` on (the first window's warm-up).

    Every column at bar t reads only bars up to t, in finite windows, so the rows a window cuts
    from these are the very numbers its own candles would give (``ml_integration.feature_span``
    proves it for the strategy's; the baseline's windows are at most 48 bars, inside the 200-bar
    warm-up): computing them once is exact, not an approximation."""

    frame: pd.DataFrame
    baseline: np.ndarray
    baseline_names: tuple[str, ...]
    span: FeatureSpan | None
    start: int
    reference: Reference | None = None

    @classmethod
    def compute(
        cls, frame: pd.DataFrame, extras: pd.DataFrame | None, *, start: int, step_s: int,
        model_config: ModelConfig | None, reference: Reference | None = None,
    ) -> WindowInputs:  # fmt: skip
        """``model_config`` None: the baseline alone (no strategy features)."""
        span = None
        if model_config is not None:
            tail = frame.iloc[start:]
            span = FeatureSpan.compute(
                tail[list(COLUMNS)].to_numpy(dtype=float), epoch_seconds(tail.index), step_s,
                max_missing_bars=model_config.max_missing_bars, reference=reference,
            )  # fmt: skip
        names = BASELINE_FEATURES + tuple(extras.columns if extras is not None else ())
        return cls(frame, _baseline_matrix(frame, extras), names, span, start, reference)

    def strategy_features(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """The strategy's feature and context rows of frame rows ``lo .. hi - 1``, as computing
        them on those candles alone gives them."""
        assert self.span is not None, "no strategy features were computed (model_config None)"
        return self.span.cut(lo - self.start, hi - self.start)


def train_window(
    inputs: WindowInputs, window: Window, *, horizon: int, model_config: ModelConfig | None, step_s: int
) -> WindowModels:
    """Fit both models on the candles ``[window.data_start, window.train_end)``.
    ``model_config`` None skips the full strategy (the baseline alone is trained)."""
    started = time.perf_counter()
    frame = inputs.frame
    lo, hi = int(frame.index.searchsorted(window.data_start)), int(frame.index.searchsorted(window.train_end))
    cut = frame.iloc[lo:hi]
    labels = make_labels(cut, horizon, timeframe_sec=step_s)
    features = inputs.baseline[lo:hi]
    in_train = np.asarray(cut.index >= window.train_start)
    usable = in_train & labels.valid & np.isfinite(features).all(axis=1)
    y = labels.direction[usable]
    baseline = BaselineModel().fit(features[usable], y, inputs.baseline_names)
    strategy = None
    importances: list[tuple[str, float]] = []
    served: str | None = None
    blend_columns: tuple[int, ...] = ()
    if model_config is not None:
        strategy = MLTradingStrategy({"target_periods": horizon}, model_config=model_config)
        report = strategy.train_strategy(
            cut[list(COLUMNS)], symbol=None, timeframe=None, features=inputs.strategy_features(lo, hi),
            reference=inputs.reference, lean=True,
        )  # fmt: skip
        assert strategy.predictor.fitted_ is not None
        importances = list(strategy.predictor.fitted_.importances)
        served = report.get("served_direction")
        blend_columns = tuple(
            MODEL_FEATURES.index(n) for n in report["selected_features"] if n in MODEL_FEATURES
        )
    return WindowModels(
        window=window, baseline=baseline, strategy=strategy, train_up_rate=float(np.mean(y)),
        train_rows=int(usable.sum()), seconds=time.perf_counter() - started,
        strategy_importances=importances, served=served, blend_columns=blend_columns,
        chose=model_config is not None and not model_config.direction_columns,
    )  # fmt: skip


def _baseline_matrix(frame: pd.DataFrame, extras: pd.DataFrame | None) -> np.ndarray:
    """The baseline's features for ``frame``'s rows, plus any extra columns the caller gave
    (each read at its own row: a column's value at bar t must be known when bar t closes)."""
    matrix = baseline_features(frame[list(COLUMNS)]).to_numpy()
    if extras is None or extras.empty:
        return matrix
    return np.column_stack([matrix, extras.reindex(frame.index).to_numpy(dtype=float)])


def train_windows(
    inputs: WindowInputs,
    windows: list[Window],
    *,
    horizon: int,
    model_config: ModelConfig | None,
    step_s: int,
    jobs: int = 1,
    progress: bool = True,
    choose_every: int = 1,
) -> list[WindowModels]:
    """Train every window (``jobs`` at a time with joblib), with a tqdm bar over windows; the
    tournament and column selection run on every ``choose_every``-th window (module docstring):
    those windows first, then the others with what their choosing window chose."""
    from tqdm import tqdm

    def one(window: Window, config: ModelConfig | None) -> WindowModels:
        return train_window(inputs, window, horizon=horizon, model_config=config, step_s=step_s)

    bar = tqdm(total=len(windows), desc="train windows", unit="window", disable=not progress)
    heads = list(range(0, len(windows), max(1, choose_every)))
    done: dict[int, WindowModels] = {}
    for k, model in zip(heads, _run([(one, windows[k], model_config) for k in heads], jobs), strict=True):
        done[k] = model
        bar.update()
    rest = [k for k in range(len(windows)) if k not in done]
    followers = [(one, windows[k], _follower(model_config, done[k - k % max(1, choose_every)])) for k in rest]
    for k, model in zip(rest, _run(followers, jobs), strict=True):
        done[k] = model
        bar.update()
    bar.close()
    return [done[k] for k in range(len(windows))]


def _follower(config: ModelConfig | None, head: WindowModels) -> ModelConfig | None:
    """What a window between two choices trains: the choosing window's columns and candidate
    (checked against "no model" on its own rows)."""
    if config is None or head.strategy is None:
        return config
    served = head.served or "default_blend"
    if not config.tournament:
        return replace(config, direction_columns=head.blend_columns)
    candidates = ("no_model",) if served == "no_model" else ("no_model", served)
    return replace(config, direction_columns=head.blend_columns, tournament=candidates)


def _run(tasks: list[tuple[Any, Window, ModelConfig | None]], jobs: int) -> Iterator[WindowModels]:
    if jobs == 1 or len(tasks) <= 1:
        return (fn(window, config) for fn, window, config in tasks)
    from joblib import Parallel, delayed

    return iter(Parallel(n_jobs=jobs)(delayed(fn)(window, config) for fn, window, config in tasks))
