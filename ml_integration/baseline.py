"""The plain baseline: a RandomForest on fifteen simple features, the yardstick the full ML
strategy must beat to earn its complexity.

Features at bar t (trailing windows only, so nothing after t): log returns over 1, 2, 4, 8,
12, 24 and 48 bars; the standard deviation of 1-bar returns over 12, 24 and 48 bars; the bar's
range over its close and the 24-bar mean of that; volume over its 24-bar mean and the 6-bar
over the 48-bar mean volume; the hour of day as sine and cosine. The target is the same as the
full strategy's (direction over the horizon, ``ml_integration.labels``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from common.indicators import rolling_mean, rolling_std, shift

__all__ = ["BASELINE_FEATURES", "BaselineModel", "baseline_features"]

RETURN_SPANS = (1, 2, 4, 8, 12, 24, 48)
VOLATILITY_SPANS = (12, 24, 48)
BASELINE_FEATURES: tuple[str, ...] = (
    *(f"ret_{k}" for k in RETURN_SPANS),
    *(f"vol_{k}" for k in VOLATILITY_SPANS),
    "range", "range_24", "volume_ratio_24", "volume_ratio_6_48", "hour_sin", "hour_cos",
)  # fmt: skip


def baseline_features(df: pd.DataFrame) -> pd.DataFrame:
    """The fifteen features for every bar (NaN until their longest window is full).

    Each window is summed on its own (``common.indicators``), not by a running sum: a value at
    bar t is then the same number whether the frame starts 50 bars or 5 years before t, so a
    walk-forward may compute the table once and cut it per window (``feature_span``)."""
    close = df["close"].to_numpy(dtype=float)
    volume = df["volume"].to_numpy(dtype=float)
    log_close = np.log(close)
    ret = log_close - shift(log_close, 1)
    out = {f"ret_{k}": log_close - shift(log_close, k) for k in RETURN_SPANS}
    # the sample standard deviation (ddof 1), as the table has always used
    out.update({f"vol_{k}": rolling_std(ret, k) * np.sqrt(k / (k - 1)) for k in VOLATILITY_SPANS})
    bar_range = (df["high"].to_numpy(dtype=float) - df["low"].to_numpy(dtype=float)) / close
    out["range"] = bar_range
    out["range_24"] = rolling_mean(bar_range, 24)
    with np.errstate(divide="ignore", invalid="ignore"):  # a volume-0 window: NaN below, not a ratio
        out["volume_ratio_24"] = volume / rolling_mean(volume, 24)
        out["volume_ratio_6_48"] = rolling_mean(volume, 6) / rolling_mean(volume, 48)
    hour = df.index.hour.to_numpy(dtype=float)
    out["hour_sin"] = np.sin(2 * np.pi * hour / 24)
    out["hour_cos"] = np.cos(2 * np.pi * hour / 24)
    frame = pd.DataFrame(out, index=df.index)[list(BASELINE_FEATURES)]
    return frame.replace([np.inf, -np.inf], np.nan)


@dataclass
class BaselineModel:
    """A RandomForest fit on one training window's rows; probabilities straight from the forest
    (no calibration step: this is the plain choice the ML strategy is compared with)."""

    n_estimators: int = 100
    max_depth: int = 6
    min_samples_leaf: int = 50
    random_state: int = 0
    n_jobs: int = 2  # both cores of the reference machine: the forest was a third of a window's time

    def fit(self, x: np.ndarray, y: np.ndarray, names: tuple[str, ...] = BASELINE_FEATURES) -> BaselineModel:
        from sklearn.ensemble import RandomForestClassifier

        if len(np.unique(y)) < 2:
            raise ValueError("the baseline's training window has only one direction class")
        self.forest_ = RandomForestClassifier(
            n_estimators=self.n_estimators, max_depth=self.max_depth, min_samples_leaf=self.min_samples_leaf,
            max_features="sqrt", n_jobs=self.n_jobs, random_state=self.random_state,
        ).fit(x, y)  # fmt: skip
        self.train_up_rate_ = float(np.mean(y))
        self.names_ = names
        return self

    def predict_up(self, x: np.ndarray) -> np.ndarray:
        """P(up) per row; NaN for rows with a missing feature."""
        out = np.full(len(x), np.nan)
        ok = np.isfinite(x).all(axis=1)
        if ok.any():
            out[ok] = self.forest_.predict_proba(x[ok])[:, 1]
        return out

    def importances(self) -> dict[str, float]:
        return dict(zip(self.names_, map(float, self.forest_.feature_importances_), strict=True))
