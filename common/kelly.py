"""The Kelly criterion, once: the fraction of capital to stake on a bet won with probability
``p`` that pays ``win`` per unit risked and costs ``loss`` per unit risked when lost.

Every layer sizes from this one function: the ML strategy's conservative edge (costs charged
against the stop: ``win = b - c``, ``loss = 1 + c``), its signal's other side (from ``1 - p``),
and the backtest's Pine replay (``win`` = the reward/risk ratio). It takes numbers or pandas
series alike (plain arithmetic).
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["kelly_fraction"]

T = TypeVar("T")


def kelly_fraction(p: T, win: float, loss: float = 1.0) -> T:
    """Full Kelly ``f* = p / loss - (1 - p) / win`` (with ``loss = 1``: ``(b·p - (1 - p)) / b``
    for the win/loss ratio ``b = win``). Negative when the bet has no edge: stake nothing."""
    if win <= 0:
        raise ValueError(f"win/loss ratio b must be > 0, got {win}")
    if loss <= 0:
        raise ValueError(f"the loss per unit risked must be > 0, got {loss}")
    return p / loss - (1 - p) / win  # type: ignore[operator, return-value]
