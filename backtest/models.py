"""Per-window training: the baseline forest and the full ML strategy, each fit on one training
window only (``windows``), optionally several windows at once (joblib), with a progress bar.

What a window's models are given is cut at ``train_end``: the candle frame (warm-up included)
ends there, so neither its features nor its labels can read a later bar. The full strategy is
trained by ``ml_integration`` itself (``MLTradingStrategy.train_strategy``), exactly as
``tvgw train`` trains the model the gateway serves: the backtest has no strategy of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from backtest.baseline import BASELINE_FEATURES, BaselineModel, baseline_features
from backtest.windows import Window
from ml_integration.candles import COLUMNS
from ml_integration.labels import make_labels
from ml_integration.prediction import ModelConfig
from ml_integration.strategy import MLTradingStrategy

__all__ = ["WindowModels", "train_windows"]


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


def train_window(
    frame: pd.DataFrame,
    extras: pd.DataFrame | None,
    window: Window,
    *,
    horizon: int,
    model_config: ModelConfig | None,
    step_s: int,
) -> WindowModels:
    """Fit both models on ``frame`` cut to ``[window.data_start, window.train_end)``.
    ``model_config`` None skips the full strategy (the baseline alone is trained)."""
    started = time.perf_counter()
    cut = frame.loc[(frame.index >= window.data_start) & (frame.index < window.train_end)]
    labels = make_labels(cut, horizon, timeframe_sec=step_s)
    features = _baseline_matrix(cut, extras)
    in_train = np.asarray(cut.index >= window.train_start)
    usable = in_train & labels.valid & np.isfinite(features).all(axis=1)
    y = labels.direction[usable]
    names = BASELINE_FEATURES + tuple(extras.columns if extras is not None else ())
    baseline = BaselineModel().fit(features[usable], y, names)
    strategy = None
    importances: list[tuple[str, float]] = []
    if model_config is not None:
        strategy = MLTradingStrategy({"target_periods": horizon}, model_config=model_config)
        strategy.train_strategy(cut[list(COLUMNS)], symbol=None, timeframe=None)
        assert strategy.predictor.fitted_ is not None
        importances = list(strategy.predictor.fitted_.importances)
    return WindowModels(
        window=window, baseline=baseline, strategy=strategy, train_up_rate=float(np.mean(y)),
        train_rows=int(usable.sum()), seconds=time.perf_counter() - started,
        strategy_importances=importances,
    )  # fmt: skip


def _baseline_matrix(frame: pd.DataFrame, extras: pd.DataFrame | None) -> np.ndarray:
    """The baseline's features for ``frame``'s rows, plus any extra columns the caller gave
    (each read at its own row: a column's value at bar t must be known when bar t closes)."""
    matrix = baseline_features(frame[list(COLUMNS)]).to_numpy()
    if extras is None or extras.empty:
        return matrix
    return np.column_stack([matrix, extras.reindex(frame.index).to_numpy(dtype=float)])


def baseline_matrix(frame: pd.DataFrame, extras: pd.DataFrame | None) -> np.ndarray:
    """Public face of the feature matrix, for scoring the test rows with the same columns."""
    return _baseline_matrix(frame, extras)


def train_windows(
    frame: pd.DataFrame,
    extras: pd.DataFrame | None,
    windows: list[Window],
    *,
    horizon: int,
    model_config: ModelConfig | None,
    step_s: int,
    jobs: int = 1,
    progress: bool = True,
) -> list[WindowModels]:
    """Train every window (``jobs`` at a time with joblib), with a tqdm bar over windows."""
    from tqdm import tqdm

    def one(window: Window) -> WindowModels:
        return train_window(frame, extras, window, horizon=horizon, model_config=model_config, step_s=step_s)

    results: Iterator[WindowModels]
    if jobs == 1:
        results = (one(w) for w in windows)
    else:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=jobs, return_as="generator")(delayed(one)(w) for w in windows)
    bar = tqdm(results, total=len(windows), desc="train windows", unit="window", disable=not progress)
    return list(bar)
