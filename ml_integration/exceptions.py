"""Errors raised by the ML library. Each docstring says what the caller should do.

The library does not import ``engine`` (see DESIGN.md), so this is its own branch of the one
exception root (:class:`common.errors.TvgwError`); every class derives from :class:`MLError` so
that the gateway can catch one base and fall back to its non-ML path.
"""

from __future__ import annotations

from common.errors import TvgwError

__all__ = [
    "CandleDataError",
    "GapInWindowError",
    "MLError",
    "MissingTrainExtraError",
    "ModelIntegrityError",
    "NotTrainedError",
    "TrainingCancelled",
]


class MLError(TvgwError):
    """Base of every error the ML library raises on purpose."""


class CandleDataError(MLError, ValueError):
    """The candles cannot be used as they are: fix or re-fetch the data.

    ``problem`` says what is wrong, ``row`` where (the position in the frame and its time, or
    None when the problem is the frame as a whole, such as too few rows).
    """

    def __init__(self, problem: str, row: int | None = None, when: object | None = None):
        self.problem = problem
        self.row = row
        self.when = when
        where = ""
        if row is not None:
            where = f" at row {row}" + (f" ({when})" if when is not None else "")
        super().__init__(f"bad candles: {problem}{where}")

    def __reduce__(self) -> tuple[type, tuple[str, int | None, object | None]]:
        """Rebuilt from its fields, so the error of a joblib or Dask worker reads the same here."""
        return (type(self), (self.problem, self.row, self.when))


class GapInWindowError(CandleDataError):
    """The bars a prediction needs straddle a hole in the data (an exchange outage or a
    missed fetch). Refill the candle store (``tvgw data fetch``) or wait until the window has
    moved past the gap; the strategy answers *hold* meanwhile."""


class NotTrainedError(MLError):
    """A model was asked to predict before it was trained or loaded. Train it (``tvgw train``)
    or load a saved version first."""


class ModelIntegrityError(MLError):
    """A saved model's files do not match the sha256 recorded when it was saved, or a file is
    missing. The model is refused (an artifact could have been tampered with); retrain or
    restore the version from a trusted copy."""


class MissingTrainExtraError(MLError):
    """Training the LSTM needs TensorFlow, which the serve-only install leaves out. Install the
    ``train`` extra (``pip install 'tvgw[train]'``) or train without the LSTM (``--no-lstm``)."""


class TrainingCancelled(MLError):
    """An operator cancelled this training job; nothing was saved. Start a new job to retrain."""
