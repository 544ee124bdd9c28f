"""Confidence as a probability: P(the predicted side is right | how far p is from 0.5).

The seed's confidence was a vote (``0.5·|2p−1| + 0.5·agreement``) whose agreement term came
from two magnitude models that both lose to predicting zero; it never reached ``ml_gate``'s
threshold on unseen data and meant nothing a trader could check. Here confidence is fit on
predictions the forest never trained on (out of sample, time-ordered):

1. rows are cut into equal-count buckets of the margin ``|2p − 1|`` (p: calibrated P(up));
2. each bucket's hit rate (the predicted side was right) is made non-decreasing in the margin by
   pool-adjacent-violators (isotonic regression over the buckets, weighted by their counts):
   a bigger margin may not be *less* right, and a noisy bucket is pooled with its neighbour;
3. serving interpolates the pooled rates at the signal's margin.

The same pooled blocks keep their win counts, so Kelly can size from the *lower* Wilson bound
of the win rate where this signal sits (``win_rate_bounds``): few samples give a wide interval
and a small (or zero) stake, by construction. The bound's level is Bonferroni-corrected for the
number of buckets: the luckiest of ten noise buckets is right 57% of the time on a random walk,
and a plain 95% bound would call that an edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from ml_integration.evaluation import wilson_interval
from ml_integration.exceptions import CandleDataError

__all__ = ["ConfidenceCalibrator", "PlattCalibrator", "side_margin"]

#: Fewest rows per margin bucket: below this a bucket's rate is mostly noise.
MIN_BUCKET_ROWS = 30


#: χ²(1) at 95%: the likelihood-ratio bar Platt's intercept must clear to be kept.
_CHI2_1_95 = 3.841


@dataclass(frozen=True)
class PlattCalibrator:
    """p_calibrated = sigmoid(a · logit(p_raw) + b), fit by logistic regression on out-of-fold
    predictions.

    The intercept ``b`` is a standing directional lean in every signal: fit on a period that
    trended, it imports that trend. So it is kept only when the data support it — a likelihood
    ratio test against the slope-only fit, with the statistic divided by the label horizon
    (outcomes of neighbouring bars share ``horizon − 1`` bars of the same move, so there are about
    ``n / horizon`` independent ones) — and is 0 otherwise."""

    a: float = 1.0
    b: float = 0.0

    @staticmethod
    def _logit(p: np.ndarray) -> np.ndarray:
        q = np.clip(p, 1e-4, 1 - 1e-4)
        return np.log(q / (1 - q))

    @classmethod
    def fit(cls, p_raw: np.ndarray, y: np.ndarray, *, horizon: int = 1) -> PlattCalibrator:
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(y)
        if len(np.unique(y)) < 2:
            raise CandleDataError("the calibration slice has only one direction class; use more data")
        z = cls._logit(np.asarray(p_raw, dtype=float))[:, None]
        full = LogisticRegression(C=1e4).fit(z, y)
        slope = LogisticRegression(C=1e4, fit_intercept=False).fit(z, y)
        with_lean = cls(a=float(full.coef_[0, 0]), b=float(full.intercept_[0]))
        without = cls(a=float(slope.coef_[0, 0]), b=0.0)
        statistic = 2.0 * (with_lean.log_likelihood(p_raw, y) - without.log_likelihood(p_raw, y))
        return with_lean if statistic / max(1, horizon) > _CHI2_1_95 else without

    def log_likelihood(self, p_raw: np.ndarray, y: np.ndarray) -> float:
        q = np.clip(self(p_raw), 1e-12, 1 - 1e-12)
        y = np.asarray(y, dtype=float)
        return float(np.sum(y * np.log(q) + (1 - y) * np.log(1 - q)))

    def __call__(self, p_raw: np.ndarray) -> np.ndarray:
        z = self.a * self._logit(np.asarray(p_raw, dtype=float)) + self.b
        return 0.5 * (np.tanh(0.5 * z) + 1.0)


def side_margin(p_up: np.ndarray | float) -> np.ndarray:
    """``|2p − 1|``: 0 at a coin flip, 1 at certainty (either side)."""
    return np.abs(2.0 * np.asarray(p_up, dtype=float) - 1.0)


def _pool_adjacent_violators(wins: np.ndarray, counts: np.ndarray) -> list[list[int]]:
    """Groups of consecutive bucket indices whose pooled rates are non-decreasing."""
    blocks: list[list[int]] = []
    block_wins: list[float] = []
    block_counts: list[float] = []
    for i, (w, n) in enumerate(zip(wins, counts, strict=True)):
        blocks.append([i])
        block_wins.append(float(w))
        block_counts.append(float(n))
        while len(blocks) > 1 and block_wins[-2] / block_counts[-2] > block_wins[-1] / block_counts[-1]:
            last, last_wins, last_count = blocks.pop(), block_wins.pop(), block_counts.pop()
            blocks[-1] += last
            block_wins[-1] += last_wins
            block_counts[-1] += last_count
    return blocks


@dataclass(frozen=True)
class ConfidenceCalibrator:
    """Monotone map from margin to P(side right), and the win counts behind it.

    ``upper``: each bucket's largest margin (the last is +inf); ``centre``: its mean margin;
    ``wins``/``counts``: the pooled block's hits and rows that bucket belongs to (buckets pooled
    together share them); ``rate`` = wins / counts, non-decreasing."""

    upper: tuple[float, ...] = (float("inf"),)
    centre: tuple[float, ...] = (0.0,)
    wins: tuple[int, ...] = (0,)
    counts: tuple[int, ...] = (0,)

    @classmethod
    def fit(cls, p_up: np.ndarray, went_up: np.ndarray, *, buckets: int = 10) -> ConfidenceCalibrator:
        """Fit on out-of-sample calibrated probabilities ``p_up`` and 0/1 outcomes ``went_up``."""
        p = np.asarray(p_up, dtype=float)
        y = np.asarray(went_up, dtype=float)
        if len(p) != len(y) or len(p) == 0:
            raise ValueError(f"need equal, non-empty probability and outcome arrays ({len(p)}, {len(y)})")
        margin = side_margin(p)
        right = ((p >= 0.5) == (y == 1)).astype(float)
        order = np.argsort(margin, kind="stable")
        n_buckets = max(1, min(buckets, len(p) // MIN_BUCKET_ROWS))
        parts = [part for part in np.array_split(order, n_buckets) if len(part)]
        wins = np.array([right[part].sum() for part in parts])
        counts = np.array([len(part) for part in parts], dtype=float)
        pooled_wins, pooled_counts = np.empty(len(parts)), np.empty(len(parts))
        for block in _pool_adjacent_violators(wins, counts):
            pooled_wins[block], pooled_counts[block] = wins[block].sum(), counts[block].sum()
        upper = [float(margin[part].max()) for part in parts[:-1]] + [float("inf")]
        return cls(
            upper=tuple(upper),
            centre=tuple(float(margin[part].mean()) for part in parts),
            wins=tuple(round(float(w)) for w in pooled_wins),
            counts=tuple(int(n) for n in pooled_counts),
        )

    @property
    def rate(self) -> np.ndarray:
        counts = np.maximum(np.asarray(self.counts, dtype=float), 1.0)
        return np.where(np.asarray(self.counts) > 0, np.asarray(self.wins) / counts, 0.5)

    def __call__(self, p_up: np.ndarray | float) -> np.ndarray:
        """P(the side ``p_up`` favours is right), for each probability."""
        return np.interp(side_margin(p_up), np.asarray(self.centre), self.rate)

    def win_rate_bounds(self, p_up: float) -> tuple[float, float, int]:
        """The Wilson interval of the win rate where ``p_up``'s margin falls (95% jointly over
        the blocks), and the number of out-of-sample rows behind it (0: nothing is known, the
        interval is (0, 1))."""
        k = int(np.searchsorted(np.asarray(self.upper), float(side_margin(p_up)), side="left"))
        k = min(k, len(self.counts) - 1)
        n = self.counts[k]
        if n <= 0:
            return 0.0, 1.0, 0
        # 95% for the best of the buckets the blocks were pooled from (the selection was theirs)
        z = NormalDist().inv_cdf(1.0 - 0.025 / len(self.counts))
        low, high = wilson_interval(self.wins[k], n, z=z)
        return low, high, n

    def to_dict(self) -> dict[str, Any]:
        return {"upper": [u if np.isfinite(u) else None for u in self.upper], "centre": list(self.centre),
                "wins": list(self.wins), "counts": list(self.counts)}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConfidenceCalibrator:
        upper = tuple(float("inf") if u is None else float(u) for u in data["upper"])
        centre = tuple(float(c) for c in data["centre"])
        wins, counts = tuple(int(w) for w in data["wins"]), tuple(int(n) for n in data["counts"])
        return cls(upper=upper, centre=centre, wins=wins, counts=counts)
