"""Hold-out metrics next to naive baselines, with uncertainty.

A direction model on hourly crypto candles is usually within a point or two of a coin flip,
so a bare "accuracy 0.53" says nothing. Every figure here comes with the baseline it must
beat and a 95% interval:

* accuracy: Wilson score interval; baseline: always predict the class that was more frequent
  in the *training* rows (the majority class);
* AUC: the rank (Mann-Whitney) statistic, O(n log n), ties counted half;
* AUC, Brier score and log loss: moving-block bootstrap intervals (blocks of ``block`` rows,
  because neighbouring hourly labels overlap and are not independent); the Brier baseline is
  the training base rate predicted for every test row;
* magnitude: MAE of the regression against predicting zero, and the correlation.

This is the project's one metrics module: training reports, the benches, outcome tracking
(``ml_integration.tracking``: ``tvgw accuracy``, ``/api/accuracy``, ``/healthz``) all call the functions
here, so an AUC or a Wilson interval means the same thing everywhere.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "CalibrationBin",
    "DirectionReport",
    "MagnitudeReport",
    "block_bootstrap_ci",
    "brier_score",
    "calibration_by_decile",
    "direction_report",
    "log_loss",
    "magnitude_report",
    "rank_auc",
    "wilson_interval",
]


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (well-behaved near 0 and 1 and for small n)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (centre - half, centre + half)


def rank_auc(labels: ArrayLike, scores: ArrayLike) -> float | None:
    """ROC AUC as the Mann-Whitney rank statistic; None when only one class occurred.

    Sorting once makes it O(n log n), so it stays cheap however many outcomes were logged (a
    pairwise count is O(n²): 10 s at 6,000 predictions). Tied scores get the average of their
    ranks, which counts a tied (positive, negative) pair as half a win.
    """
    y = np.asarray(labels, dtype=float)
    s = np.asarray(scores, dtype=float)
    if y.shape != s.shape:
        raise ValueError(f"need as many labels as scores (got {y.shape} and {s.shape})")
    n_pos = int((y == 1).sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # 1-based rank of the last member of each group of equal scores
    mean_rank = last - (counts - 1) / 2.0
    rank_sum = float(mean_rank[inverse][y == 1].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def brier_score(labels: ArrayLike, probs: ArrayLike) -> float:
    """Mean squared error of probabilities against 0/1 outcomes (lower is better)."""
    y = np.asarray(labels, dtype=float)
    p = np.asarray(probs, dtype=float)
    return float(np.mean((p - y) ** 2))


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def log_loss(labels: ArrayLike, probs: ArrayLike) -> float:
    """Mean negative log-likelihood of 0/1 outcomes (probabilities clipped at 1e-12): a proper
    score that punishes confident mistakes hardest (the ensemble picks its combiner by it)."""
    return _log_loss(np.asarray(labels, dtype=float), np.asarray(probs, dtype=float))


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """:func:`rank_auc`, with NaN (skipped by the bootstrap) for a one-class resample."""
    auc = rank_auc(y, p)
    return float("nan") if auc is None else auc


def _block_bootstrap(
    y: np.ndarray, p: np.ndarray, metric: str, *, block: int, n_boot: int, seed: int
) -> tuple[float, float]:
    n = len(y)
    rng = np.random.default_rng(seed)
    n_blocks = max(1, math.ceil(n / block))
    values = []
    for _ in range(n_boot):
        starts = rng.integers(0, max(1, n - block + 1), n_blocks)
        idx = (starts[:, None] + np.arange(block)[None, :]).ravel()[:n] % n
        yb, pb = y[idx], p[idx]
        if metric == "auc":
            value = _auc(yb, pb)
        elif metric == "accuracy":
            value = float(np.mean((pb >= 0.5) == (yb == 1)))
        elif metric == "brier":
            value = brier_score(yb, pb)
        else:
            value = _log_loss(yb, pb)
        if not math.isnan(value):
            values.append(value)
    if not values:
        return (float("nan"), float("nan"))
    low, high = np.percentile(values, [2.5, 97.5])
    return (float(low), float(high))


def block_bootstrap_ci(
    labels: ArrayLike, probs: ArrayLike, metric: str, *, block: int = 24, n_boot: int = 200, seed: int = 0
) -> tuple[float, float]:
    """95% moving-block bootstrap interval of ``metric`` (``accuracy``, ``auc``, ``brier`` or
    ``log_loss``): neighbouring rows of a time series are not independent, so whole blocks of
    ``block`` rows are resampled."""
    if metric not in ("accuracy", "auc", "brier", "log_loss"):
        raise ValueError(f"unknown metric {metric!r}")
    y = np.asarray(labels, dtype=float)
    p = np.asarray(probs, dtype=float)
    return _block_bootstrap(y, p, metric, block=block, n_boot=n_boot, seed=seed)


@dataclass(frozen=True)
class CalibrationBin:
    """One decile of predicted probability: its mean prediction, the observed up-rate and that
    rate's Wilson interval."""

    low: float
    high: float
    n: int
    mean_predicted: float
    observed: float
    observed_ci: tuple[float, float]


