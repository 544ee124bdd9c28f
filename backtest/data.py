"""Candles for a backtest, and the checks made on them before any model is trained.

Sources: a freqtrade JSON file (``[[ms, open, high, low, close, volume], ...]``, as in the
shared data folder), a CSV file (``ml_integration.candles.read_candle_file`` reads both), or
the local candle store (``tvgw data fetch`` / ``tvgw data import``). Whatever the source, the
frame is validated (``validate_candles``), its bar spacing must be the ``--timeframe`` asked
for, and the range the walk-forward uses may not hold a gap longer than the prediction horizon
(a label or a stop across a hole of unknown length would be fiction).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from backtest.errors import BacktestInputError
from ml_integration.candles import find_gaps, infer_timeframe_seconds, read_candle_file, timeframe_seconds
from ml_integration.exceptions import CandleDataError
from storage import Storage

__all__ = ["CandleSource", "check_gaps", "load_candles"]

#: File suffixes ``read_candle_file`` understands.
KNOWN_SUFFIXES = (".json", ".csv")


@dataclass(frozen=True)
class CandleSource:
    """Where the candles come from: ``file`` when given, else the store at ``database``."""

    symbol: str
    timeframe: str
    file: Path | None = None
    database: Path | None = None


def load_candles(source: CandleSource) -> pd.DataFrame:
    """The validated candle frame of ``source``, or a :class:`BacktestInputError` saying what to
    change."""
    try:
        step = timeframe_seconds(source.timeframe)
    except ValueError as exc:
        raise BacktestInputError(f"--timeframe: {exc}") from None
    frame = _read_file(source.file) if source.file is not None else _read_store(source)
    if len(frame) < 2:
        raise BacktestInputError(f"only {len(frame)} candle(s) in the data: a backtest needs months of bars")
    spacing = infer_timeframe_seconds(frame.index)
    if spacing != step:
        raise BacktestInputError(
            f"the candles are {spacing} s apart but --timeframe {source.timeframe} means {step} s: "
            "pass the timeframe the data has, or data of that timeframe"
        )
    return frame


def _read_file(path: Path) -> pd.DataFrame:
    if path.suffix.lower() not in KNOWN_SUFFIXES:
        raise BacktestInputError(
            f"{path}: unknown candle file format {path.suffix or '(no suffix)'!r}; give a freqtrade "
            "JSON file ([[ms, open, high, low, close, volume], ...], suffix .json) or a CSV with a "
            "time column and open, high, low, close, volume (suffix .csv)"
        )
    if not path.is_file():
        raise BacktestInputError(f"--data {path}: no such file")
    try:
        return read_candle_file(path)
    except (CandleDataError, ValueError) as exc:
        raise BacktestInputError(f"{path}: {exc}") from None


def _read_store(source: CandleSource) -> pd.DataFrame:
    from storage.candles import load_candles as load_stored

    if source.database is None or not Path(source.database).is_file():
        raise BacktestInputError(
            f"no --data file and no candle store at {source.database}: pass --data FILE, or fill the "
            f"store with `tvgw data fetch --symbol {source.symbol} --timeframe {source.timeframe}`"
        )
    storage = Storage(source.database)
    try:
        frame = load_stored(storage, source.symbol, source.timeframe)
    finally:
        storage.close()
    if frame.empty:
        raise BacktestInputError(
            f"the candle store {source.database} holds no {source.symbol} {source.timeframe} candles: run "
            f"`tvgw data fetch --symbol {source.symbol} --timeframe {source.timeframe}` or pass --data FILE"
        )
    from ml_integration.candles import validate_candles

    try:
        return validate_candles(frame)
    except CandleDataError as exc:
        raise BacktestInputError(f"the candle store: {exc}") from None


def check_gaps(frame: pd.DataFrame, timeframe: str, horizon: int, first: pd.Timestamp) -> None:
    """Refuse a hole longer than ``horizon`` bars anywhere from ``first`` on (the range the
    walk-forward reads, warm-up included), naming the latest such gap and the ``--start`` that
    avoids it."""
    step = timeframe_seconds(timeframe)
    used = frame.loc[frame.index >= first]
    long_gaps = [g for g in find_gaps(used.index, step) if g.missing_bars > horizon]
    if not long_gaps:
        return
    last = long_gaps[-1]
    raise BacktestInputError(
        f"{len(long_gaps)} gap(s) longer than the {horizon}-bar horizon inside the range used; the latest: "
        f"{last.missing_bars} bars missing between {last.after} and {last.before}. Move --start so that "
        f"training begins after {last.before} (or fill the hole: `tvgw data fetch`)"
    )
