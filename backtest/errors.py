"""The backtest's one error: input it cannot run on, said before any training starts."""

from __future__ import annotations

__all__ = ["BacktestInputError"]


class BacktestInputError(ValueError):
    """The candles or the window settings cannot give a sound walk-forward.

    The message says what is wrong and what to change (a file format, ``--start``, the window
    lengths); nothing has been trained when it is raised, so fixing the command costs nothing.
    """
