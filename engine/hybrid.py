"""The hybrid mode's entry rule: an alert opens a position when its technical score plus the
ML bonus reaches the entry score. The technical score comes from the alert (the Pine script
computes it) or from the ML layer's signal (:mod:`ml_integration.technical`, on the same candles
the model saw); this module holds the engine's side of the rule."""

from __future__ import annotations

import math

__all__ = ["HYBRID_ENTRY_SCORE", "ml_bonus"]

#: Technical score (0..9) plus ML bonus at which a hybrid strategy enters (per strategy:
#: ``hybrid_entry_score``).
HYBRID_ENTRY_SCORE = 6.0


def ml_bonus(p: float) -> float:
    """Points the ML direction probability adds to the technical score in hybrid mode.

    +2 at p >= 0.70, +1 at >= 0.60, +0.5 at >= 0.50, 0 in [0.45, 0.50), -1 below 0.45. The
    probability is that of the alert's own direction (p(up) for a buy, 1 - p(up) for a sell).
    """
    try:
        valid = math.isfinite(p) and 0.0 <= p <= 1.0
    except TypeError:
        valid = False
    if not valid:
        raise ValueError(f"ml_bonus needs a probability in [0, 1], got {p!r}")
    if p >= 0.70:
        return 2.0
    if p >= 0.60:
        return 1.0
    if p >= 0.50:
        return 0.5
    if p >= 0.45:
        return 0.0
    return -1.0
