"""The ML seam of the webhook path: what the ML strategy thinks of this alert's market.

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
import sqlite3
import threading
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from engine.alert import Alert
from engine.decision import MLOpinion
from engine.exceptions import BrokerError
from engine.predictor import atr, predict_market, realized_volatility
from engine.timeframes import from_tradingview, seconds
from storage import Storage
from storage import candles as candle_store
from storage import predictions as prediction_store
from tvgw.config import Settings, StrategySettings

if TYPE_CHECKING:  # ml_integration is imported lazily: a worker without ML never pays for it
    from ml_integration.store import StoredModel

__all__ = ["Enricher", "Enrichment", "ModelsStatus"]

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


@dataclass(frozen=True)
class Enrichment:
    """What enrichment produced for one alert."""

    opinion: MLOpinion | None
    analysis: dict[str, Any] | None
    candles: Any = None
    prediction: dict[str, Any] | None = None
    bar: tuple[str, str, list[float]] | None = None  # (symbol, timeframe, [ms, o, h, l, c, v])


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
    #: (last candle time, ATR, realised volatility): recomputed only when a new candle arrives.
    volatility: tuple[pd.Timestamp, float, float] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class Enricher:
    """Runs the ML strategy for alerts, within a time budget, and logs every prediction."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        resolve_symbol: Callable[[str, str | None], str],
        *,
        live_exchange: bool = False,
        market_data: Any = None,
    ):
        self.settings = settings
        self.storage = storage
        self.resolve_symbol = resolve_symbol
        self.live_exchange = live_exchange
        self.market_data = market_data  # a ccxt exchange for public candles, or None
        self._market_data_lock = threading.Lock()  # ccxt's sync client is not thread-safe
        self._sentiment: Any = None
        self._sentiment_symbols: set[str] = set()
        self._sentiment_lock = threading.Lock()
        self._markets: dict[tuple[str, str], _Market] = {}
        self._markets_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tvgw-ml")
        # Candle fetches wait on the network: their own thread, so they never delay a model run.
        self._fetch_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tvgw-candles")

    # --- the per-alert call --------------------------------------------------------------------
    def enrich(self, alert: Alert, strategy: StrategySettings) -> Enrichment:
        try:
            symbol = self.resolve_symbol(alert.ticker, alert.exchange)
        except BrokerError as exc:
            return Enrichment(None, {"error": f"no ML: {exc}"})
        timeframe = from_tradingview(alert.interval, strategy.timeframe)
        bar = _alert_bar(alert, timeframe)
        if not self.settings.ml_enabled:
            return Enrichment(
                None,
                {"error": "ML is disabled (TVGW_ML_ENABLED=false)"},
                bar=(symbol, timeframe, bar) if bar else None,
            )
        market = self._market(symbol, timeframe)
        self._top_up(market, symbol, timeframe)
        candles = self._candles(market, symbol, timeframe, bar)
        bar_key = (symbol, timeframe, bar) if bar else None
        model, error = self._model(market, symbol, timeframe)
        if model is None:
            return Enrichment(None, {"error": error}, candles=candles, bar=bar_key)
        if model.synthetic and self.live_exchange:
            return Enrichment(None, {"error": "the loaded model was trained on synthetic candles; it never "
                                     "drives a live exchange. Train on real data: tvgw train"},
                              candles=candles, bar=bar_key)  # fmt: skip
        stale = self._staleness(candles, timeframe)
        if stale:
            return Enrichment(None, {"error": stale}, candles=candles, bar=bar_key)
        started = time.perf_counter()
        key = (
            market.version,
            candles.index[-1],
            *candles.iloc[-1].tolist(),
            *self._sentiment_key(model, symbol),
        )
        cached = market.signal
        if cached is not None and cached[0] == key and time.monotonic() - cached[1] < SIGNAL_REUSE_S:
            elapsed_ms = (time.perf_counter() - started) * 1000
            return self._result(cached[2], symbol, timeframe, candles, elapsed_ms, bar_key, reused=True)
        budget = self.settings.ml_budget_ms / 1000
        future = self._pool.submit(model.build_signal, candles, symbol)
        try:
            signal = future.result(timeout=budget)
        except FutureTimeout:
            return Enrichment(None, {"error": f"ML took longer than its {budget * 1000:.0f} ms budget "
                                     "(TVGW_ML_BUDGET_MS); the strategy's fallback rule decided"},
                              candles=candles, bar=bar_key)  # fmt: skip
        except Exception as exc:
            log.exception("ML failed for %s %s", symbol, timeframe)
            return Enrichment(
                None, {"error": f"ML failed: {type(exc).__name__}: {exc}"}, candles=candles, bar=bar_key
            )
        elapsed_ms = (time.perf_counter() - started) * 1000
        market.signal = (key, time.monotonic(), signal)
        return self._result(signal, symbol, timeframe, candles, elapsed_ms, bar_key)

    def _result(
        self,
        signal: Any,
        symbol: str,
        timeframe: str,
        candles: pd.DataFrame,
        elapsed_ms: float,
        bar: tuple[str, str, list[float]] | None,
        *,
        reused: bool = False,
    ) -> Enrichment:
        opinion = MLOpinion.from_signal(signal)
        probability = opinion.direction_probability
        bar_atr, volatility = self._volatility(self._market(symbol, timeframe), candles)
        call = predict_market(
            direction_probability=probability, confidence=signal.confidence, price=signal.entry_price,
            atr=bar_atr, volatility=volatility, max_leverage=self.settings.risk.max_leverage,
        )  # fmt: skip
        analysis: dict[str, Any] = {
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
            "market_call": {"signal": call.signal_type.value, "leverage": call.leverage,
                            "risk_reward": call.risk_reward},
            "model_version": signal.model_version,
            "candle_time": signal.candle_time,
            "synthetic": signal.synthetic,
            "latency_ms": round(elapsed_ms, 2),
            "reused": reused,
            "reason": signal.reason,
        }  # fmt: skip
        if signal.synthetic:
            analysis["warning"] = "model trained on SYNTHETIC candles (quickstart offline): not a market view"
        candle_ts = pd.Timestamp(signal.candle_time).timestamp()
        step = seconds(timeframe)
        prediction = {
            "symbol": symbol, "timeframe": timeframe, "model_version": signal.model_version,
            "direction_prob": probability, "magnitude_pred": signal.magnitude,
            "confidence": signal.confidence,
            "horizon": signal.horizon, "candle_time": candle_ts,
            "target_time": candle_ts + signal.horizon * step, "price_at_prediction": signal.entry_price,
            "synthetic": int(signal.synthetic),
        }  # fmt: skip
        return Enrichment(opinion, analysis, candles=candles, prediction=prediction, bar=bar)

    @staticmethod
    def _sentiment_key(model: Any, symbol: str) -> tuple[Any, ...]:
        """What the cached sentiment says now (a local cache read), so a refresh invalidates."""
        if model.sentiment is None or not model.config.use_sentiment:
            return ()
        cached = model.sentiment.get_combined_sentiment(symbol, allow_fetch=False)
        return (cached.get("combined_sentiment"), cached.get("fetched_at"))

    @staticmethod
    def _volatility(market: _Market, candles: pd.DataFrame) -> tuple[float, float]:
        last = candles.index[-1]
        cached = market.volatility
        if cached is None or cached[0] != last:
            cached = (last, atr(candles), realized_volatility(candles))
            market.volatility = cached
        return cached[1], cached[2]

    def store_bar(self, alert: Alert, strategy: StrategySettings) -> bool:
        """Keep the alert's bar in the candle store even when the alert itself is refused for
        want of a market price: the bars alerts carry are one way to give the gateway one."""
        try:
            symbol = self.resolve_symbol(alert.ticker, alert.exchange)
        except BrokerError:
            return False
        timeframe = from_tradingview(alert.interval, strategy.timeframe)
        bar = _alert_bar(alert, timeframe)
        if bar is None:
            return False
        candle_store.upsert_candles(self.storage, symbol, timeframe, [bar], "alert")
        return True

    def record(self, conn: sqlite3.Connection, alert_id: int, enrichment: Enrichment) -> None:
        """Inside the alert's transaction: the alert's bar into the candle store, and the
        prediction row (so every enriched alert has exactly one)."""
        if enrichment.bar is not None:
            symbol, timeframe, row = enrichment.bar
            candle_store.upsert_candles_in(conn, symbol, timeframe, [row], "alert")
        if enrichment.prediction is not None:
            prediction_store.insert_prediction(
                conn, timestamp=time.time(), alert_id=alert_id, **enrichment.prediction
            )

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
        market.strategy, market.version, market.load_error = strategy, version, None
        log.info("loaded model %s %s version %s", symbol, timeframe, version)

    def preload(self) -> list[str]:
        """Load and warm every model in the store now, at worker start, so that no alert pays
        for loading one; returns "SYMBOL TF version" per model. Failures are logged, not fatal:
        the alert path reports them as ml_analysis.error and /healthz as ``degraded``."""
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
            time.sleep(self.settings.sentiment_refresh_s)

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
        due = newest is None or newest / 1000 + 2 * step <= time.time()
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
        age = time.time() - candles.index[-1].timestamp()
        limit = 3 * seconds(timeframe)
        if age > limit:
            return (
                f"stale candle store: the newest {timeframe} candle opened "
                f"{age / 3600:.1f} h ago (limit {limit / 3600:.1f} h); run `tvgw data fetch`"
            )
        return None


def _alert_bar(alert: Alert, timeframe: str) -> list[float] | None:
    """``[open time ms, o, h, l, c, v]`` when the alert carries a complete bar and its time."""
    bar = alert.bar
    if bar is None or alert.time is None:
        return None
    return [
        int(alert.time.timestamp() * 1000),
        bar["open"],
        bar["high"],
        bar["low"],
        bar["close"],
        bar["volume"],
    ]
