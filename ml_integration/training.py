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
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from common.checks import refuse_unknown_keys
from ml_integration.candles import read_candle_file, timeframe_seconds, validate_candles
from ml_integration.ensemble import EnsembleConfig, EnsemblePricePrediction
from ml_integration.exceptions import CandleDataError, TrainingCancelled
from ml_integration.prediction import MLPricePrediction, ModelConfig, make_forest
from ml_integration.store import save_version
from ml_integration.strategy import MLTradingStrategy, StrategyConfig
from ml_integration.synthetic import synthetic_candles
from ml_integration.tuning import SPACES, Factory, TuningResult, tune

__all__ = [
    "Trained",
    "TrainingConfig",
    "TrainingPipeline",
    "TrainingResult",
    "create_ml_training_pipeline",
    "create_training_config",
    "forest_factory",
    "run_batch_training",
    "store_synthetic_history",
    "train_on_candles",
    "tune_forest",
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
    #: The last close of the synthetic history given to the candle store (``--synthetic-price``);
    #: None keeps the level a stored synthetic history already has, else the generator's own.
    synthetic_price: float | None = None
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    #: Tune the direction forest before training ("grid", "random" or "optuna"; None: do not).
    tuning_method: str | None = None
    n_trials: int = 20
    #: Search again even when a cached result for the same search exists.
    retune: bool = False
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
    refuse_unknown_keys("training options", values, TrainingConfig, exclude={"symbol"})
    strategy = values.pop("strategy", {})
    model = values.pop("model", {})
    ensemble = values.pop("ensemble", None)
    if isinstance(ensemble, dict):
        ensemble = EnsembleConfig.from_mapping(ensemble)
    strategy_cfg = strategy if isinstance(strategy, StrategyConfig) else StrategyConfig.from_mapping(strategy)
    model_cfg = model if isinstance(model, ModelConfig) else ModelConfig.from_dict(model)
    config = TrainingConfig(
        symbol=symbol, strategy=strategy_cfg, model=model_cfg, ensemble=ensemble, **values
    )
    timeframe_seconds(config.timeframe)  # raises a clear error for a bad timeframe
    if config.days <= 0:
        raise ValueError(f"days must be > 0, got {config.days}")
    if config.tuning_method not in (None, "grid", "random", "optuna"):
        raise ValueError(f"tuning_method must be grid, random or optuna, got {config.tuning_method!r}")
    if config.n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {config.n_trials}")
    return config


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
        if self.storage is not None:
            store_synthetic_history(
                self.storage, config.symbol, config.timeframe, bars=bars, seed=config.seed,
                price=config.synthetic_price,
            )  # fmt: skip

    @property
    def tuning_dir(self) -> Path:
        """Where tuning results (JSON) and Optuna studies (SQLite) are kept."""
        return self.model_dir / "tuning_results"

    def run(
        self,
        config: TrainingConfig,
        *,
        job_id: int | None = None,
        on_stage: Callable[[str, float], None] | None = None,
        on_saved: Callable[[TrainingResult], None] | None = None,
    ) -> TrainingResult:
        """Train one symbol; the job row is marked failed (with the error) if anything raises.

        ``job_id`` names a row queued beforehand (the operator API's jobs) instead of a new
        one; ``on_stage(stage, fraction done)`` hears each stage and may raise
        :class:`TrainingCancelled`, which ends the run with the job marked cancelled.
        ``on_saved(result)`` runs once the version is saved and recorded, before its job row
        says done (so whoever sees the job done also sees what ``on_saved`` did: its role)."""
        job = job_id if job_id is not None else self._start_job(config)
        try:
            return self._run(config, job, on_stage, on_saved)
        except TrainingCancelled:
            self._finish_job(job, status="cancelled", error="cancelled by the operator")
            raise
        except BaseException as exc:
            self._finish_job(job, error=f"{type(exc).__name__}: {exc}")
            raise

    def run_many(
        self, configs: Sequence[TrainingConfig], *, cluster: str | None = None, n_jobs: int | None = None
    ) -> list[TrainingResult]:
        """Train several configurations through joblib: locally (one at a time unless
        ``n_jobs``), or on the Dask scheduler at ``cluster`` (every worker).

        Candles are loaded, tuning searches run (their trials spread over the same backend,
        their results cached here) and models saved and recorded in this process; only the
        trials and the fits run on the workers (:func:`train_on_candles`: candles in, trained
        strategy out), so a worker needs neither the database, the network nor the models
        directory. A symbol that fails to train is recorded as failed, the others are still
        saved, and then the first error is raised."""
        from joblib import Parallel, delayed

        from ml_integration.tuning import parallel_backend

        jobs = [self._start_job(config) for config in configs]
        try:
            loaded = [self.load_candles(config) for config in configs]
            with parallel_backend(cluster):
                frames = [frame for frame, _ in loaded]
                tunings = [self._tune(frame, config) for frame, config in zip(frames, configs, strict=True)]
                outcomes = Parallel(n_jobs=n_jobs)(
                    delayed(_train_or_error)(frame, config, tuning)
                    for frame, config, tuning in zip(frames, configs, tunings, strict=True)
                )
        except BaseException as exc:
            for job in jobs:
                self._finish_job(job, error=f"{type(exc).__name__}: {exc}")
            raise
        return self._save_all(configs, jobs, loaded, outcomes)

    def _save_all(
        self,
        configs: Sequence[TrainingConfig],
        jobs: Sequence[int | None],
        loaded: Sequence[tuple[pd.DataFrame, str]],
        outcomes: Sequence[Trained | BaseException],
    ) -> list[TrainingResult]:
        results, errors = [], []
        for config, job, (frame, source), outcome in zip(configs, jobs, loaded, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                self._finish_job(job, error=f"{type(outcome).__name__}: {outcome}")
                errors.append(outcome)
                continue
            results.append(self._save(config, job, outcome, frame, source))
        if errors:
            raise errors[0]
        return results

    def _start_job(self, config: TrainingConfig) -> int | None:
        if self.storage is None:
            return None
        from storage.models import start_training_job

        return start_training_job(
            self.storage, symbol=config.symbol, timeframe=config.timeframe, params=config.to_dict()
        )

    def _finish_job(self, job: int | None, **outcome: Any) -> None:
        if self.storage is not None and job is not None:
            from storage.models import finish_training_job

            finish_training_job(self.storage, job, **outcome)

    def _run(
        self,
        config: TrainingConfig,
        job: int | None,
        on_stage: Callable[[str, float], None] | None = None,
        on_saved: Callable[[TrainingResult], None] | None = None,
    ) -> TrainingResult:
        if config.model.use_lstm:
            from ml_integration.lstm import require_keras

            require_keras()  # before minutes of other work: a serve-only install is told at once
        bar = _Progress(self.progress, f"train {config.symbol} {config.timeframe}", on_stage)
        try:
            bar.stage("load candles")
            frame, source = self.load_candles(config)
            if config.tuning_method is not None:
                bar.stage("tuning")
            trained = train_on_candles(frame, config, self._tune(frame, config), on_stage=bar.stage)
            bar.stage("save")
            result = self._save(config, job, trained, frame, source, on_saved)
            bar.stage("done")
        finally:
            bar.close()
        return result

    def _tune(self, frame: pd.DataFrame, config: TrainingConfig) -> TuningResult | None:
        """The forest search ``config`` asks for (None without one), cached in :attr:`tuning_dir`."""
        if config.tuning_method is None:
            return None
        studies = None if self.storage is None else self.storage.rdb_url()
        return tune_forest(frame, config, self.tuning_dir, study_storage=studies)

    def _save(
        self,
        config: TrainingConfig,
        job: int | None,
        trained: Trained,
        frame: pd.DataFrame,
        source: str,
        on_saved: Callable[[TrainingResult], None] | None = None,
    ) -> TrainingResult:
        """Save the version, record it, run ``on_saved`` and close its job row."""
        started = time.perf_counter()
        path = save_version(trained.strategy, self.model_dir, config.symbol, config.timeframe)
        result = TrainingResult(
            symbol=config.symbol,
            timeframe=config.timeframe,
            version=path.name,
            path=str(path),
            synthetic=config.synthetic,
            n_candles=len(frame),
            data_source=source,
            wall_time_s=trained.seconds + time.perf_counter() - started,
            report=trained.report,
        )
        if self.storage is not None and job is not None:
            from storage.models import record_model

            record_model(
                self.storage,
                symbol=config.symbol,
                timeframe=config.timeframe,
                version=result.version,
                path=result.path,
                synthetic=result.synthetic,
                metrics=result.report.get("holdout", {}),
            )
            if on_saved is not None:
                on_saved(result)
            self._finish_job(job, model_version=result.version)
        return result


def store_synthetic_history(
    storage: Any, symbol: str, timeframe: str, *, bars: int, seed: int, price: float | None = None
) -> bool:
    """Give the candle store a synthetic history up to now for this market, so a model can serve
    with no network, whatever its timeframe; True when it was written.

    Never written into a market with real candles (any of its timeframes): a market is wholly
    synthetic or wholly real. Its last close is ``price``; without one, the level the market's
    stored synthetic history already has (extending it keeps its anchor), else the generator's."""
    from ml_integration.candles import frame_to_rows
    from ml_integration.synthetic import synthetic_history
    from storage.candles import SYNTHETIC, has_real_candles, newest_synthetic_close, upsert_candles

    if has_real_candles(storage, symbol):
        return False
    if price is None:
        price = newest_synthetic_close(storage, symbol, timeframe)
    frame = synthetic_history(bars, seed=seed, timeframe=timeframe, now_s=time.time(), end_price=price)
    upsert_candles(storage, symbol, timeframe, frame_to_rows(frame), SYNTHETIC)
    return True


@dataclass(frozen=True)
class Trained:
    """A fitted strategy, its report, and the seconds its tuning and fit took."""

    strategy: MLTradingStrategy
    report: dict[str, Any]
    seconds: float


def train_on_candles(
    frame: pd.DataFrame,
    config: TrainingConfig,
    tuning: TuningResult | None = None,
    *,
    on_stage: Callable[[str], None] | None = None,
) -> Trained:
    """Train a strategy on ``frame`` with ``tuning``'s best forest parameters (if any): no
    storage, no network, no files, so it runs the same here, in a joblib or a Dask worker."""
    started = time.perf_counter()
    model = config.model if tuning is None else replace(config.model, **tuning.best_params)
    strategy = MLTradingStrategy(asdict(config.strategy), model_config=model)
    if config.ensemble is not None:
        strategy.predictor = EnsemblePricePrediction(model, ensemble=config.ensemble)
    report = strategy.train_strategy(
        frame, synthetic=config.synthetic, symbol=config.symbol, timeframe=config.timeframe, on_stage=on_stage
    )
    if tuning is not None:
        report["tuning"] = {k: v for k, v in tuning.to_dict().items() if k != "trials"}
    return Trained(strategy=strategy, report=report, seconds=time.perf_counter() - started)


def _train_or_error(
    frame: pd.DataFrame, config: TrainingConfig, tuning: TuningResult | None
) -> Trained | BaseException:
    """:func:`train_on_candles` with its error returned, so one failed symbol of a batch does
    not hide the others' models."""
    try:
        return train_on_candles(frame, config, tuning)
    except Exception as exc:  # returned to the caller, which records it on the job and raises it
        return exc


#: What tuning searches for the served forest: :class:`ModelConfig` fields.
FOREST_FIELDS = ("n_estimators", "max_depth", "min_samples_leaf")


def _forest_with(model: ModelConfig, params: dict[str, Any]) -> Any:
    return make_forest(replace(model, **params))


def forest_factory(model: ModelConfig) -> Factory:
    """Tuning's factory for the served forest: ``model`` with the searched fields replaced
    (a partial of a module function, so it pickles to joblib and Dask workers)."""
    return partial(_forest_with, model)


def tune_forest(
    frame: pd.DataFrame, config: TrainingConfig, tuning_dir: str | Path, *, study_storage: str | None = None
) -> TuningResult:
    """Tune the served direction forest on the *training* rows of the split train_models will
    make (never on its calibration or test rows, so the hold-out report stays out of sample),
    with purged folds whose gap is the label horizon. ``study_storage`` keeps an Optuna study in
    that database (the shared PostgreSQL store) instead of a file in ``tuning_dir``."""
    horizon = config.strategy.target_periods
    design = MLPricePrediction(config.model).design(frame, horizon)
    train_rows = design.rows[design.split.train]
    x, y = design.matrix[train_rows], design.labels.direction[train_rows]
    space = {k: v for k, v in SPACES["random_forest"].items() if k in FOREST_FIELDS}
    return tune(
        "random_forest",
        x,
        y,
        method=config.tuning_method,  # type: ignore[arg-type]  # validated by create_training_config
        factory=forest_factory(config.model),
        space=space,
        n_trials=config.n_trials,
        gap=horizon,
        seed=config.model.random_state,
        cache_dir=tuning_dir,
        retune=config.retune,
        storage=study_storage,
    )


class _Progress:
    """A tqdm bar over the pipeline's stages (silent when disabled)."""

    STAGES = (
        "load candles",
        "tuning",
        "features",
        "tournament",
        "random forest",
        "gradient boosting",
        "lstm",
        "evaluation",
        "final fit",
        "volatility",
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
    cluster: str | None = None,
    n_jobs: int | None = None,
) -> list[TrainingResult]:
    """Train every symbol through joblib: locally one at a time by default (each fit already
    uses both cores), or on the Dask scheduler at ``cluster`` (``TVGW_DASK_SCHEDULER`` for the
    command), one symbol per worker. Same seeds, same models, wherever they ran."""
    runner = pipeline or create_ml_training_pipeline()
    configs = [
        create_training_config(symbol, {**(overrides or {}), "timeframe": timeframe, "days": days})
        for symbol in symbols
    ]
    return runner.run_many(configs, cluster=cluster, n_jobs=n_jobs)
