"""Features of a whole candle history, computed once and cut per training window.

A walk-forward trains a model on each of a dozen overlapping windows of the same history.
Computing the 80+ features and the context families again for every window repeats the same
arithmetic; computing them once and *cutting* gives the very same numbers, because every column
at bar t is a function of the ``LOOKBACK`` bars ending at t and of nothing else (``features``,
``context``: finite windows, each summed on its own, no running state).

What changes at a cut is only which rows have a full window: computed on ``candles[lo:hi]``
alone, a row is NaN when fewer than ``LOOKBACK - 1`` bars of the (short-hole-filled) time grid
precede it inside the cut. :meth:`FeatureSpan.cut` blanks exactly those rows, so its output
equals the cut's own computation bit for bit (``tests/ml_integration/test_feature_span.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml_integration.candles import FILL_GAP_BARS, fill_short_gaps
from ml_integration.context import Reference, extra_matrix
from ml_integration.features import LOOKBACK, compute_feature_matrix

__all__ = ["FeatureSpan"]


@dataclass(frozen=True)
class FeatureSpan:
    """The feature rows (``features.FEATURE_NAMES``) and context rows (``context.EXTRA_FEATURES``)
    of every candle of one history, with each candle's place on the filled time grid."""

    matrix: np.ndarray
    extra: np.ndarray
    positions: np.ndarray

    @classmethod
    def compute(
        cls, values: np.ndarray, stamps_sec: np.ndarray, timeframe_sec: int, *, max_missing_bars: int = 0,
        reference: Reference | None = None,
    ) -> FeatureSpan:  # fmt: skip
        """Both matrices for ``values`` (open, high, low, close, volume) at ``stamps_sec``;
        ``reference``: the reference market's candles for the ``btc`` family (``context``)."""
        matrix = compute_feature_matrix(values, stamps_sec, timeframe_sec, max_missing_bars=max_missing_bars)
        extra = extra_matrix(
            values, stamps_sec, timeframe_sec, max_missing_bars=max_missing_bars, reference=reference
        )
        _, _, positions = fill_short_gaps(values, stamps_sec, timeframe_sec, FILL_GAP_BARS)
        return cls(matrix, extra, positions)

    def cut(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``lo .. hi - 1`` of both matrices as computing them on those candles alone gives
        them: a row whose ``LOOKBACK``-bar window starts before ``lo`` is NaN."""
        if not 0 <= lo < hi <= len(self.positions):
            raise ValueError(f"cut {lo}..{hi} is outside the {len(self.positions)} rows computed")
        short = self.positions[lo:hi] - self.positions[lo] < LOOKBACK - 1
        matrix, extra = self.matrix[lo:hi].copy(), self.extra[lo:hi].copy()
        matrix[short] = np.nan
        extra[short] = np.nan
        return matrix, extra
