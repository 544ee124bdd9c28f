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
* magnitude: MAE of the regression against predicting zero, and the correlation;
* volatility forecasts: QLIKE (the loss that ranks variance forecasts correctly even against a
  noisy realised-volatility proxy, Patton 2011), R² of log volatility, and the Mincer-Zarnowitz
  R² (squared correlation of the logs: what the forecast explains once re-levelled), with
  block-bootstrap intervals and, against a baseline forecast, the interval of the paired QLIKE
  gain.

This is the project's one metrics module: training reports, the benches, outcome tracking
(``ml_integration.tracking``: ``tvgw accuracy``, ``/api/accuracy``, ``/healthz``) all call the functions
here, so an AUC or a Wilson interval means the same thing everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "CalibrationBin",
    "DirectionReport",
    "MagnitudeReport",
    "PairedComparison",
    "VolatilityReport",
    "block_bootstrap_ci",
    "brier_score",
    "calibration_by_decile",
    "direction_report",
    "log_loss",
    "magnitude_report",
    "mz_r2_log_volatility",
    "paired_comparison",
    "paired_log_loss_difference",
    "qlike",
    "r2_log_volatility",
    "rank_auc",
    "volatility_report",
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


def log_loss(labels: ArrayLike, probs: ArrayLike) -> float:
    """Mean negative log-likelihood of 0/1 outcomes (lower is better); probabilities are
    clipped to [1e-12, 1 - 1e-12] so one confident miss costs a lot but not infinity."""
    y = np.asarray(labels, dtype=float)
    p = np.clip(np.asarray(probs, dtype=float), 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """:func:`rank_auc`, with NaN (skipped by the bootstrap) for a one-class resample."""
    auc = rank_auc(y, p)
    return float("nan") if auc is None else auc


def _block_resamples(n: int, *, block: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """``n_boot`` moving-block resamples of positions 0..n-1 (whole blocks of ``block`` rows,
    wrapped at the end), the one resampling scheme of every interval here."""
    rng = np.random.default_rng(seed)
    n_blocks = max(1, math.ceil(n / block))
    for _ in range(n_boot):
        starts = rng.integers(0, max(1, n - block + 1), n_blocks)
        yield (starts[:, None] + np.arange(block)[None, :]).ravel()[:n] % n


def _block_bootstrap(
    y: np.ndarray, p: np.ndarray, metric: str, *, block: int, n_boot: int, seed: int
) -> tuple[float, float]:
    values = []
    for idx in _block_resamples(len(y), block=block, n_boot=n_boot, seed=seed):
        yb, pb = y[idx], p[idx]
        if metric == "auc":
            value = _auc(yb, pb)
        elif metric == "accuracy":
            value = float(np.mean((pb >= 0.5) == (yb == 1)))
        elif metric == "brier":
            value = brier_score(yb, pb)
        else:
            value = log_loss(yb, pb)
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


def paired_log_loss_difference(
    labels: ArrayLike, probs_a: ArrayLike, probs_b: ArrayLike, *, block: int = 24, n_boot: int = 200,
    seed: int = 0,
) -> tuple[float, tuple[float, float]]:  # fmt: skip
    """Mean log loss of ``probs_a`` minus that of ``probs_b`` on the same rows (negative: *a*
    is better), with the 95% moving-block bootstrap interval of that difference. Paired: both
    are resampled on the same blocks, so the noise both models share (a hard month) cancels and
    the interval is much narrower than the two losses' own intervals."""
    y = np.asarray(labels, dtype=float)
    pa = np.clip(np.asarray(probs_a, dtype=float), 1e-12, 1 - 1e-12)
    pb = np.clip(np.asarray(probs_b, dtype=float), 1e-12, 1 - 1e-12)
    if not len(y) == len(pa) == len(pb) or len(y) == 0:
        raise ValueError(f"need equal, non-empty arrays (got {len(y)}, {len(pa)}, {len(pb)})")
    loss_a = -(y * np.log(pa) + (1 - y) * np.log(1 - pa))
    loss_b = -(y * np.log(pb) + (1 - y) * np.log(1 - pb))
    diff = loss_a - loss_b
    means = [
        float(diff[idx].mean()) for idx in _block_resamples(len(y), block=block, n_boot=n_boot, seed=seed)
    ]
    low, high = np.percentile(means, [2.5, 97.5])
    return float(diff.mean()), (float(low), float(high))


@dataclass(frozen=True)
class PairedComparison:
    """Two forecasts of the same outcomes compared row by row: ``difference`` is the mean of
    (candidate's log loss − reference's) over the ``n`` rows, negative when the candidate is
    better, with the 95% interval of :func:`paired_log_loss_difference`."""

    n: int
    reference_log_loss: float
    candidate_log_loss: float
    difference: float
    ci: tuple[float, float]
    block: int
    n_boot: int

    @property
    def candidate_better(self) -> bool:
        """The candidate's log loss is lower beyond the interval (its upper end below zero)."""
        return self.n > 0 and self.ci[1] < 0

    def to_dict(self) -> dict[str, object]:
        """As JSON shows it (None where there are no rows to compute a figure from)."""

        def figure(value: float) -> float | None:
            return None if math.isnan(value) else round(value, 6)

        return {
            "test": f"paired log-loss difference, 95% moving-block bootstrap (blocks of {self.block}, "
            f"{self.n_boot} resamples)",
            "n": self.n, "reference_log_loss": figure(self.reference_log_loss),
            "candidate_log_loss": figure(self.candidate_log_loss), "difference": figure(self.difference),
            "ci95": [figure(self.ci[0]), figure(self.ci[1])],
        }  # fmt: skip


def paired_comparison(
    labels: ArrayLike,
    reference: ArrayLike,
    candidate: ArrayLike,
    *,
    block: int = 10,
    n_boot: int = 2000,
    seed: int = 0,
) -> PairedComparison:
    """Is ``candidate`` a better probability forecast of ``labels`` than ``reference`` on the
    very same rows (live alerts, in time order)? :func:`paired_log_loss_difference` with both
    losses and the row count beside it, and no rows an answer of its own (n = 0, never better).
    The seed is fixed, so every process judging the same rows reaches the same verdict."""
    y = np.asarray(labels, dtype=float)
    if len(y) == 0:
        nan = float("nan")
        return PairedComparison(0, nan, nan, nan, (nan, nan), block, n_boot)
    difference, ci = paired_log_loss_difference(
        y, candidate, reference, block=block, n_boot=n_boot, seed=seed
    )
    return PairedComparison(
        n=len(y), reference_log_loss=log_loss(y, reference), candidate_log_loss=log_loss(y, candidate),
        difference=difference, ci=ci, block=block, n_boot=n_boot,
    )  # fmt: skip


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
        log_loss=log_loss(y, p),
        log_loss_ci=_block_bootstrap(y, p, "log_loss", block=block, n_boot=n_boot, seed=seed),
        base_rate_log_loss=log_loss(y, base),
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


#: Realised and forecast volatilities are floored here (per bar) before logs and ratios: a run
#: of unchanged closes has zero realised volatility, whose log and QLIKE are infinite.
VOL_FLOOR = 1e-5


def _variance(vol: ArrayLike) -> np.ndarray:
    return np.maximum(np.asarray(vol, dtype=float), VOL_FLOOR) ** 2


def qlike(realised_vol: ArrayLike, forecast_vol: ArrayLike) -> float:
    """QLIKE loss of variance forecasts: mean of RV²/F − log(RV²/F) − 1 (0 for a perfect
    forecast, lower is better); it punishes under-prediction of risk more than over-prediction."""
    ratio = _variance(realised_vol) / _variance(forecast_vol)
    return float(np.mean(ratio - np.log(ratio) - 1.0))


def r2_log_volatility(realised_vol: ArrayLike, forecast_vol: ArrayLike) -> float:
    """Out-of-sample R² of log volatility: 1 − SS(residual) / SS(around the realised mean). A
    constant forecast scores at most 0 (below 0 when its level is off)."""
    y = np.log(np.maximum(np.asarray(realised_vol, dtype=float), VOL_FLOOR))
    f = np.log(np.maximum(np.asarray(forecast_vol, dtype=float), VOL_FLOOR))
    total = float(np.sum((y - y.mean()) ** 2))
    return float("nan") if total == 0 else 1.0 - float(np.sum((y - f) ** 2)) / total


def mz_r2_log_volatility(realised_vol: ArrayLike, forecast_vol: ArrayLike) -> float:
    """Mincer-Zarnowitz R² of log volatility: the squared correlation of log forecast and log
    realised volatility (0 for a constant forecast). Level-free, unlike :func:`r2_log_volatility`:
    a forecast of the *variance* (what QLIKE rewards) sits above the mean of log realised
    volatility by a Jensen gap that the plain R² counts as error."""
    y = np.log(np.maximum(np.asarray(realised_vol, dtype=float), VOL_FLOOR))
    f = np.log(np.maximum(np.asarray(forecast_vol, dtype=float), VOL_FLOOR))
    if len(y) < 3 or np.std(f) == 0 or np.std(y) == 0:
        return 0.0
    return float(np.corrcoef(y, f)[0, 1] ** 2)


@dataclass(frozen=True)
class VolatilityReport:
    """Out-of-sample scores of one volatility forecast; ``qlike_gain`` is the baseline's QLIKE
    minus this one's (positive: this forecast is better), with its paired interval."""

    n: int
    qlike: float
    qlike_ci: tuple[float, float]
    r2_log: float
    r2_log_ci: tuple[float, float]
    mz_r2_log: float
    mz_r2_log_ci: tuple[float, float]
    qlike_gain: float | None = None
    qlike_gain_ci: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def volatility_report(
    realised_vol: ArrayLike,
    forecast_vol: ArrayLike,
    *,
    baseline_vol: ArrayLike | None = None,
    block: int = 24,
    n_boot: int = 200,
    seed: int = 0,
) -> VolatilityReport:
    """QLIKE and R² of log volatility of ``forecast_vol`` against ``realised_vol`` (per-bar
    units, one row per forecast), with 95% moving-block bootstrap intervals; with
    ``baseline_vol``, also the paired gain over that baseline (same resamples for both)."""
    y = np.asarray(realised_vol, dtype=float)
    f = np.asarray(forecast_vol, dtype=float)
    base = None if baseline_vol is None else np.asarray(baseline_vol, dtype=float)
    if len(y) == 0 or len(y) != len(f) or (base is not None and len(base) != len(y)):
        raise ValueError(f"need equal, non-empty realised and forecast arrays (got {len(y)}, {len(f)})")
    draws: list[tuple[float, float, float, float]] = []
    for idx in _block_resamples(len(y), block=block, n_boot=n_boot, seed=seed):
        gain = qlike(y[idx], base[idx]) - qlike(y[idx], f[idx]) if base is not None else float("nan")
        yb, fb = y[idx], f[idx]
        draws.append((qlike(yb, fb), r2_log_volatility(yb, fb), mz_r2_log_volatility(yb, fb), gain))
    table = np.array(draws)

    def interval(column: int) -> tuple[float, float]:
        low, high = np.nanpercentile(table[:, column], [2.5, 97.5])
        return (float(low), float(high))

    score = qlike(y, f)
    return VolatilityReport(
        n=len(y),
        qlike=score,
        qlike_ci=interval(0),
        r2_log=r2_log_volatility(y, f),
        r2_log_ci=interval(1),
        mz_r2_log=mz_r2_log_volatility(y, f),
        mz_r2_log_ci=interval(2),
        qlike_gain=None if base is None else qlike(y, base) - score,
        qlike_gain_ci=None if base is None else interval(3),
    )
