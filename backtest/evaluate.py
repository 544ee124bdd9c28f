"""``tvgw evaluate``: the prediction metrics of a saved model on new candles, the same pooled
metrics and intervals a backtest reports (``backtest.metrics.prediction_metrics``).

Rows the model was fit or calibrated on are left out (up to the end of its calibration window
plus the horizon, from its sealed metadata), so the figures are out of sample.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backtest.data import CandleSource, load_candles
from backtest.errors import BacktestInputError
from backtest.metrics import prediction_metrics
from ml_integration.candles import infer_timeframe_seconds
from ml_integration.labels import make_labels

__all__ = ["evaluate_model"]


def evaluate_model(model_dir: Path, data_file: Path) -> dict[str, Any]:
    """Load ``model_dir`` (hashes checked), score it on ``data_file``'s candles."""
    from ml_integration.exceptions import MLError
    from ml_integration.strategy import MLTradingStrategy

    try:
        strategy = MLTradingStrategy().load_strategy(model_dir)
    except (MLError, FileNotFoundError, KeyError, ValueError) as exc:
        raise BacktestInputError(f"--model {model_dir}: not a saved model ({exc})") from None
    predictor = strategy.predictor
    fitted = predictor.fitted_
    assert fitted is not None
    timeframe = (
        f"{fitted.timeframe_sec // 60}m"
        if fitted.timeframe_sec < 3600
        else f"{fitted.timeframe_sec // 3600}h"
    )
    frame = load_candles(CandleSource(strategy.symbol or "?", timeframe, file=data_file))
    if infer_timeframe_seconds(frame.index) != fitted.timeframe_sec:
        raise BacktestInputError(f"{data_file}: bars are not {fitted.timeframe_sec} s apart like the model's")
    horizon = fitted.horizon
    labels = make_labels(frame, horizon, timeframe_sec=fitted.timeframe_sec)
    p = predictor.direction_probabilities(frame)
    seen_until = _seen_until(strategy.training_report or {}, horizon, fitted.timeframe_sec)
    rows = labels.valid & np.isfinite(p)
    if seen_until is not None:
        rows &= np.asarray(frame.index > seen_until)
    if rows.sum() < 50:
        raise BacktestInputError(
            f"{data_file}: only {int(rows.sum())} scorable rows after the model's own training and "
            f"calibration data (up to {seen_until}); give at least 50 newer bars"
        )
    base_rate = float(
        (strategy.training_report or {}).get("holdout", {}).get("direction", {}).get("train_up_rate", 0.5)
    )
    y = labels.direction[rows].astype(float)
    report = prediction_metrics(y, p[rows], np.full(len(y), base_rate), horizon=horizon)
    return {"model": str(model_dir), "model_version": strategy.model_version, "data": str(data_file),
            "rows_scored": int(rows.sum()), "first_scored": str(frame.index[rows][0]),
            "excluded_until": str(seen_until) if seen_until is not None else None, "horizon": horizon,
            "prediction": report}  # fmt: skip


def _seen_until(info: dict[str, Any], horizon: int, step: int) -> pd.Timestamp | None:
    window = info.get("calibration_window") or info.get("training_window")
    if not window:
        return None
    return pd.Timestamp(window[1]) + pd.Timedelta(seconds=horizon * step)
