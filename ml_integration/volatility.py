"""Volatility forecast: GARCH(1,1) and a ridge on realised-volatility features, combined.

What is forecast, at the close of bar t, is the *per-bar realised volatility of the next
``horizon`` bars*::

    RV_t = sqrt( (1/h) · Σ_{i=1..h} r_{t+i}² ),   r = close-to-close log return, h = horizon

(per-bar units: multiply by sqrt(bars per year) to annualise). Three forecasts of it:

* **GARCH(1,1)** fit by ``arch`` on the *training* returns only (percent-scaled, as ``arch``
  prefers; zero mean, normal errors). Serving never refits: the fitted (ω, α, β) run the
  variance recursion forward over the last ``VOL_WINDOW`` returns, started from the long-run
  variance ω / (1 − α − β). Unrolled, that recursion is a fixed weighted sum of those squared
  returns, so the forecast at bar t reads bars up to t only and is the same number whether it is
  computed over five years (training, backtests) or over the serving window (β^199 leaves the
  start-up value < 1e-6 of the weight at the β ≈ 0.93 typical of hourly crypto). The h-step
  mean variance follows from the recursion's mean reversion at rate α + β.
* **ML**: a ridge regression (HAR-style) of log RV on causal log features — realised
  volatility over 1, 6, 24, 72 and 168 bars, ATR(14)/close (the one ATR,
  :func:`common.indicators.atr`), the bar's range, a 24-bar Parkinson estimate and lagged
  |returns| — with a variance-level correction (exp of a log forecast is a geometric mean, low
  for QLIKE) fit on the training rows.
* **Combined**: log variance ``w · GARCH + (1 − w) · ML + b``; ``w`` on a grid of 0, 0.05 .. 1
  and the level ``b`` (closed form for QLIKE) are chosen on purged, time-ordered out-of-fold
  forecasts over the training rows (:func:`labels.purged_folds`, 4 blocks, each forecast by
  models fit on the rows before it). ``w`` may be 0 or 1: the data decide. (A first version
  chose it on the last 15% calibration slice alone; on the walk-forward its weight swung
  between 0 and 0.8 from one window to the next.)

Every forecast, fit on the training rows, is scored on the purged *test* slice
(:func:`evaluation.volatility_report`: QLIKE, R² and Mincer-Zarnowitz R² of log volatility with
block-bootstrap intervals) next to two naive baselines:
the last ``horizon`` bars' realised volatility, and the training period's long-run mean. Then,
as the direction model does, GARCH and the ridge are refit on every usable row (``final_fit``)
with the validated ``w`` and ``b``.

Serving (:meth:`VolatilityModel.forecast`) is numpy over the last ``VOL_WINDOW + 1`` candles
and needs no ``arch``: a model trained where ``arch`` was installed serves anywhere.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from common.indicators import atr, pad, rolling_mean, shift, windows
from common.timeframes import SECONDS_PER_YEAR
from ml_integration.candles import COLUMNS, epoch_seconds
from ml_integration.evaluation import VOL_FLOOR, qlike, volatility_report
from ml_integration.exceptions import CandleDataError
from ml_integration.features import LOOKBACK
from ml_integration.labels import purged_folds, purged_split

__all__ = [
    "FEATURE_NAMES",
    "VOL_WINDOW",
    "GarchParams",
    "Ridge",
    "VolatilityForecast",
    "VolatilityModel",
    "fit_garch",
    "log_returns",
    "realised_forward",
    "train_or_skip",
    "train_volatility",
    "vol_features",
    "vol_target_scale",
]

log = logging.getLogger(__name__)

#: Returns the GARCH recursion and the features read per forecast: one less than the direction
#: model's feature lookback, so every serving window already holds enough candles.
VOL_WINDOW = LOOKBACK - 1

_RV_WINDOWS = (1, 6, 24, 72, 168)
_LAGS = (1, 2, 3)
FEATURE_NAMES: list[str] = (
    [f"log_rv_{w}" for w in _RV_WINDOWS]
    + ["log_atr_frac", "log_range", "log_parkinson_24"]
    + [f"log_absret_lag_{k}" for k in _LAGS]
)
_WEIGHT_GRID = np.round(np.linspace(0.0, 1.0, 21), 2)
_PERCENT = 100.0  # arch is fit on percent returns
_FOLDS = 4  # out-of-fold blocks the combination weight is chosen on
_MIN_ROWS = 300  # usable rows (full gap-free window and target) below which nothing is fit


def _log_floor(x: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(x, VOL_FLOOR))


def log_returns(close: np.ndarray, stamps: np.ndarray, timeframe_sec: int) -> np.ndarray:
    """r[i] = log(close[i] / close[i-1]); NaN for the first bar and across a gap (a return
    over several missing bars is not a one-bar return)."""
    r = np.full(len(close), np.nan)
    if len(close) > 1:
        r[1:] = np.log(close[1:] / close[:-1])
        r[1:][np.diff(stamps) != timeframe_sec] = np.nan
    return r


def realised_forward(returns: np.ndarray, horizon: int) -> np.ndarray:
    """The target: RV_t over bars t+1..t+horizon (NaN where that window is incomplete)."""
    mean_sq = rolling_mean(returns * returns, horizon)  # row t: bars t-h+1..t
    out = np.full(len(returns), np.nan)
    out[: len(returns) - horizon] = np.sqrt(mean_sq[horizon:])
    return out


def vol_features(values: np.ndarray, returns: np.ndarray) -> np.ndarray:
    """The ML model's causal features for every row of ``values`` (open, high, low, close,
    volume): row t reads bars up to t only; NaN without a full window."""
    high, low, close = values[:, 1], values[:, 2], values[:, 3]
    sq = returns * returns
    cols = [0.5 * _log_floor(rolling_mean(sq, w)) for w in _RV_WINDOWS]
    cols.append(_log_floor(atr(high, low, close) / close))
    hl = np.log(high / low)
    cols.append(_log_floor(hl))
    cols.append(0.5 * _log_floor(rolling_mean(hl * hl, 24) / (4.0 * math.log(2.0))))
    cols.extend(_log_floor(np.abs(shift(returns, k))) for k in _LAGS)
    return np.column_stack(cols)


@dataclass(frozen=True)
class GarchParams:
    """GARCH(1,1) on per-bar log returns (fractions, not percent):
    σ²_{t+1} = omega + alpha · r_t² + beta · σ²_t."""

    omega: float
    alpha: float
    beta: float
    long_run_variance: float
    converged: bool = True

    @property
    def persistence(self) -> float:
        return self.alpha + self.beta

    def _weights(self) -> np.ndarray:
        """Weights of r²_{t-W+1} .. r²_t (oldest first) in σ²_{t+1}."""
        return self.alpha * self.beta ** np.arange(VOL_WINDOW)[::-1]

    def _constant(self) -> float:
        """omega over the recursion's W steps (Σ beta^k, k < W) plus the long-run start's share
        beta^W. The sum is added up term by term: its closed form (1 − beta^W) / (1 − beta)
        divides by zero at beta = 1, where ``arch`` can land (an integrated fit)."""
        steps = float(np.sum(self.beta ** np.arange(VOL_WINDOW)))
        return self.omega * steps + self.beta**VOL_WINDOW * self.long_run_variance

    def next_variance(self, returns: np.ndarray) -> np.ndarray:
        """σ²_{t+1} for every row: the recursion run over the last ``VOL_WINDOW`` returns up to
        t, started from the long-run variance (NaN without a full, gap-free window)."""
        sq = returns * returns
        return pad(windows(sq, VOL_WINDOW) @ self._weights() + self._constant(), len(returns))

    def mean_variance(self, next_variance: np.ndarray, horizon: int) -> np.ndarray:
        """Mean forecast variance of bars t+1..t+h: E[σ²_{t+k}] reverts to the long-run
        variance at rate alpha + beta per bar."""
        phi = min(self.persistence, 0.9999)
        reversion = float(np.mean(phi ** np.arange(horizon)))
        return self.long_run_variance + (next_variance - self.long_run_variance) * reversion


def fit_garch(returns: np.ndarray) -> GarchParams:
    """GARCH(1,1) by ``arch`` (imported here: a missing ``arch`` raises ImportError, which the
    caller turns into one log line) on the finite ``returns``, percent-scaled."""
    from arch import arch_model

    r = returns[np.isfinite(returns)]
    model = arch_model(r * _PERCENT, mean="Zero", vol="GARCH", p=1, q=1, dist="normal", rescale=False)
    result = model.fit(disp="off", show_warning=False)
    omega = float(result.params["omega"]) / _PERCENT**2
    alpha, beta = float(result.params["alpha[1]"]), float(result.params["beta[1]"])
    phi = alpha + beta
    long_run = omega / (1.0 - phi) if phi < 0.9999 else float(np.mean(r * r))
    return GarchParams(omega, alpha, beta, long_run, converged=result.convergence_flag == 0)


@dataclass(frozen=True)
class Ridge:
    """Ridge regression on standardised features, kept as arrays so serving is a dot product."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, penalty: float = 1.0) -> Ridge:
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale == 0] = 1.0
        z = (x - mean) / scale
        gram = z.T @ z + penalty * np.eye(z.shape[1])
        coef = np.linalg.solve(gram, z.T @ (y - y.mean()))
        return cls(tuple(mean.tolist()), tuple(scale.tolist()), tuple(coef.tolist()), float(y.mean()))

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        return np.asarray(z @ np.asarray(self.coef) + self.intercept)


