"""The training pipeline: candles from a file, the candle store (filled through ccxt) or the
seeded generator → a trained :class:`MLTradingStrategy` saved as a new model version.

When a :class:`storage.database.Storage` is given, each run is recorded in
``ml_training_jobs`` (running → done/failed with the error) and each saved version in
``ml_models`` (with its hold-out metrics and whether it was trained on synthetic data).

``--sentiment`` / ``use_sentiment`` does not feed sentiment into the fit (there is no
sentiment history to align with past candles); it switches the saved strategy's combination
on, so that at serving time the gateway's ``SentimentAnalysis`` contributes its share.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pandas as pd

from ml_integration.candles import read_candle_file, timeframe_seconds, validate_candles
from ml_integration.ensemble import EnsembleConfig, EnsemblePricePrediction
from ml_integration.exceptions import CandleDataError, TrainingCancelled
from ml_integration.lstm import LSTMConfig
from ml_integration.prediction import ModelConfig
from ml_integration.store import save_version
from ml_integration.strategy import MLTradingStrategy, StrategyConfig
from ml_integration.synthetic import synthetic_candles

__all__ = [
    "TrainingConfig",
    "TrainingPipeline",
    "TrainingResult",
    "create_ml_training_pipeline",
    "create_training_config",
    "run_batch_training",
]


@dataclass(frozen=True)
class TrainingConfig:
    """Everything one training run needs; build it with :func:`create_training_config`."""

    symbol: str
    timeframe: str = "1h"
    days: float = 365.0
    exchange: str = "binance"
    data_file: str | None = None
    synthetic: bool = False
    seed: int = 0
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    #: Train a model-zoo ensemble too and serve its direction probability (``--ensemble``).
    ensemble: EnsembleConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def create_training_config(symbol: str, overrides: dict[str, Any] | None = None) -> TrainingConfig:
    """A validated :class:`TrainingConfig`. ``overrides`` may set any top-level field, and
    ``strategy`` / ``model`` / ``model.lstm`` as nested dicts of their fields."""
    if not symbol or "/" not in symbol:
        raise ValueError(f"symbol must look like 'BTC/USDT', got {symbol!r}")
    values = dict(overrides or {})
    known = {f.name for f in fields(TrainingConfig)} - {"symbol"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown training options {unknown}; known: {sorted(known)}")
    strategy = values.pop("strategy", {})
    model = values.pop("model", {})
    ensemble = values.pop("ensemble", None)
    if isinstance(ensemble, dict):
        ensemble = EnsembleConfig.from_mapping(ensemble)
    strategy_cfg = strategy if isinstance(strategy, StrategyConfig) else StrategyConfig.from_mapping(strategy)
    model_cfg = model if isinstance(model, ModelConfig) else _model_config(model)
    config = TrainingConfig(
        symbol=symbol, strategy=strategy_cfg, model=model_cfg, ensemble=ensemble, **values
    )
    timeframe_seconds(config.timeframe)  # raises a clear error for a bad timeframe
    if config.days <= 0:
        raise ValueError(f"days must be > 0, got {config.days}")
    return config


def _model_config(values: dict[str, Any]) -> ModelConfig:
    values = dict(values)
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown model options {unknown}; known: {sorted(known)}")
    lstm = values.pop("lstm", {})
    lstm_cfg = lstm if isinstance(lstm, LSTMConfig) else LSTMConfig(**lstm)
    return replace(ModelConfig(), lstm=lstm_cfg, **values)


@dataclass(frozen=True)
class TrainingResult:
    """What one run produced."""

    symbol: str
    timeframe: str
    version: str
    path: str
    synthetic: bool
    n_candles: int
    data_source: str
    wall_time_s: float
    report: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TrainingPipeline:
    """Loads candles, trains, saves a version, and records the run in SQLite when it can."""

    def __init__(
        self,
        *,
        storage: Any | None = None,
        model_dir: str | Path = "models",
        exchange_factory: Callable[[str], Any] | None = None,
        progress: bool = False,
    ):
        self.storage = storage
        self.model_dir = Path(model_dir)
        self.exchange_factory = exchange_factory
        self.progress = progress

    def load_candles(self, config: TrainingConfig) -> tuple[pd.DataFrame, str]:
        """The training candles and where they came from (``file:…``, ``synthetic``, ``store``)."""
        bars = int(config.days * 86_400 / timeframe_seconds(config.timeframe))
        if config.synthetic:
            self._store_synthetic_history(config, bars)
            return synthetic_candles(bars, seed=config.seed, timeframe=config.timeframe), "synthetic"
        if config.data_file:
            frame = read_candle_file(config.data_file)
            return frame.iloc[-bars:], f"file:{config.data_file}"
        if self.storage is None:
            raise ValueError("training from the candle store needs a storage (or give data_file / synthetic)")
        from storage.candles import load_candles

        if self.exchange_factory is not None:
            from ml_integration.market_data import fill_candle_store

            fill_candle_store(
                self.storage,
                self.exchange_factory(config.exchange),
                config.symbol,
                config.timeframe,
                days=config.days,
            )
        since = int((time.time() - config.days * 86_400) * 1000)
        frame = load_candles(self.storage, config.symbol, config.timeframe, since_ms=since)
        if frame.empty:
            raise CandleDataError(
                f"the candle store has no {config.symbol} {config.timeframe} candles for the last "
                f"{config.days:g} days: run `tvgw data fetch` or `tvgw data import FILE` first"
            )
        return validate_candles(frame), "store"

    def _store_synthetic_history(self, config: TrainingConfig, bars: int) -> None:
        """Give the candle store a synthetic history up to now for this market, so the model
        can serve with no network, whatever its timeframe. Never written over real candles:
        only a store that is empty for the market, or holds synthetic candles alone, is filled."""
        if self.storage is None:
            return
        from ml_integration.candles import frame_to_rows
        from ml_integration.synthetic import synthetic_history
        from storage.candles import candle_sources, upsert_candles

        if candle_sources(self.storage, config.symbol, config.timeframe) - {"synthetic"}:
            return
        frame = synthetic_history(bars, seed=config.seed, timeframe=config.timeframe, now_s=time.time())
        upsert_candles(self.storage, config.symbol, config.timeframe, frame_to_rows(frame), "synthetic")

    def run(
        self,
        config: TrainingConfig,
        *,
        job_id: int | None = None,
        on_stage: Callable[[str, float], None] | None = None,
    ) -> TrainingResult:
        """Train one symbol; the job row is marked failed (with the error) if anything raises.

        ``job_id`` names a row queued beforehand (the operator API's jobs) instead of a new
        one; ``on_stage(stage, fraction done)`` hears each stage and may raise
        :class:`TrainingCancelled`, which ends the run with the job marked cancelled."""
        from storage.models import finish_training_job, record_model, start_training_job

        job = job_id
        if self.storage is not None and job is None:
            job = start_training_job(
                self.storage, symbol=config.symbol, timeframe=config.timeframe, params=config.to_dict()
            )
        try:
            result = self._run(config, on_stage)
        except TrainingCancelled:
            if self.storage is not None and job is not None:
                finish_training_job(self.storage, job, status="cancelled", error="cancelled by the operator")
            raise
        except BaseException as exc:
            if self.storage is not None and job is not None:
                finish_training_job(self.storage, job, error=f"{type(exc).__name__}: {exc}")
            raise
        if self.storage is not None and job is not None:
            record_model(
                self.storage,
                symbol=config.symbol,
                timeframe=config.timeframe,
                version=result.version,
                path=result.path,
                synthetic=result.synthetic,
                metrics=result.report.get("holdout", {}),
            )
            finish_training_job(self.storage, job, model_version=result.version)
        return result

    def _run(
        self, config: TrainingConfig, on_stage: Callable[[str, float], None] | None = None
    ) -> TrainingResult:
        started = time.perf_counter()
        if config.model.use_lstm:
            from ml_integration.lstm import require_keras

            require_keras()  # before minutes of other work: a serve-only install is told at once
        bar = _Progress(self.progress, f"train {config.symbol} {config.timeframe}", on_stage)
        try:
            bar.stage("load candles")
            frame, source = self.load_candles(config)
            strategy = MLTradingStrategy(asdict(config.strategy), model_config=config.model)
            if config.ensemble is not None:
                strategy.predictor = EnsemblePricePrediction(config.model, ensemble=config.ensemble)
            report = strategy.train_strategy(
                frame,
                synthetic=config.synthetic,
                symbol=config.symbol,
                timeframe=config.timeframe,
                on_stage=bar.stage,
            )
            bar.stage("save")
            path = save_version(strategy, self.model_dir, config.symbol, config.timeframe)
            bar.stage("done")
        finally:
            bar.close()
        return TrainingResult(
            symbol=config.symbol,
            timeframe=config.timeframe,
            version=path.name,
            path=str(path),
            synthetic=config.synthetic,
            n_candles=len(frame),
            data_source=source,
            wall_time_s=time.perf_counter() - started,
            report=report,
        )


class _Progress:
    """A tqdm bar over the pipeline's stages (silent when disabled)."""

    STAGES = (
        "load candles",
        "features",
        "random forest",
        "gradient boosting",
        "lstm",
        "evaluation",
        "save",
        "done",
    )

    def __init__(self, enabled: bool, label: str, listener: Callable[[str, float], None] | None = None):
        self._bar = None
        self._listener = listener
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=len(self.STAGES) - 1, desc=label, unit="stage")

    def stage(self, name: str) -> None:
        if self._listener is not None:
            done = self.STAGES.index(name) / (len(self.STAGES) - 1) if name in self.STAGES else 0.0
            self._listener(name, done)
        if self._bar is None:
            return
        target = self.STAGES.index(name) if name in self.STAGES else self._bar.n
        self._bar.update(max(0, target - self._bar.n))
        self._bar.set_postfix_str(name)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def create_ml_training_pipeline(
    *,
    storage: Any | None = None,
    model_dir: str | Path = "models",
    exchange_factory: Callable[[str], Any] | None = None,
    progress: bool = False,
) -> TrainingPipeline:
    """A :class:`TrainingPipeline`. ``exchange_factory(exchange_id)`` (for example
    :func:`market_data.create_exchange`) lets it top up the candle store before training."""
    return TrainingPipeline(
        storage=storage, model_dir=model_dir, exchange_factory=exchange_factory, progress=progress
    )


def run_batch_training(
    symbols: Sequence[str],
    timeframe: str = "1h",
    days: float = 365.0,
    *,
    pipeline: TrainingPipeline | None = None,
    overrides: dict[str, Any] | None = None,
) -> list[TrainingResult]:
    """Train each symbol in turn (one at a time: each fit already uses both cores)."""
    runner = pipeline or create_ml_training_pipeline()
    results = []
    for symbol in symbols:
        config = create_training_config(symbol, {**(overrides or {}), "timeframe": timeframe, "days": days})
        results.append(runner.run(config))
    return results
