"""ML serving: the one signal the ML strategy gives for a market now, as the webhook (and the
operator API) asks for it. No Flask and no engine here: the caller resolves the symbol and
timeframe; the engine reads the :class:`ServedSignal` through its own small port.

Per worker, for each (symbol, timeframe): the newest trained strategy (reloaded when the
model store's ``latest`` pointer changes, checked at most every few seconds) and a window of
recent candles kept in memory and topped up from the candle store. The bar an alert carries
goes into the candle store with the alert, so the store stays current from TradingView itself.

Nothing here may fail an alert: no model, too little history, a stale store, a slow or broken
model all give ``ml_analysis = {"error": ...}`` and the strategy's fallback rule decides.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from common.timeframes import seconds
from ml_integration.technical import TECHNICAL_MIN_ROWS, technical_score
from storage import Connection, Storage
from storage import candles as candle_store
from storage import predictions as prediction_store

if TYPE_CHECKING:  # ml_integration is imported lazily: a worker without ML never pays for it
    from ml_integration.store import StoredModel

__all__ = ["ModelsStatus", "ServedSignal", "ServingSettings", "SignalService"]

log = logging.getLogger(__name__)

#: Candles kept per market: the feature look-back, the LSTM window and some slack.
WINDOW = 320
#: A signal is a function of the model version, the candle window and the cached sentiment, so
#: alerts that arrive while those are unchanged reuse it (bounded, as quality counts data age).
SIGNAL_REUSE_S = 30.0
#: Least seconds between two incremental candle fetches for one market.
FETCH_INTERVAL_S = 30.0
#: How often (seconds) a worker looks at the model store's ``latest`` pointer.
RELOAD_CHECK_S = 5.0
#: Newest resolved predictions of a model whose accuracy may cut its Kelly, and how long
#: (seconds) one read of them is reused (outcomes resolve once per horizon, not per alert).
RECENT_OUTCOMES = 100
RECENT_ACCURACY_TTL_S = 60.0


class _RecentAccuracy:
    """The strategy's ``recent_accuracy`` reader: (right, resolved) of this model version's
    newest resolved predictions of a symbol, from the prediction log, cached briefly."""

    def __init__(self, storage: Storage, model_version: str | None):
        self.storage, self.model_version = storage, model_version
        self._cache: dict[str, tuple[float, tuple[int, int]]] = {}

    def __call__(self, symbol: str) -> tuple[int, int] | None:
        now = time.monotonic()
        hit = self._cache.get(symbol)
        if hit is None or now - hit[0] >= RECENT_ACCURACY_TTL_S:
            counts = prediction_store.recent_accuracy(
                self.storage, symbol, self.model_version, RECENT_OUTCOMES
            )
            hit = self._cache[symbol] = (now, counts)
        return hit[1]


class ServingSettings(Protocol):
    """What serving reads of the gateway's settings (composed by :mod:`settings`)."""

    @property
    def ml_enabled(self) -> bool: ...
    @property
    def ml_budget_ms(self) -> float: ...
    @property
    def model_dir(self) -> Path: ...
    @property
    def market_data_budget_ms(self) -> float: ...
    @property
    def sentiment_refresh_s(self) -> float: ...
    @property
    def sentiment_env(self) -> dict[str, str]: ...