@dataclass(frozen=True)
class VolatilityForecast:
    """One forecast for the bar after the last candle, and what the signal makes of it."""

    sigma: float  # per-bar RV of the next ``horizon`` bars (combined)
    annualised: float
    garch: float
    ml: float
    horizon: int
    atr_equivalent: float  # price units: the stop's yardstick in place of ATR(14)
    method: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VolatilityModel:
    """The fitted volatility part of a strategy (plain numbers: saved as JSON)."""

    horizon: int
    timeframe_sec: int
    garch: GarchParams
    ridge: Ridge
    ml_level: float  # log-variance correction of the ridge's log-vol forecast
    weight: float  # GARCH's weight in the combined log variance
    level: float  # the combination's log-variance correction
    atr_per_sigma: float  # median ATR(14)/close ÷ combined sigma on the served rows

    @property
    def method(self) -> str:
        return (
            f"GARCH(1,1) x {self.weight:.2f} + ridge x {1 - self.weight:.2f} in log variance "
            f"(weight by QLIKE out of fold), {self.horizon}-bar realised vol"
        )

    @property
    def bars_per_year(self) -> float:
        return SECONDS_PER_YEAR / self.timeframe_sec

    def components(self, values: np.ndarray, returns: np.ndarray) -> dict[str, np.ndarray]:
        """Per-bar sigma of the GARCH, ML and combined forecasts for every row."""
        lv_garch = np.log(self.garch.mean_variance(self.garch.next_variance(returns), self.horizon))
        lv_ml = 2.0 * self.ridge.predict(vol_features(values, returns)) + self.ml_level
        lv = self.weight * lv_garch + (1.0 - self.weight) * lv_ml + self.level
        return {"garch": np.exp(0.5 * lv_garch), "ml": np.exp(0.5 * lv_ml), "combined": np.exp(0.5 * lv)}

    def forecast(self, df: pd.DataFrame) -> VolatilityForecast | None:
        """The forecast after the last candle of ``df`` (validated candles; only the last
        ``VOL_WINDOW + 1`` are read). None when that window has a gap."""
        tail = df.iloc[-(VOL_WINDOW + 1) :]
        # selecting columns costs more than the whole forecast; skip it when already in order
        same = list(tail.columns) == list(COLUMNS)
        values = (tail if same else tail[list(COLUMNS)]).to_numpy(dtype=float)
        returns = log_returns(values[:, 3], epoch_seconds(tail.index), self.timeframe_sec)
        sigmas = {name: float(s[-1]) for name, s in self.components(values, returns).items()}
        sigma = sigmas["combined"]
        if not math.isfinite(sigma) or len(tail) < VOL_WINDOW + 1:
            return None
        close = float(values[-1, 3])
        return VolatilityForecast(
            sigma=sigma,
            annualised=sigma * math.sqrt(self.bars_per_year),
            garch=sigmas["garch"],
            ml=sigmas["ml"],
            horizon=self.horizon,
            atr_equivalent=self.atr_per_sigma * sigma * close,
            method=self.method,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VolatilityModel:
        r = data["ridge"]
        ridge = Ridge(tuple(r["mean"]), tuple(r["scale"]), tuple(r["coef"]), float(r["intercept"]))
        return cls(**{**data, "garch": GarchParams(**data["garch"]), "ridge": ridge})


def _best_combination(y: np.ndarray, lv_garch: np.ndarray, lv_ml: np.ndarray) -> tuple[float, float, float]:
    """(weight, level, QLIKE) minimising QLIKE of ``w·garch + (1−w)·ml + level`` on ``y``;
    for a given w the QLIKE-optimal level is log mean(RV² / forecast variance)."""
    rv2 = np.maximum(y, VOL_FLOOR) ** 2
    best = (1.0, 0.0, math.inf)
    for w in _WEIGHT_GRID:
        lv = w * lv_garch + (1 - w) * lv_ml
        level = float(np.log(np.mean(rv2 / np.exp(lv))))
        score = qlike(y, np.exp(0.5 * (lv + level)))
        if score < best[2]:
            best = (float(w), level, score)
    return best


def _out_of_fold_weight(
    values: np.ndarray, returns: np.ndarray, x: np.ndarray, y: np.ndarray, rows: np.ndarray,
    horizon: int, timeframe_sec: int,
) -> tuple[float, float, int]:  # fmt: skip
    """(weight, level, rows scored) of the combination, chosen by QLIKE on out-of-fold
    forecasts over ``rows`` (:func:`labels.purged_folds`: each block forecast by GARCH and a
    ridge fit on the rows before it, less a purge of ``horizon``), so neither model has seen
    the rows its weight is judged on, and the weight rests on most of the training period
    rather than one short slice."""
    realised, lv_garch, lv_ml = [], [], []
    for fit, scored in purged_folds(len(rows), n_folds=_FOLDS, gap=horizon):
        garch, ridge, ml_level = _fit_parts(returns, x, y, rows[fit])
        fold = VolatilityModel(horizon, timeframe_sec, garch, ridge, ml_level, 1.0, 0.0, 1.0)
        parts = fold.components(values, returns)
        at = rows[scored]
        realised.append(y[at])
        lv_garch.append(2.0 * np.log(parts["garch"][at]))
        lv_ml.append(2.0 * np.log(parts["ml"][at]))
    weight, level, _ = _best_combination(
        np.concatenate(realised), np.concatenate(lv_garch), np.concatenate(lv_ml)
    )
    return weight, level, sum(len(r) for r in realised)


def _fit_parts(
    returns: np.ndarray, x: np.ndarray, y: np.ndarray, rows: np.ndarray
) -> tuple[GarchParams, Ridge, float]:
    """GARCH on the returns up to the last of ``rows``; the ridge and its level on ``rows``."""
    garch = fit_garch(returns[: rows[-1] + 1])
    ridge = Ridge.fit(x[rows], np.log(np.maximum(y[rows], VOL_FLOOR)))
    rv2 = np.maximum(y[rows], VOL_FLOOR) ** 2
    ml_level = float(np.log(np.mean(rv2 / np.exp(2.0 * ridge.predict(x[rows])))))
    return garch, ridge, ml_level


def train_volatility(
    df: pd.DataFrame,
    *,
    horizon: int,
    timeframe_sec: int,
    test_fraction: float = 0.15,
    final_fit: bool = True,
) -> tuple[VolatilityModel, dict[str, Any]]:
    """Fit, combine and score the volatility forecasts on validated candles ``df`` (see the
    module docstring); returns the served model and the report. Raises ImportError when
    ``arch`` is missing."""
    started = time.perf_counter()
    values = df[list(COLUMNS)].to_numpy(dtype=float)
    returns = log_returns(values[:, 3], epoch_seconds(df.index), timeframe_sec)
    y = realised_forward(returns, horizon)
    x = vol_features(values, returns)
    garch_ready = np.isfinite(pad(windows(returns, VOL_WINDOW).sum(axis=1), len(returns)))
    usable = np.flatnonzero(np.isfinite(y) & np.isfinite(x).all(axis=1) & garch_ready)
    if len(usable) < _MIN_ROWS:
        raise CandleDataError(
            f"too few rows for a volatility forecast: {len(usable)} have {VOL_WINDOW} gap-free returns "
            f"before them and {horizon} after (need {_MIN_ROWS})"
        )
    split = purged_split(len(usable), test_fraction=test_fraction, gap=horizon)
    tr, te = usable[split.train], usable[split.test]
    weight, level, n_oof = _out_of_fold_weight(values, returns, x, y, tr, horizon, timeframe_sec)
    garch, ridge, ml_level = _fit_parts(returns, x, y, tr)
    model = VolatilityModel(horizon, timeframe_sec, garch, ridge, ml_level, weight, level, 1.0)
    parts = model.components(values, returns)
    combined = parts["combined"]
    report = _report(y, returns, parts, tr, te, horizon)
    report["combination"] = {"folds": _FOLDS, "out_of_fold_rows": n_oof}
    report["validation_garch"] = asdict(garch)
    if final_fit:
        garch, ridge, ml_level = _fit_parts(returns, x, y, usable)
        model = VolatilityModel(horizon, timeframe_sec, garch, ridge, ml_level, weight, level, 1.0)
        combined = model.components(values, returns)["combined"]
    served = usable if final_fit else tr
    atr_frac = np.exp(x[served, FEATURE_NAMES.index("log_atr_frac")])
    atr_per_sigma = float(np.median(atr_frac / combined[served]))
    model = VolatilityModel(horizon, timeframe_sec, garch, ridge, ml_level, weight, level, atr_per_sigma)
    report.update(
        method=model.method, weight_garch=weight, level=level, garch=asdict(garch),
        atr_per_sigma=atr_per_sigma, split=split.describe(),
        test_window=[str(df.index[te[0]]), str(df.index[te[-1]])],
        train_seconds=time.perf_counter() - started,
    )  # fmt: skip
    return model, report


def _report(
    y: np.ndarray, returns: np.ndarray, parts: dict[str, np.ndarray], tr: np.ndarray, te: np.ndarray,
    horizon: int,
) -> dict[str, Any]:  # fmt: skip
    """Test-slice scores of each forecast and the naive baselines; each QLIKE gain is over the
    training period's long-run mean (the stronger of the two naive forecasts: the last
    ``horizon`` bars' realised volatility is too noisy at short horizons)."""
    last_rv = np.sqrt(rolling_mean(returns * returns, horizon))
    long_run = np.full(len(y), math.sqrt(float(np.mean(np.maximum(y[tr], VOL_FLOOR) ** 2))))
    block = max(24, horizon)
    forecasts = {**parts, "last_realised": last_rv, "long_run_mean": long_run}
    scores = {
        name: volatility_report(y[te], f[te], baseline_vol=long_run[te], block=block).to_dict()
        for name, f in forecasts.items()
    }
    return {
        "target": f"per-bar realised volatility of the next {horizon} bars, sqrt(mean r^2)",
        "test": scores,
    }


def train_or_skip(df: pd.DataFrame, **options: Any) -> tuple[VolatilityModel | None, dict[str, Any]]:
    """:func:`train_volatility`, or (None, why) with one log line when it cannot be fit
    (``arch`` not installed, too few gap-free rows): the strategy then sizes and stops from
    ATR(14) and realised volatility, as before this part existed."""
    try:
        return train_volatility(df, **options)
    except ImportError as exc:
        note = (
            f"volatility forecast skipped: {exc.name or 'arch'} is not installed (pip install "
            "'tvgw[models]'); stops, leverage and size from ATR(14) and realised volatility"
        )
    except CandleDataError as exc:
        note = f"volatility forecast skipped: {exc}; stops, leverage and size from ATR(14)"
    _say_once(note)
    return None, {"skipped": note}


@functools.cache
def _say_once(note: str) -> None:
    """Log a reason to skip the forecast once per process: a backtest trains a model per window,
    and a serve-only install would print the same line for every one of them."""
    log.warning(note)


def vol_target_scale(annualised: float, target: float) -> float:
    """Volatility targeting: the share of the Kelly stake kept, ``min(1, target / forecast)``.
    It only ever cuts a stake (a calm market never raises it above the conservative Kelly, and
    a zero stake stays zero)."""
    if not annualised > 0:
        return 1.0
    return min(1.0, target / annualised)