def calibration_by_decile(labels: ArrayLike, probs: ArrayLike, bins: int = 10) -> list[CalibrationBin]:
    """Rows sorted by predicted probability and cut into ``bins`` equal-count groups (deciles by
    default): a calibrated model's observed up-rate matches its mean prediction in each."""
    y = np.asarray(labels, dtype=float)
    p = np.asarray(probs, dtype=float)
    if len(y) != len(p):
        raise ValueError(f"need as many labels as probabilities (got {len(y)} and {len(p)})")
    order = np.argsort(p, kind="stable")
    out = []
    for part in np.array_split(order, min(bins, len(order))):
        if len(part) == 0:
            continue
        hits = float(y[part].sum())
        chosen = p[part]
        out.append(
            CalibrationBin(
                low=float(chosen.min()),
                high=float(chosen.max()),
                n=len(part),
                mean_predicted=float(chosen.mean()),
                observed=hits / len(part),
                observed_ci=wilson_interval(hits, len(part)),
            )
        )
    return out


@dataclass(frozen=True)
class DirectionReport:
    """Out-of-sample direction metrics and their baselines."""

    n: int
    accuracy: float
    accuracy_ci: tuple[float, float]
    majority_accuracy: float
    majority_accuracy_ci: tuple[float, float]
    auc: float
    auc_ci: tuple[float, float]
    brier: float
    brier_ci: tuple[float, float]
    base_rate_brier: float
    log_loss: float
    log_loss_ci: tuple[float, float]
    base_rate_log_loss: float
    train_up_rate: float
    test_up_rate: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def direction_report(
    y_test: np.ndarray,
    p_test: np.ndarray,
    train_up_rate: float | ArrayLike,
    *,
    block: int = 24,
    n_boot: int = 200,
    seed: int = 0,
) -> DirectionReport:
    """Metrics of calibrated probabilities ``p_test`` for labels ``y_test`` (0/1).

    ``train_up_rate`` may be one rate or one per row: pooled walk-forward predictions compare
    each row with the base rate (and majority class) of the window its model was trained on."""
    y = np.asarray(y_test, dtype=float)
    p = np.asarray(p_test, dtype=float)
    if len(y) == 0 or len(y) != len(p):
        raise ValueError(f"need equal, non-empty label and probability arrays (got {len(y)}, {len(p)})")
    n = len(y)
    hits = int(((p >= 0.5) == (y == 1)).sum())
    base = np.broadcast_to(np.asarray(train_up_rate, dtype=float), (n,))
    majority_hits = int((y == (base >= 0.5)).sum())
    return DirectionReport(
        n=n,
        accuracy=hits / n,
        accuracy_ci=wilson_interval(hits, n),
        majority_accuracy=majority_hits / n,
        majority_accuracy_ci=wilson_interval(majority_hits, n),
        auc=_auc(y, p),
        auc_ci=_block_bootstrap(y, p, "auc", block=block, n_boot=n_boot, seed=seed),
        brier=brier_score(y, p),
        brier_ci=_block_bootstrap(y, p, "brier", block=block, n_boot=n_boot, seed=seed),
        base_rate_brier=brier_score(y, base),
        log_loss=_log_loss(y, p),
        log_loss_ci=_block_bootstrap(y, p, "log_loss", block=block, n_boot=n_boot, seed=seed),
        base_rate_log_loss=_log_loss(y, base),
        train_up_rate=float(base.mean()),
        test_up_rate=float(y.mean()),
    )


@dataclass(frozen=True)
class MagnitudeReport:
    """Out-of-sample regression metrics of a forward-return model against predicting 0."""

    n: int
    mae: float
    zero_mae: float
    correlation: float
    sign_accuracy: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def magnitude_report(actual: np.ndarray, predicted: np.ndarray) -> MagnitudeReport:
    a = np.asarray(actual, dtype=float)
    p = np.asarray(predicted, dtype=float)
    corr = float(np.corrcoef(a, p)[0, 1]) if len(a) > 2 and np.std(p) > 0 and np.std(a) > 0 else float("nan")
    return MagnitudeReport(
        n=len(a),
        mae=float(np.mean(np.abs(a - p))),
        zero_mae=float(np.mean(np.abs(a))),
        correlation=corr,
        sign_accuracy=float(np.mean(np.sign(a) == np.sign(p))),
    )