@dataclass(frozen=True)
class ServedSignal:
    """The ML layer's one signal for an alert's market: what the answer's ``ml_analysis``
    shows and what the engine reads (its port names the fields it uses), one object for both.

    ``signal`` is the strategy's :class:`~ml_integration.strategy.TradingSignal`, or None when ML
    could not help (``error`` says why; the strategy's fallback rule decides). The candles it
    saw also give the hybrid mode's technical score, with or without a model.
    """

    signal: Any = None
    error: str | None = None
    candles: pd.DataFrame | None = None
    symbol: str | None = None
    timeframe: str | None = None
    bar: list[float] | None = None  # the alert's own bar [ms, o, h, l, c, v], stored with it
    latency_ms: float = 0.0
    reused: bool = False

    # --- the engine's port --------------------------------------------------------------------
    @property
    def direction_probability(self) -> float | None:
        """Calibrated P(up); None when there is no ML opinion (error, or a gap in the window)."""
        return None if self.signal is None else self.signal.ml_probability

    @property
    def combined_probability(self) -> float | None:
        return None if self.signal is None else self.signal.combined_probability

    @property
    def confidence(self) -> float:
        return 0.0 if self.signal is None else float(self.signal.confidence)

    @property
    def kelly_fraction(self) -> float:
        return 0.0 if self.signal is None else float(self.signal.kelly_fraction)

    @property
    def stop_loss(self) -> float | None:
        return None if self.signal is None else self.signal.stop_loss

    @property
    def take_profit(self) -> float | None:
        return None if self.signal is None else self.signal.take_profit

    @property
    def entry_price(self) -> float | None:
        return None if self.signal is None else self.signal.entry_price

    @property
    def leverage(self) -> float:
        return 1.0 if self.signal is None else float(self.signal.leverage)

    def technical_score(self, side: str) -> float | None:
        """The hybrid mode's technical score of a ``side`` entry on these candles (None with
        too few of them)."""
        if self.candles is None or len(self.candles) < TECHNICAL_MIN_ROWS:
            return None
        return technical_score(self.candles, side).score  # type: ignore[arg-type]

    # --- the answer and the record -------------------------------------------------------------
    def analysis(self) -> dict[str, Any]:
        """``ml_analysis`` as the answer and the alert row show it."""
        signal = self.signal
        if signal is None:
            return {"error": self.error or "no ML opinion"}
        probability = signal.ml_probability if signal.ml_probability is not None else 0.5
        body: dict[str, Any] = {
            "direction_probability": round(probability, 4),
            "sentiment_score": signal.sentiment_score,
            "quality_grade": signal.quality_grade,
            "quality_score": signal.quality_score,
            "recommended_position": signal.kelly_fraction,
            "action": signal.action,
            "confidence": round(signal.confidence, 4),
            "combined_probability": signal.combined_probability,
            "magnitude": signal.magnitude,
            "horizon_bars": signal.horizon,
            "stop_loss": signal.stop_loss,
            "take_profit": signal.take_profit,
            "market_call": {"signal": signal.signal_type, "leverage": signal.leverage,
                            "risk_reward": signal.risk_reward},
            "volatility_forecast": signal.volatility_forecast,
            "model_version": signal.model_version,
            "candle_time": signal.candle_time,
            "synthetic": signal.synthetic,
            "latency_ms": round(self.latency_ms, 2),
            "reused": self.reused,
            "reason": signal.reason,
        }  # fmt: skip
        if signal.synthetic:
            body["warning"] = "model trained on SYNTHETIC candles (quickstart offline): not a market view"
        return body

    def prediction_row(self) -> dict[str, Any] | None:
        """The ``ml_predictions`` row this signal is logged as (outcome tracking scores it)."""
        signal = self.signal
        if signal is None or self.symbol is None or self.timeframe is None:
            return None
        candle_ts = pd.Timestamp(signal.candle_time).timestamp()
        return {
            "symbol": self.symbol, "timeframe": self.timeframe, "model_version": signal.model_version,
            "direction_prob": signal.ml_probability if signal.ml_probability is not None else 0.5,
            "magnitude_pred": signal.magnitude, "confidence": signal.confidence,
            "horizon": signal.horizon, "candle_time": candle_ts,
            "target_time": candle_ts + signal.horizon * seconds(self.timeframe),
            "price_at_prediction": signal.entry_price, "synthetic": int(signal.synthetic),
        }  # fmt: skip

    def record(self, conn: Connection, alert_id: int | None, now: float) -> None:
        """Inside the alert's transaction: the alert's bar into the candle store, and the
        prediction row (so every enriched alert has exactly one)."""
        if self.bar is not None and self.symbol is not None and self.timeframe is not None:
            candle_store.upsert_candles(conn, self.symbol, self.timeframe, [self.bar], "alert")
        row = self.prediction_row()
        if row is not None:
            prediction_store.insert_prediction(conn, timestamp=now, alert_id=alert_id, **row)


