"""The whole walk-forward, as ``tvgw backtest`` runs it: check the input, plan the windows,
train each window's models, replay the script's alerts through every arm, measure.

Arms, all on the same windows, alerts, fees and slippage:

* ``buy_and_hold``: the whole starting balance bought at the first traded bar's open (one fill,
  with the fee and slippage), marked at every close;
* ``pine``: the script's rules alone (strategy mode ``execute``, no model);
* ``baseline``: the rules with the plain RandomForest's opinion (``ml_integration.baseline``);
* ``ml``: the rules with the full ML strategy's opinion (``ml_integration``), unless skipped.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backtest.data import CandleSource, check_gaps, load_candles, store_is_synthetic
from backtest.errors import BacktestInputError
from backtest.execution import replay_settings
from backtest.metrics import monte_carlo, prediction_metrics, trade_returns, trading_metrics
from backtest.models import WindowInputs, WindowModels, train_windows
from backtest.replay import Arm, ArmResult, run_arm
from backtest.rules import PineInputs, PineOrder, replay_orders
from backtest.windows import Window, plan_windows
from ml_integration.candles import COLUMNS, timeframe_seconds
from ml_integration.evaluation import rank_auc
from ml_integration.features import LOOKBACK
from ml_integration.labels import make_labels
from ml_integration.prediction import ModelConfig
from ml_integration.serving import ServedSignal
from ml_integration.strategy import StrategyConfig
from settings import Settings

__all__ = ["BacktestConfig", "BacktestResult", "run_backtest"]

MODES = ("execute", "ml_gate", "hybrid")
_DAYS_180 = pd.Timedelta(days=180)
_DAYS_30 = pd.Timedelta(days=30)
#: The full strategy's default blend of ML and (neutral) sentiment, applied to the baseline too.
_BLEND = StrategyConfig()


@dataclass(frozen=True)
class BacktestConfig:
    """Everything one run needs (the command's options)."""

    symbol: str
    timeframe: str = "1h"
    data_file: Path | None = None
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None
    train_window: pd.Timedelta = _DAYS_180
    test_window: pd.Timedelta = _DAYS_30
    fees: float = 0.001
    slippage_bps: float = 5.0
    mode: str = "hybrid"
    horizon: int = 5
    embargo_bars: int | None = None  # default: the horizon
    use_lstm: bool = True
    full_ml: bool = True
    model_config: ModelConfig | None = None  # default: ml_integration's own sizes
    jobs: int = 1
    progress: bool = True
    monte_carlo_runs: int = 1000
    #: Windows per refit schedule: the tournament and column selection run on the first of each
    #: (``backtest.models``). None: once the training rows have turned over (train / test windows).
    choose_every: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise BacktestInputError(f"--mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.horizon < 1:
            raise BacktestInputError(f"--horizon must be at least 1 bar, got {self.horizon}")
        if self.embargo_bars is not None and self.embargo_bars < self.horizon:
            raise BacktestInputError(
                f"--embargo {self.embargo_bars} bars is shorter than the {self.horizon}-bar horizon: "
                "labels would overlap the traded bars; use at least the horizon"
            )
        if not 0 <= self.fees < 0.1 or not 0 <= self.slippage_bps < 1000:
            raise BacktestInputError(
                f"--fees {self.fees} must be in [0, 0.1) and --slippage-bps in [0, 1000)"
            )
        if self.jobs < 1:
            raise BacktestInputError(f"--jobs must be at least 1, got {self.jobs}")
        if self.choose_every is not None and self.choose_every < 1:
            raise BacktestInputError(f"--choose-every must be at least 1 window, got {self.choose_every}")

    @property
    def schedule(self) -> int:
        """Windows per refit schedule (see ``choose_every``)."""
        if self.choose_every is not None:
            return self.choose_every
        return max(1, int(np.ceil(self.train_window / self.test_window)))

    @property
    def embargo(self) -> int:
        return self.embargo_bars if self.embargo_bars is not None else self.horizon

    def models(self) -> ModelConfig | None:
        if not self.full_ml:
            return None
        base = self.model_config or ModelConfig()
        return replace(base, use_lstm=self.use_lstm and base.use_lstm)


@dataclass
class BacktestResult:
    """The summary (what the JSON holds) and the per-bar curves the report plots."""

    summary: dict[str, Any]
    times: pd.DatetimeIndex
    curves: dict[str, np.ndarray] = field(default_factory=dict)
    arms: dict[str, ArmResult] = field(default_factory=dict)


def run_backtest(
    config: BacktestConfig, settings: Settings, *, candles: pd.DataFrame | None = None
) -> BacktestResult:
    """Run the walk-forward. ``candles`` (a frame with the OHLCV columns and optionally extra
    numeric feature columns for the baseline) replaces reading ``config.data_file`` / the store."""
    started = time.perf_counter()
    frame, extras = _candles(config, settings, candles)
    step = timeframe_seconds(config.timeframe)
    model_config = config.models()
    warmup = LOOKBACK + (
        model_config.lstm.sequence_length - 1 if model_config and model_config.use_lstm else 0
    )
    windows = plan_windows(
        frame.index, step_s=step, train=config.train_window, test=config.test_window,
        embargo_bars=config.embargo, warmup_bars=warmup, min_train_bars=_min_train_bars(config),
        start=config.start, end=config.end,
    )  # fmt: skip
    check_gaps(frame, config.timeframe, config.horizon, windows[0].data_start)
    if model_config is not None and model_config.use_lstm:
        from ml_integration.lstm import require_keras

        require_keras()  # before any training: a serve-only install is told at once
    trained_at = time.perf_counter()
    window_inputs = WindowInputs.compute(
        frame, extras, start=int(frame.index.searchsorted(windows[0].data_start)), step_s=step,
        model_config=model_config,
    )  # fmt: skip
    models = train_windows(
        window_inputs, windows, horizon=config.horizon, model_config=model_config, step_s=step,
        jobs=config.jobs, progress=config.progress, choose_every=config.schedule,
    )  # fmt: skip
    training_s = time.perf_counter() - trained_at
    first = int(frame.index.searchsorted(windows[0].test_start))
    last = int(frame.index.searchsorted(windows[-1].test_end))
    inputs = PineInputs(initial_capital=settings.paper.starting_balance)
    orders = replay_orders(frame, first, last, inputs, step)
    predictions = _Predictions(window_inputs, windows, models, config.horizon, step)
    arms = [Arm("pine", "Pine rules alone", "execute")]
    arms.append(
        Arm("baseline", f"Rules + baseline forest ({config.mode})", config.mode, predictions.baseline_opinion)
    )
    if model_config is not None:
        arms.append(Arm("ml", f"Rules + full ML strategy ({config.mode})", config.mode,
                        lambda order: predictions.ml_opinion(order, config.symbol)))  # fmt: skip
    replayed_at = time.perf_counter()
    results: dict[str, ArmResult] = {}
    with tempfile.TemporaryDirectory(prefix="tvgw-backtest-") as scratch:
        for arm in arms:
            arm_settings = replay_settings(
                settings, Path(scratch) / f"{arm.name}.sqlite", mode=arm.mode, fee_rate=config.fees,
                slippage_bps=config.slippage_bps,
            )  # fmt: skip
            results[arm.name] = run_arm(
                arm, frame, orders, first=first, last=last, settings=arm_settings, symbol=config.symbol,
                timeframe=config.timeframe,
            )  # fmt: skip
    replay_s = time.perf_counter() - replayed_at
    start_equity = settings.paper.starting_balance
    times = frame.index[first:last]
    curves = {"buy_and_hold": _buy_and_hold(frame, first, last, start_equity, config)}
    curves.update({name: r.equity for name, r in results.items()})
    summary = _summary(config, settings, frame, windows, models, orders, results, curves, predictions,
                       first=first, last=last, step=step)  # fmt: skip
    summary["candles"] = _origin(config, settings, candles)
    summary["timings_s"] = {
        "training": training_s,
        "replay": replay_s,
        "total": time.perf_counter() - started,
    }
    return BacktestResult(summary=summary, times=times, curves=curves, arms=results)


def _candles(
    config: BacktestConfig, settings: Settings, candles: pd.DataFrame | None
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    if candles is None:
        source = CandleSource(config.symbol, config.timeframe, config.data_file, Path(settings.database))
        return load_candles(source), None
    from ml_integration.candles import validate_candles
    from ml_integration.exceptions import CandleDataError

    try:
        frame = validate_candles(candles[list(COLUMNS)])
    except (CandleDataError, KeyError) as exc:
        raise BacktestInputError(f"candles: {exc}") from None
    extra_columns = [c for c in candles.columns if c not in COLUMNS]
    return frame, candles[extra_columns].astype(float) if extra_columns else None


def _origin(config: BacktestConfig, settings: Settings, candles: pd.DataFrame | None) -> dict[str, Any]:
    """Where the candles came from, and whether they are synthetic (the offline quickstart's
    generated history in the candle store): the report then says so wherever it shows a figure."""
    if candles is not None:
        return {"source": "given", "synthetic": False}
    if config.data_file is not None:
        return {"source": f"file:{config.data_file}", "synthetic": False}
    source = CandleSource(config.symbol, config.timeframe, None, Path(settings.database))
    return {"source": f"candle store {settings.database}", "synthetic": store_is_synthetic(source)}


def _min_train_bars(config: BacktestConfig) -> int:
    """Bars a training window needs: enough labelled rows for the models' own train /
    calibration / test split (the full strategy refuses fewer than 200 usable rows)."""
    return 400 if config.full_ml else 200


def _buy_and_hold(
    frame: pd.DataFrame, first: int, last: int, start_equity: float, config: BacktestConfig
) -> np.ndarray:
    entry = float(frame["open"].iat[first]) * (1 + config.slippage_bps / 10_000)
    amount = start_equity / (entry * (1 + config.fees))
    return amount * frame["close"].to_numpy(dtype=float)[first:last]


@dataclass(frozen=True, kw_only=True)
class BaselineCall:
    """The plain baseline model's call, in the fields the ML layer's signal has (so it travels
    in the same :class:`ServedSignal` and the engine reads it through the same port): a
    probability and nothing else; no stops, no Kelly, no leverage."""

    ml_probability: float
    combined_probability: float
    confidence: float
    entry_price: float
    kelly_fraction: float = 0.0
    stop_loss: float | None = None
    take_profit: float | None = None
    leverage: float = 1.0


class _Predictions:
    """Out-of-sample probabilities of both models on their own test windows, and the opinions
    the arms hand the engine."""

    def __init__(
        self, inputs: WindowInputs, windows: list[Window], models: list[WindowModels], horizon: int,
        step: int,
    ) -> None:  # fmt: skip
        frame = inputs.frame
        self.inputs, self.frame, self.windows, self.models, self.step = inputs, frame, windows, models, step
        self._signals: dict[tuple[int, int], tuple[ServedSignal | None, dict[str, Any] | None]] = {}
        self.matrix = inputs.baseline
        self.starts = pd.DatetimeIndex([w.test_start for w in windows])
        labels = make_labels(frame, horizon, timeframe_sec=step)
        self.valid, self.direction = labels.valid, labels.direction
        n = len(frame)
        self.window_of = np.full(n, -1)
        self.p_baseline = np.full(n, np.nan)
        self.p_ml = np.full(n, np.nan)
        self.base_rate = np.full(n, np.nan)
        for k, (window, model) in enumerate(zip(windows, models, strict=True)):
            lo, hi = frame.index.searchsorted(window.test_start), frame.index.searchsorted(window.test_end)
            self.window_of[lo:hi] = k
            self.base_rate[lo:hi] = model.train_up_rate
            self.p_baseline[lo:hi] = model.baseline.predict_up(self.matrix[lo:hi])
            if model.strategy is not None:
                history = max(0, lo - model.strategy.predictor.rows_needed)
                p = model.strategy.predictor.direction_probabilities(
                    frame.iloc[history:hi], reference=inputs.reference
                )
                self.p_ml[lo:hi] = p[lo - history :]

    def _model(self, order: PineOrder) -> tuple[int, WindowModels]:
        k = int(self.starts.searchsorted(order.at, side="right")) - 1
        return k, self.models[k]

    def baseline_opinion(self, order: PineOrder) -> tuple[ServedSignal | None, dict[str, Any] | None]:
        k, model = self._model(order)
        s = order.signal_bar
        p = (
            self.p_baseline[s]
            if self.window_of[s] == k
            else float(model.baseline.predict_up(self.matrix[s : s + 1])[0])
        )
        if not np.isfinite(p):
            return None, {"error": "baseline: features not ready at this bar"}
        close = float(self.frame["close"].iat[s])
        # The same p -> decision mapping as the full strategy's: its blend with neutral sentiment
        # (what hybrid mode scores), so the two arms differ by their models alone.
        combined = _BLEND.ml_weight * float(p) + _BLEND.sentiment_weight * 0.5
        call = BaselineCall(ml_probability=float(p), combined_probability=combined,
                            confidence=abs(2 * float(p) - 1), entry_price=close)  # fmt: skip
        version = f"baseline-window-{model.window.number}"
        return ServedSignal(signal=call), {"direction_probability": float(p), "model_version": version}

    def ml_opinion(self, order: PineOrder, symbol: str) -> tuple[ServedSignal | None, dict[str, Any] | None]:
        """The full strategy's signal on the bars closed before the order; one model run per
        (window, bar): an exit and the entry that follows it on one bar read the same bars."""
        k, model = self._model(order)
        key = (k, order.signal_bar)
        if key not in self._signals:
            self._signals[key] = self._ml_opinion(model, order.signal_bar, symbol)
        return self._signals[key]

    def _ml_opinion(
        self, model: WindowModels, s: int, symbol: str
    ) -> tuple[ServedSignal | None, dict[str, Any] | None]:
        assert model.strategy is not None
        closed_at = self.frame.index[s].timestamp() + self.step
        span, start = self.inputs.span, self.inputs.start
        assert span is not None and s - start >= LOOKBACK
        signal = model.strategy.generate_signal(
            self.frame.iloc[: s + 1], symbol, now=closed_at, features=span.matrix[: s - start + 1],
            reference=self.inputs.reference,
        )  # fmt: skip
        version = f"ml-window-{model.window.number}"
        served = ServedSignal(signal=signal)
        return served, {"direction_probability": served.direction_probability, "model_version": version,
                        "quality_grade": signal.quality_grade}  # fmt: skip

    def pooled(self, which: str, horizon: int) -> dict[str, Any] | None:
        p = self.p_baseline if which == "baseline" else self.p_ml
        rows = (self.window_of >= 0) & self.valid & np.isfinite(p)
        if rows.sum() < 50:
            return None
        y = self.direction[rows].astype(float)
        return prediction_metrics(y, p[rows], self.base_rate[rows], horizon=horizon)

    def window_auc(self, which: str, k: int) -> float | None:
        p = self.p_baseline if which == "baseline" else self.p_ml
        rows = (self.window_of == k) & self.valid & np.isfinite(p)
        return rank_auc(self.direction[rows], p[rows]) if rows.any() else None


def _summary(
    config: BacktestConfig, settings: Settings, frame: pd.DataFrame, windows: list[Window],
    models: list[WindowModels], orders: list[PineOrder], results: dict[str, ArmResult],
    curves: dict[str, np.ndarray], predictions: _Predictions, *, first: int, last: int, step: int,
) -> dict[str, Any]:  # fmt: skip
    start_equity = settings.paper.starting_balance
    labels = {"buy_and_hold": "Buy and hold", **{name: r.arm.label for name, r in results.items()}}
    trading: dict[str, Any] = {}
    carlo: dict[str, Any] = {}
    bh = curves["buy_and_hold"]
    bh_fee = start_equity * config.fees / (1 + config.fees)
    trading["buy_and_hold"] = trading_metrics(
        bh, np.ones(len(bh)), [], start_equity=start_equity, fees=bh_fee, bar_seconds=step
    ).to_dict() | {"trades": 1}
    for name, result in results.items():
        trading[name] = trading_metrics(
            result.equity, result.position, result.fills, start_equity=start_equity, fees=result.fees,
            bar_seconds=step,
        ).to_dict()  # fmt: skip
        _, returns = trade_returns(result.fills, start_equity)
        mc = monte_carlo(returns, start_equity, simulations=config.monte_carlo_runs)
        carlo[name] = mc.to_dict() if mc is not None else None
    prediction = {"baseline": predictions.pooled("baseline", config.horizon)}
    if "ml" in results:
        prediction["ml"] = predictions.pooled("ml", config.horizon)
    per_window = []
    for k, (window, model) in enumerate(zip(windows, models, strict=True)):
        lo = int(frame.index.searchsorted(window.test_start)) - first
        hi = int(frame.index.searchsorted(window.test_end)) - first
        alerts = sum(1 for o in orders if window.test_start <= o.at < window.test_end)
        row: dict[str, Any] = {**window.to_dict(), "train_rows": model.train_rows,
                               "train_seconds": round(model.seconds, 2), "alerts": alerts,
                               "served": model.served, "chose": model.chose}  # fmt: skip
        for name, curve in curves.items():
            before = curve[lo - 1] if lo > 0 else start_equity
            row[f"return_{name}"] = float(curve[hi - 1] / before - 1) if hi > lo else 0.0
        row["auc_baseline"] = predictions.window_auc("baseline", k)
        if "ml" in results:
            row["auc_ml"] = predictions.window_auc("ml", k)
        per_window.append(row)
    return {
        "symbol": config.symbol, "timeframe": config.timeframe, "mode": config.mode,
        "period": [frame.index[first].isoformat(), frame.index[last - 1].isoformat()],
        "bars": last - first, "horizon": config.horizon, "embargo_bars": config.embargo,
        "train_window_days": config.train_window / pd.Timedelta(days=1),
        "test_window_days": config.test_window / pd.Timedelta(days=1),
        "fees": config.fees, "slippage_bps": config.slippage_bps, "starting_equity": start_equity,
        "choose_every_windows": config.schedule,
        "lstm": bool(config.models() and config.models().use_lstm),  # type: ignore[union-attr]
        "arms": labels, "alerts": len(orders), "trading": trading, "monte_carlo": carlo,
        "prediction": prediction, "windows": per_window,
        "decisions": {name: _count(r) for name, r in results.items()},
        "feature_importance": _importances(models),
        "limitations": [
            "The engine's clock is the replayed bar's time: the daily loss limit, the cooldown and the "
            "drawdown snapshots act on simulated days and seconds, as they would live.",
            "Entries fill at the next bar's open, stops and targets at their level (or the open when a bar "
            "gapped through); a bar that crosses both the stop and the target counts the stop.",
        ],
    }  # fmt: skip


def _count(result: ArmResult) -> dict[str, int]:
    """Decisions by status, and refusals by the risk rule that made them (``risk:drawdown``)."""
    counts: dict[str, int] = {}
    for decision in result.decisions:
        keys = [decision["status"]]
        if decision["status"] == "rejected":
            keys += [f"risk:{code}" for code in decision.get("risk", {}).get("codes", [])]
        for key in keys:
            counts[key] = counts.get(key, 0) + 1
    return counts


def _importances(models: list[WindowModels]) -> dict[str, dict[str, float]]:
    """Mean importance over windows: the baseline's every feature, the full model's top 15."""
    baseline: dict[str, float] = {}
    full: dict[str, float] = {}
    for model in models:
        for name, weight in model.baseline.importances().items():
            baseline[name] = baseline.get(name, 0.0) + weight / len(models)
        for name, weight in model.strategy_importances:
            full[name] = full.get(name, 0.0) + weight / len(models)
    ranked = dict(sorted(full.items(), key=lambda t: -t[1])[:15])
    return {"baseline": dict(sorted(baseline.items(), key=lambda t: -t[1])), "ml": ranked}