@dataclass(frozen=True)
class ModelsStatus:
    """The model part of /healthz: the store as it is on disk, and this worker's view of it."""

    enabled: bool
    store: list[StoredModel]
    #: "SYMBOL TF" → (version this worker serves or None, its last load error or None)
    worker: dict[str, tuple[str | None, str | None]]
    problems: list[str]

    @property
    def ok(self) -> bool:
        """False when ML is on and a model in the store cannot be served (or the store is
        unreadable): the gateway still trades, on the strategies' fallback rule."""
        return not (self.enabled and self.problems)

    def worker_models(self) -> dict[str, str | None]:
        """Market ("SYMBOL TF") → the version this worker serves, or why it serves none."""
        return {market: version or error for market, (version, error) in self.worker.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "ok": self.ok,
            "models": [_stored_dict(m) for m in self.store],
            "worker": {"pid": os.getpid(), "models": self.worker_models()},
            "problems": self.problems,
        }


def _stored_dict(model: StoredModel) -> dict[str, Any]:
    body: dict[str, Any] = {"symbol": model.symbol, "timeframe": model.timeframe, "version": model.version}
    body["ok"] = model.error is None
    if model.error:
        body["error"] = model.error
    return body


@dataclass
class _Market:
    strategy: Any = None
    version: str | None = None
    checked_at: float = 0.0
    candles: pd.DataFrame | None = None
    load_error: str | None = None
    #: monotonic time of the last incremental candle fetch started for this market
    fetched_at: float = -1e9
    fetch: Any = None  # the fetch still running in the background, if any
    #: (inputs key, when, signal): the model's answer for the current newest candle.
    signal: tuple[tuple[Any, ...], float, Any] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class SignalService:
    """Serves the ML strategy's signal per market, within a time budget, from a per-worker model
    cache and candle window."""

    def __init__(
        self,
        settings: ServingSettings,
        storage: Storage,
        *,
        live_exchange: bool = False,
        market_data: Any = None,
        now: Callable[[], float] = time.time,
    ):
        self.settings = settings
        #: Wall-clock epoch seconds: how old the newest candle is and whether a newer one is due
        #: (a test passes a fixed instant; intervals between checks use the monotonic clock).
        self.now = now
        self.storage = storage
        self.live_exchange = live_exchange
        self.market_data = market_data  # a ccxt exchange for public candles, or None
        self._market_data_lock = threading.Lock()  # ccxt's sync client is not thread-safe
        self._sentiment: Any = None
        self._sentiment_symbols: set[str] = set()
        self._sentiment_lock = threading.Lock()
        #: Symbols a background sentiment pass has refreshed (see :meth:`wait_for_sentiment`).
        self._sentiment_refreshed: set[str] = set()
        self._sentiment_refreshed_cv = threading.Condition()
        #: Set when :meth:`preload` has finished (whatever it loaded).
        self.preloaded = threading.Event()
        self._markets: dict[tuple[str, str], _Market] = {}
        self._markets_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tvgw-ml")
        # Candle fetches wait on the network: their own thread, so they never delay a model run.
        self._fetch_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tvgw-candles")

    # --- the per-alert call --------------------------------------------------------------------
    def serve(self, symbol: str, timeframe: str, bar: list[float] | None = None) -> ServedSignal:
        """The model's call on ``symbol``/``timeframe`` now, with the alert's own ``bar`` (kept
        with the alert): an alert's signal, and the operator API's on-demand prediction (same
        model cache, candle window and time budget). Never raises for an ML failure."""
        served = ServedSignal(symbol=symbol, timeframe=timeframe, bar=bar)
        if not self.settings.ml_enabled:
            return replace(served, error="ML is disabled (TVGW_ML_ENABLED=false)")
        market = self._market(symbol, timeframe)
        self._top_up(market, symbol, timeframe)
        served = replace(served, candles=self._candles(market, symbol, timeframe, bar))
        model, error = self._model(market, symbol, timeframe)
        if model is None:
            return replace(served, error=error)
        if model.synthetic and self.live_exchange:
            return replace(served, error="the loaded model was trained on synthetic candles; it never "
                           "drives a live exchange. Train on real data: tvgw train")  # fmt: skip
        candles = served.candles
        assert candles is not None
        stale = self._staleness(candles, timeframe)
        if stale:
            return replace(served, error=stale)
        started = time.perf_counter()
        last = candles.iloc[-1].tolist()
        key = (market.version, candles.index[-1], *last, *self._sentiment_key(model, symbol))
        cached = market.signal
        if cached is not None and cached[0] == key and time.monotonic() - cached[1] < SIGNAL_REUSE_S:
            elapsed_ms = (time.perf_counter() - started) * 1000
            return replace(served, signal=cached[2], latency_ms=elapsed_ms, reused=True)
        budget = self.settings.ml_budget_ms / 1000
        future = self._pool.submit(model.generate_signal, candles, symbol)
        try:
            signal = future.result(timeout=budget)
        except FutureTimeout:
            return replace(served, error=f"ML took longer than its {budget * 1000:.0f} ms budget "
                           "(TVGW_ML_BUDGET_MS); the strategy's fallback rule decided")  # fmt: skip
        except Exception as exc:
            log.exception("ML failed for %s %s", symbol, timeframe)
            return replace(served, error=f"ML failed: {type(exc).__name__}: {exc}")
        elapsed_ms = (time.perf_counter() - started) * 1000
        market.signal = (key, time.monotonic(), signal)
        return replace(served, signal=signal, latency_ms=elapsed_ms)

    @staticmethod
    def _sentiment_key(model: Any, symbol: str) -> tuple[Any, ...]:
        """What the cached sentiment says now (a local cache read), so a refresh invalidates."""
        if model.sentiment is None or not model.config.use_sentiment:
            return ()
        cached = model.sentiment.get_combined_sentiment(symbol, allow_fetch=False)
        return (cached.get("combined_sentiment"), cached.get("fetched_at"))

    def store_bar(self, symbol: str, timeframe: str, bar: list[float]) -> None:
        """Keep an alert's bar in the candle store even when the alert itself is refused for
        want of a market price: the bars alerts carry are one way to give the gateway one."""
        candle_store.upsert_candles(self.storage, symbol, timeframe, [bar], "alert")

    # --- models --------------------------------------------------------------------------------
    def _market(self, symbol: str, timeframe: str) -> _Market:
        with self._markets_lock:
            return self._markets.setdefault((symbol, timeframe), _Market())

    def _model(self, market: _Market, symbol: str, timeframe: str) -> tuple[Any, str]:
        now = time.monotonic()
        due = now - market.checked_at >= RELOAD_CHECK_S
        if due or (market.strategy is None and market.load_error is None):
            with market.lock:
                if now - market.checked_at >= RELOAD_CHECK_S or market.checked_at == 0.0:
                    market.checked_at = now
                    self._reload(market, symbol, timeframe)
        if market.strategy is None:
            return None, market.load_error or f"no model for {symbol} {timeframe}"
        return market.strategy, ""

    def _reload(self, market: _Market, symbol: str, timeframe: str) -> None:
        from ml_integration import MLError, latest_version, load_latest_strategy

        model_dir = Path(self.settings.model_dir)
        try:
            version = latest_version(model_dir, symbol, timeframe)
        except OSError as exc:
            market.load_error = f"cannot read the model store {model_dir}: {exc}"
            return
        if version is None:
            market.strategy, market.version = None, None
            market.load_error = (
                f"no trained model for {symbol} {timeframe} in {model_dir}: "
                f"run `tvgw train --symbol {symbol} --timeframe {timeframe}`"
            )
            return
        if version == market.version and market.strategy is not None:
            return
        try:
            strategy = load_latest_strategy(model_dir, symbol, timeframe)
        except (MLError, OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            # BadZipFile: an artifact replaced between its hash check and its read.
            market.load_error = f"model {symbol} {timeframe} {version} failed to load: {exc}"
            log.error("%s", market.load_error)
            return
        if strategy.config.use_sentiment:
            strategy.sentiment = self._sentiment_for(symbol)
        strategy.recent_accuracy = _RecentAccuracy(self.storage, strategy.model_version)
        market.strategy, market.version, market.load_error = strategy, version, None
        log.info("loaded model %s %s version %s", symbol, timeframe, version)

    def preload(self) -> list[str]:
        """Load and warm every model in the store now, at worker start, so that no alert pays
        for loading one; returns "SYMBOL TF version" per model. Failures are logged, not fatal:
        the alert path reports them as ml_analysis.error and /healthz as ``degraded``."""
        try:
            return self._preload()
        finally:
            self.preloaded.set()

    def _preload(self) -> list[str]:
        from ml_integration.store import stored_models

        try:
            store = stored_models(self.settings.model_dir)
        except OSError as exc:
            log.error("cannot read the model store %s: %s", self.settings.model_dir, exc)
            return []
        loaded = []
        for entry in store:
            if entry.symbol is None or entry.timeframe is None:
                log.warning("model store entry unreadable: %s", entry.error)
                continue
            symbol, timeframe = entry.symbol, entry.timeframe
            model, error = self._model(self._market(symbol, timeframe), symbol, timeframe)
            line = f"{entry.market} {entry.version}" if model is not None else f"{entry.market}: {error}"
            loaded.append(line)
        return loaded

    def _sentiment_for(self, symbol: str) -> Any:
        """The shared SentimentAnalysis, built on first need (its import costs ~2 s), and a
        background refresh of ``symbol`` every ``sentiment_refresh_s``: the webhook path only
        ever reads the SQLite cache, never the network."""
        from ml_integration.sentiment import SentimentAnalysis, keys_from_environ

        with self._sentiment_lock:
            if self._sentiment is None:
                self._sentiment = SentimentAnalysis(self.storage)
                self._sentiment.configure_apis(**keys_from_environ(self.settings.sentiment_env))
                if self.settings.sentiment_refresh_s > 0:
                    threading.Thread(target=self._refresh_loop, name="tvgw-sentiment", daemon=True).start()
            self._sentiment_symbols.add(symbol)
        return self._sentiment

    def _refresh_loop(self) -> None:
        while True:
            for symbol in sorted(self._sentiment_symbols):
                # Cached when another worker fetched it within the cache TTL; never raises for I/O.
                result = self._sentiment.get_combined_sentiment(symbol, allow_fetch=True)
                if result.get("failed_sources"):
                    log.warning("sentiment %s: failed sources %s", symbol, result["failed_sources"])
                with self._sentiment_refreshed_cv:
                    self._sentiment_refreshed.add(symbol)
                    self._sentiment_refreshed_cv.notify_all()
            time.sleep(self.settings.sentiment_refresh_s)

    def wait_for_sentiment(self, symbol: str, timeout: float) -> bool:
        """Whether the background refresh has fetched ``symbol``'s sentiment (at least once)
        within ``timeout`` seconds: what a caller waits on to know the cache it reads is filled."""
        with self._sentiment_refreshed_cv:
            return self._sentiment_refreshed_cv.wait_for(lambda: symbol in self._sentiment_refreshed, timeout)

    def status(self) -> ModelsStatus:
        """For /healthz: the store's models (the same on every worker) and this worker's load
        state of each; ``problems`` names every model that cannot be served."""
        from ml_integration.store import stored_models

        with self._markets_lock:
            worker = {f"{s} {tf}": (m.version, m.load_error) for (s, tf), m in sorted(self._markets.items())}
        try:
            store = stored_models(self.settings.model_dir)
        except OSError as exc:
            return ModelsStatus(self.settings.ml_enabled, [], worker, [f"cannot read the model store: {exc}"])
        problems = [f"model {m.market} failed to load: {m.error}" for m in store if m.error]
        problems += [
            f"model {m.market} failed to load in worker {os.getpid()}: {worker[m.market][1]}"
            for m in store
            if not m.error and m.market in worker and worker[m.market][1]
        ]
        return ModelsStatus(self.settings.ml_enabled, store, worker, problems)

    # --- candles -------------------------------------------------------------------------------
    def _candles(self, market: _Market, symbol: str, timeframe: str, bar: list[float] | None) -> pd.DataFrame:
        """The last WINDOW candles: cached, topped up from the store, plus the alert's own bar."""
        with market.lock:
            frame = market.candles
            if frame is None or frame.empty:
                frame = candle_store.load_candles(self.storage, symbol, timeframe, limit=WINDOW)
            else:
                frame = self._refreshed(frame, symbol, timeframe)
            if bar is not None:
                stamp = pd.Timestamp(bar[0], unit="ms", tz="UTC")
                row = pd.DataFrame(
                    [bar[1:]], columns=["open", "high", "low", "close", "volume"], index=[stamp]
                )
                row.index.name = frame.index.name
                if frame.empty or stamp > frame.index[-1]:
                    frame = pd.concat([frame, row]).iloc[-WINDOW:] if not frame.empty else row
                elif stamp == frame.index[-1]:
                    frame = pd.concat([frame.iloc[:-1], row])
            market.candles = frame
            return frame

    def _refreshed(self, frame: pd.DataFrame, symbol: str, timeframe: str) -> pd.DataFrame:
        """``frame`` brought level with the store. The store's newest row is compared with the
        window's last one (one index seek per alert): a newer bar, a bar replaced in place by
        another worker's alert, or a bar this window holds that the store does not (a refused
        alert's) all reload the tail from the older of the two open times, so every worker's
        window shows the stored values."""
        stored = candle_store.newest_candle(self.storage, symbol, timeframe)
        if stored is None:
            return frame
        last_ms = int(frame.index[-1].timestamp() * 1000)
        if int(stored[0]) == last_ms and list(stored[1:]) == frame.iloc[-1].tolist():
            return frame
        cut = min(int(stored[0]), last_ms)
        tail = candle_store.load_candles(self.storage, symbol, timeframe, since_ms=cut)
        kept = frame[frame.index < pd.Timestamp(cut, unit="ms", tz="UTC")]
        return pd.concat([kept, tail]).iloc[-WINDOW:] if not kept.empty else tail.iloc[-WINDOW:]

    def _top_up(self, market: _Market, symbol: str, timeframe: str) -> None:
        """Fetch the candles the store is missing, waiting at most the market-data budget.

        Runs only when a newer closed bar should exist than the newest stored one, at most every
        FETCH_INTERVAL_S per market. A fetch that outlives the budget keeps running in the
        background and serves the next alerts; this alert goes on with what the store has.
        """
        if self.market_data is None:
            return
        step = seconds(timeframe)
        newest = candle_store.latest_candle_ms(self.storage, symbol, timeframe)
        due = newest is None or newest / 1000 + 2 * step <= self.now()
        now = time.monotonic()
        with market.lock:
            if not due or (market.fetch is not None and not market.fetch.done()):
                running = market.fetch
            elif now - market.fetched_at < FETCH_INTERVAL_S:
                return
            else:
                market.fetched_at = now
                running = market.fetch = self._fetch_pool.submit(self._fetch, symbol, timeframe, step)
        if running is None:
            return
        try:
            running.result(timeout=self.settings.market_data_budget_ms / 1000)
        except FutureTimeout:
            log.info("candle fetch for %s %s continues in the background", symbol, timeframe)
        except Exception as exc:
            log.warning("candle fetch for %s %s failed: %s", symbol, timeframe, exc)

    def _fetch(self, symbol: str, timeframe: str, step: int) -> int:
        from ml_integration.market_data import fill_candle_store

        with self._market_data_lock:
            return fill_candle_store(
                self.storage, self.market_data, symbol, timeframe, days=WINDOW * step / 86_400
            )

    def _staleness(self, candles: pd.DataFrame, timeframe: str) -> str | None:
        if candles.empty:
            return "no candles in the candle store for this market: run `tvgw data fetch` or send bars"
        age = self.now() - candles.index[-1].timestamp()
        limit = 3 * seconds(timeframe)
        if age > limit:
            return (
                f"stale candle store: the newest {timeframe} candle opened "
                f"{age / 3600:.1f} h ago (limit {limit / 3600:.1f} h); run `tvgw data fetch`"
            )
        return None

