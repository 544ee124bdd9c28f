"""ML serving: the one signal the ML strategy gives for a market now, as the webhook (and the
operator API) asks for it. No Flask and no engine here: the caller resolves the symbol and
timeframe; the engine reads the :class:`ServedSignal` through its own small port.

Per worker, for each (symbol, timeframe): the versions the database names champion and
challenger (:mod:`ml_integration.champions`), loaded once and kept, and a window of recent
candles kept in memory and topped up from the candle store. The bar an alert carries goes into
the candle store with the alert, so the store stays current from TradingView itself.

Which version is champion is read from the database on every alert (one primary-key read), so
every gunicorn worker acts on the same one: an alert that starts after a promotion commits is
served by the new champion, whichever worker takes it. The model store's ``latest`` pointer is
looked at every ``RELOAD_CHECK_S`` seconds; a version it names for the first time is enrolled
(champion when the market has none, else challenger).

On every alert the challenger, when there is one, runs beside the champion on the same candles,
within the same ML time budget; both predictions are logged with the alert, only the champion's
reaches the engine. When the champion is no better than the base rate, ML-driven sizing is off:
the engine gets no ML opinion and ``ml_analysis`` says why.

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
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from common.timeframes import seconds
from ml_integration.technical import TECHNICAL_MIN_ROWS, technical_score
from storage import Connection, Storage
from storage import candles as candle_store
from storage import champions as role_store
from storage import predictions as prediction_store
from storage.champions import MarketRoles

if TYPE_CHECKING:  # ml_integration is imported lazily: a worker without ML never pays for it
    from ml_integration.store import StoredModel

__all__ = ["ModelsStatus", "ServedSignal", "ServingSettings", "ShadowSignal", "SignalService"]

log = logging.getLogger(__name__)

#: Candles kept per market: the feature look-back, the LSTM window and some slack.
WINDOW = 320
#: A signal is a function of the model version, the candle window and the cached sentiment, so
#: alerts that arrive while those are unchanged reuse it (bounded, as quality counts data age).
SIGNAL_REUSE_S = 30.0
#: Least seconds between two incremental candle fetches for one market.
FETCH_INTERVAL_S = 30.0
#: How often (seconds) a worker looks at the model store's ``latest`` pointer for a newly
#: trained version, and retries a version that failed to load.
RELOAD_CHECK_S = 5.0
#: Newest resolved predictions of a model whose accuracy may cut its Kelly, and how long
#: (seconds) one read of them is reused (outcomes resolve once per horizon, not per alert).
RECENT_OUTCOMES = 100
RECENT_ACCURACY_TTL_S = 60.0
#: Challenger calls running or waiting at once per worker: beyond this an alert gets no shadow
#: call (a burst never builds a queue of shadow work, nor holds up the champions).
SHADOW_SLOTS = 2


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


#: What ``ml_analysis`` says of a market whose candles are generated.
SYNTHETIC_MARKET_NOTE = (
    "SYNTHETIC candles (the offline quickstart's generated history): its prices are not a market's, "
    "and the alert's own bar was not stored"
)


@dataclass(frozen=True)
class ShadowSignal:
    """The challenger's call on the same candles as the champion's: logged with the alert
    (role ``challenger``) so the two can be compared on the same outcomes, never acted on.
    ``signal`` is None when it failed or missed the budget (``error`` says which)."""

    version: str
    signal: Any = None
    error: str | None = None
    latency_ms: float = 0.0
    reused: bool = False

    def view(self) -> dict[str, Any]:
        """What ``ml_analysis.shadow`` shows."""
        body: dict[str, Any] = {"model_version": self.version, "model_role": "challenger", "acted_on": False}
        if self.signal is None:
            return {**body, "error": self.error or "no prediction"}
        p = self.signal.ml_probability
        return {
            **body, "direction_probability": None if p is None else round(p, 4),
            "confidence": round(self.signal.confidence, 4), "quality_grade": self.signal.quality_grade,
            "latency_ms": round(self.latency_ms, 2), "reused": self.reused,
        }  # fmt: skip


@dataclass(frozen=True)
class ServedSignal:
    """The ML layer's one signal for an alert's market: what the answer's ``ml_analysis``
    shows and what the engine reads (its port names the fields it uses), one object for both.

    ``signal`` is the champion's :class:`~ml_integration.strategy.TradingSignal`, or None when ML
    could not help (``error`` says why; the strategy's fallback rule decides). The candles it
    saw also give the hybrid mode's technical score, with or without a model. ``shadow`` is the
    challenger's call, logged beside it. ``sizing_off`` says why ML-driven sizing is off (the
    champion is no better than the base rate): the champion's call is still logged, but the
    engine gets no ML opinion.
    """

    signal: Any = None
    error: str | None = None
    candles: pd.DataFrame | None = None
    symbol: str | None = None
    timeframe: str | None = None
    bar: list[float] | None = None  # the alert's own bar [ms, o, h, l, c, v], stored with it
    latency_ms: float = 0.0
    reused: bool = False
    #: The market's candles are generated (the offline quickstart's): the alert's bar is then
    #: neither stored nor shown to the model, and the answer says so.
    synthetic_market: bool = False
    shadow: ShadowSignal | None = None
    sizing_off: str | None = None

    # --- the engine's port --------------------------------------------------------------------
    @property
    def acted_on(self) -> Any:
        """The signal the engine may act on: the champion's, unless ML-driven sizing is off."""
        return None if self.sizing_off else self.signal

    @property
    def direction_probability(self) -> float | None:
        """Calibrated P(up); None when there is no ML opinion (error, a gap in the window, or
        ML-driven sizing off)."""
        return None if self.acted_on is None else self.acted_on.ml_probability

    @property
    def combined_probability(self) -> float | None:
        return None if self.acted_on is None else self.acted_on.combined_probability

    @property
    def confidence(self) -> float:
        return 0.0 if self.acted_on is None else float(self.acted_on.confidence)

    @property
    def kelly_fraction(self) -> float:
        return 0.0 if self.acted_on is None else float(self.acted_on.kelly_fraction)

    def kelly_for(self, side: str) -> float:
        """The Kelly fraction of a trade on ``side``: the favoured side's, or the other's."""
        return 0.0 if self.signal is None else float(self.signal.kelly_for(side))

    @property
    def stop_loss(self) -> float | None:
        return None if self.acted_on is None else self.acted_on.stop_loss

    @property
    def take_profit(self) -> float | None:
        return None if self.acted_on is None else self.acted_on.take_profit

    @property
    def entry_price(self) -> float | None:
        return None if self.acted_on is None else self.acted_on.entry_price

    @property
    def leverage(self) -> float:
        return 1.0 if self.acted_on is None else float(self.acted_on.leverage)

    def technical_score(self, side: str) -> float | None:
        """The hybrid mode's technical score of a ``side`` entry on these candles (None with
        too few of them)."""
        if self.candles is None or len(self.candles) < TECHNICAL_MIN_ROWS:
            return None
        return technical_score(self.candles, side).score  # type: ignore[arg-type]

    # --- the answer and the record -------------------------------------------------------------
    def analysis(self) -> dict[str, Any]:
        """``ml_analysis`` as the answer and the alert row show it: what the engine used, and
        beside it (``shadow``) the challenger's call, which it did not use."""
        signal = self.signal
        market = {"market": SYNTHETIC_MARKET_NOTE} if self.synthetic_market else {}
        shadow = {} if self.shadow is None else {"shadow": self.shadow.view()}
        if signal is None:
            return {"error": self.error or "no ML opinion", **shadow, **market}
        if self.sizing_off:
            p = signal.ml_probability
            return {
                "error": f"ML-driven sizing is off: {self.sizing_off}", "ml_sizing": "off",
                "model_version": signal.model_version, "model_role": "champion",
                "logged_prediction": {"direction_probability": None if p is None else round(p, 4),
                                      "confidence": round(signal.confidence, 4), "acted_on": False},
                "candle_time": signal.candle_time, "latency_ms": round(self.latency_ms, 2),
                **shadow, **market,
            }  # fmt: skip
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
            "model_role": "champion",
            "candle_time": signal.candle_time,
            "synthetic": signal.synthetic,
            "latency_ms": round(self.latency_ms, 2),
            "reused": self.reused,
            "reason": signal.reason,
            **shadow,
        }  # fmt: skip
        if signal.synthetic:
            body["warning"] = "model trained on SYNTHETIC candles (quickstart offline): not a market view"
        return {**body, **market}

    def prediction_row(self) -> dict[str, Any] | None:
        """The ``ml_predictions`` row the champion's call is logged as (outcome tracking scores
        it; logged even while ML-driven sizing is off, so its record keeps growing)."""
        return _prediction_row(self.signal, self.symbol, self.timeframe, "champion")

    def shadow_row(self) -> dict[str, Any] | None:
        """The challenger's row, logged with the same alert (None without a shadow call)."""
        if self.shadow is None or self.prediction_row() is None:
            return None
        return _prediction_row(self.shadow.signal, self.symbol, self.timeframe, "challenger")

    def record(self, conn: Connection, alert_id: int | None, now: float) -> None:
        """Inside the alert's transaction: the alert's bar into the candle store, and the
        prediction rows (so every enriched alert has exactly one acted-on prediction, and the
        challenger's beside it when one ran)."""
        if self.bar is not None and self.symbol is not None and self.timeframe is not None:
            candle_store.upsert_candles(conn, self.symbol, self.timeframe, [self.bar], "alert")
        for row in (self.prediction_row(), self.shadow_row()):
            if row is not None:
                prediction_store.insert_prediction(conn, timestamp=now, alert_id=alert_id, **row)


def _prediction_row(
    signal: Any, symbol: str | None, timeframe: str | None, role: str
) -> dict[str, Any] | None:
    if signal is None or symbol is None or timeframe is None:
        return None
    candle_ts = pd.Timestamp(signal.candle_time).timestamp()
    return {
        "symbol": symbol, "timeframe": timeframe, "model_version": signal.model_version, "role": role,
        "direction_prob": signal.ml_probability if signal.ml_probability is not None else 0.5,
        "magnitude_pred": signal.magnitude, "confidence": signal.confidence,
        "horizon": signal.horizon, "candle_time": candle_ts,
        "target_time": candle_ts + signal.horizon * seconds(timeframe),
        "price_at_prediction": signal.entry_price, "synthetic": int(signal.synthetic),
    }  # fmt: skip


@dataclass(frozen=True)
class ModelsStatus:
    """The model part of /healthz: the store as it is on disk, the roles the database gives its
    versions (the same for every worker), and this worker's view of them."""

    enabled: bool
    store: list[StoredModel]
    #: "SYMBOL TF" → (champion version this worker serves or None, its last load error or None)
    worker: dict[str, tuple[str | None, str | None]]
    problems: list[str]
    roles: list[MarketRoles] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """False when ML is on and a model in the store cannot be served (or the store is
        unreadable), or a champion is no better than the base rate (ML-driven sizing is off):
        the gateway still trades, on the strategies' fallback rule."""
        return not (self.enabled and self.problems)

    def worker_models(self) -> dict[str, str | None]:
        """Market ("SYMBOL TF") → the version this worker serves, or why it serves none."""
        return {market: version or error for market, (version, error) in self.worker.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "ok": self.ok,
            "models": [_stored_dict(m) for m in self.store],
            "champions": [_roles_dict(r) for r in self.roles],
            "worker": {"pid": os.getpid(), "models": self.worker_models()},
            "problems": self.problems,
        }


def _stored_dict(model: StoredModel) -> dict[str, Any]:
    body: dict[str, Any] = {"symbol": model.symbol, "timeframe": model.timeframe, "version": model.version}
    body["ok"] = model.error is None
    if model.error:
        body["error"] = model.error
    return body


def _roles_dict(roles: MarketRoles) -> dict[str, Any]:
    return {
        "symbol": roles.symbol, "timeframe": roles.timeframe, "champion": roles.champion,
        "challenger": roles.challenger, "ml_sizing": "off" if roles.sizing_off else "on",
        "ml_sizing_off_reason": roles.fallback_reason,
    }  # fmt: skip


@dataclass
class _Market:
    #: version → its loaded strategy (the champion's and the challenger's)
    models: dict[str, Any] = field(default_factory=dict)
    #: version → (monotonic time, why it failed to load): retried after RELOAD_CHECK_S
    load_errors: dict[str, tuple[float, str]] = field(default_factory=dict)
    #: the roles this worker read last (its champion is what ``status`` reports as served)
    roles: MarketRoles | None = None
    #: why the store gave nothing to enroll (unreadable, altered), from the last look at it
    store_error: str | None = None
    checked_at: float = 0.0
    candles: pd.DataFrame | None = None
    #: monotonic time of the last incremental candle fetch started for this market
    fetched_at: float = -1e9
    fetch: Any = None  # the fetch still running in the background, if any
    #: version → (inputs key, when, signal): that version's answer for the current newest candle.
    signals: dict[str, tuple[tuple[Any, ...], float, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class _Call:
    """One version's call on one alert's candles: reused, or running in a pool."""

    version: str
    started: float
    signal: Any = None
    future: Future[Any] | None = None

    def outcome(self, deadline: float) -> tuple[Any, str | None, float, bool]:
        """(signal, error, milliseconds, reused), waiting for it until ``deadline`` at most."""
        if self.future is None:
            return self.signal, None, (time.perf_counter() - self.started) * 1000, True
        try:
            signal = self.future.result(timeout=max(0.0, deadline - time.perf_counter()))
        except FutureTimeout:
            return None, "budget", (time.perf_counter() - self.started) * 1000, False
        except Exception as exc:
            return None, f"{type(exc).__name__}: {exc}", (time.perf_counter() - self.started) * 1000, False
        return signal, None, (time.perf_counter() - self.started) * 1000, False


class SignalService:
    """Serves the ML strategy's signal per market, within a time budget, from a per-worker model
    cache and candle window: the champion's, acted on, and the challenger's beside it."""

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
        # The challengers' own thread: a shadow never takes a champion's place in the queue.
        self._shadow_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tvgw-shadow")
        self._shadow_slots = threading.BoundedSemaphore(SHADOW_SLOTS)
        # Candle fetches wait on the network: their own thread, so they never delay a model run.
        self._fetch_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tvgw-candles")

    # --- the per-alert call --------------------------------------------------------------------
    def serve(self, symbol: str, timeframe: str, bar: list[float] | None = None) -> ServedSignal:
        """The champion's call on ``symbol``/``timeframe`` now, with the alert's own ``bar``
        (kept with the alert), and the challenger's beside it: an alert's signal, and the
        operator API's on-demand prediction (same model cache, candle window and time budget).
        Never raises for an ML failure."""
        if candle_store.is_synthetic_market(self.storage, symbol):
            bar = None  # never mixed into a generated history, nor shown to the model with it
            served = ServedSignal(symbol=symbol, timeframe=timeframe, synthetic_market=True)
        else:
            served = ServedSignal(symbol=symbol, timeframe=timeframe, bar=bar)
        if not self.settings.ml_enabled:
            return replace(served, error="ML is disabled (TVGW_ML_ENABLED=false)")
        market = self._market(symbol, timeframe)
        self._top_up(market, symbol, timeframe)
        served = replace(served, candles=self._candles(market, symbol, timeframe, bar))
        roles, error = self._roles(market, symbol, timeframe)
        if roles is None:
            return replace(served, error=error)
        model, error = self._loaded(market, symbol, timeframe, roles.champion)
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
        budget = self.settings.ml_budget_ms / 1000
        started = time.perf_counter()
        champion = self._call(market, roles.champion, model, candles, symbol, self._pool)
        shadow = self._shadow_call(market, roles, candles, symbol, timeframe)
        signal, failure, elapsed_ms, reused = champion.outcome(started + budget)
        if failure == "budget":
            return replace(served, error=f"ML took longer than its {budget * 1000:.0f} ms budget "
                           "(TVGW_ML_BUDGET_MS); the strategy's fallback rule decided")  # fmt: skip
        if failure is not None:
            return replace(served, error=f"ML failed: {failure}")
        return replace(
            served, signal=signal, latency_ms=elapsed_ms, reused=reused,
            shadow=None if shadow is None else self._shadow_outcome(shadow, started + budget, budget),
            sizing_off=roles.fallback_reason if roles.sizing_off else None,
        )  # fmt: skip

    def _call(self, market: _Market, version: str, model: Any, candles: pd.DataFrame, symbol: str,
              pool: ThreadPoolExecutor) -> _Call:  # fmt: skip
        """``version``'s call on ``candles``: reused when its inputs are unchanged (a signal is a
        function of the version, the candle window and the cached sentiment), else started in
        ``pool``. A finished run is kept for reuse even when it missed its alert's budget."""
        started = time.perf_counter()
        key = (version, candles.index[-1], *candles.iloc[-1].tolist(), *self._sentiment_key(model, symbol))
        cached = market.signals.get(version)
        if cached is not None and cached[0] == key and time.monotonic() - cached[1] < SIGNAL_REUSE_S:
            return _Call(version, started, signal=cached[2])
        future = pool.submit(model.generate_signal, candles, symbol)

        def keep(done: Future[Any]) -> None:
            if not done.cancelled() and done.exception() is None:
                market.signals[version] = (key, time.monotonic(), done.result())
            elif not done.cancelled():
                log.error("ML failed for %s version %s: %s", symbol, version, done.exception())

        future.add_done_callback(keep)
        return _Call(version, started, future=future)

    def _shadow_call(
        self, market: _Market, roles: MarketRoles, candles: pd.DataFrame, symbol: str, timeframe: str
    ) -> _Call | ShadowSignal | None:
        """The challenger's call, started beside the champion's (None without a challenger)."""
        if roles.challenger is None:
            return None
        model, error = self._loaded(market, symbol, timeframe, roles.challenger)
        if model is None:
            return ShadowSignal(roles.challenger, error=error)
        if not self._shadow_slots.acquire(blocking=False):
            busy = "the challenger is busy with earlier alerts: not run for this one (no queue builds up)"
            return ShadowSignal(roles.challenger, error=busy)
        try:
            call = self._call(market, roles.challenger, model, candles, symbol, self._shadow_pool)
        except BaseException:
            self._shadow_slots.release()
            raise
        if call.future is None:  # reused: nothing runs
            self._shadow_slots.release()
        else:
            call.future.add_done_callback(lambda _: self._shadow_slots.release())
        return call

    @staticmethod
    def _shadow_outcome(call: _Call | ShadowSignal, deadline: float, budget: float) -> ShadowSignal:
        """The challenger's answer, waited for until the champion's own budget runs out at most:
        the shadow never makes an alert wait longer than ML alone may."""
        if isinstance(call, ShadowSignal):
            return call
        signal, failure, elapsed_ms, reused = call.outcome(deadline)
        if failure == "budget":
            failure = (
                f"the challenger took longer than the {budget * 1000:.0f} ms ML budget: not logged "
                "for this alert (its answer serves the next alert on this bar)"
            )
        return ShadowSignal(call.version, signal, failure, elapsed_ms, reused)

    @staticmethod
    def _sentiment_key(model: Any, symbol: str) -> tuple[Any, ...]:
        """What the cached sentiment says now (a local cache read), so a refresh invalidates."""
        if model.sentiment is None or not model.config.use_sentiment:
            return ()
        cached = model.sentiment.get_combined_sentiment(symbol, allow_fetch=False)
        return (cached.get("combined_sentiment"), cached.get("fetched_at"))

    def store_bar(self, symbol: str, timeframe: str, bar: list[float]) -> None:
        """Keep an alert's bar in the candle store when the gateway knew no price for its market:
        the bars alerts carry are one way to give it one (never called for a synthetic market:
        :meth:`serve` drops the bar there)."""
        candle_store.upsert_candles(self.storage, symbol, timeframe, [bar], "alert")

    # --- models --------------------------------------------------------------------------------
    def _market(self, symbol: str, timeframe: str) -> _Market:
        with self._markets_lock:
            return self._markets.setdefault((symbol, timeframe), _Market())

    def _roles(self, market: _Market, symbol: str, timeframe: str) -> tuple[MarketRoles | None, str]:
        """The market's roles as the database has them now (read on every call: every worker
        acts on the same champion), after enrolling a version the store names for the first
        time (looked for every RELOAD_CHECK_S)."""
        now = time.monotonic()
        if market.checked_at == 0.0 or now - market.checked_at >= RELOAD_CHECK_S:
            with market.lock:
                if market.checked_at == 0.0 or now - market.checked_at >= RELOAD_CHECK_S:
                    market.checked_at = now
                    market.store_error = self._enroll(symbol, timeframe)
        roles = role_store.get_roles(self.storage, symbol, timeframe)
        if roles is None:
            return None, market.store_error or (
                f"no trained model for {symbol} {timeframe} in {self.settings.model_dir}: "
                f"run `tvgw train --symbol {symbol} --timeframe {timeframe}`"
            )
        if market.roles is None or market.roles.revision != roles.revision:
            with market.lock:  # versions that lost their role are let go
                for version in set(market.models) - {roles.champion, roles.challenger}:
                    del market.models[version]
                    market.signals.pop(version, None)
                market.roles = roles
        return roles, ""

    def _enroll(self, symbol: str, timeframe: str) -> str | None:
        """Give the store's newest version its role if it has none; why not, or None."""
        from ml_integration import MLError
        from ml_integration.champions import enroll_latest

        model_dir = Path(self.settings.model_dir)
        try:
            for event in enroll_latest(self.storage, model_dir, symbol, timeframe):
                log.info("model %s %s version %s: %s (%s)", symbol, timeframe, event.version, event.kind,
                         event.reason)  # fmt: skip
        except OSError as exc:
            return f"cannot read the model store {model_dir}: {exc}"
        except (MLError, ValueError) as exc:
            return f"model {symbol} {timeframe} failed to load (the newest in {model_dir}): {exc}"
        return None

    def _loaded(self, market: _Market, symbol: str, timeframe: str, version: str) -> tuple[Any, str]:
        """``version``'s strategy, loaded once per worker (hashes checked); or why not."""
        model = market.models.get(version)
        if model is not None:
            return model, ""
        from ml_integration import MLError
        from ml_integration.store import load_version_strategy

        with market.lock:
            model = market.models.get(version)
            if model is not None:
                return model, ""
            failed = market.load_errors.get(version)
            if failed is not None and time.monotonic() - failed[0] < RELOAD_CHECK_S:
                return None, failed[1]
            try:
                strategy = load_version_strategy(self.settings.model_dir, symbol, timeframe, version)
            except (MLError, OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
                # BadZipFile: an artifact replaced between its hash check and its read.
                error = f"model {symbol} {timeframe} {version} failed to load: {exc}"
                market.load_errors[version] = (time.monotonic(), error)
                log.error("%s", error)
                return None, error
            if strategy.config.use_sentiment:
                strategy.sentiment = self._sentiment_for(symbol)
            strategy.recent_accuracy = _RecentAccuracy(self.storage, strategy.model_version)
            market.models[version] = strategy
            market.load_errors.pop(version, None)
        log.info("loaded model %s %s version %s", symbol, timeframe, version)
        return strategy, ""

    def preload(self) -> list[str]:
        """Enroll the store's newest versions and load every champion and challenger now, at
        worker start, so that no alert pays for loading one; returns "SYMBOL TF version (role)"
        per model. Failures are logged, not fatal: the alert path reports them as
        ml_analysis.error and /healthz as ``degraded``."""
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
            store = []
        markets = {(e.symbol, e.timeframe) for e in store if e.symbol is not None and e.timeframe is not None}
        markets |= {(r.symbol, r.timeframe) for r in role_store.list_roles(self.storage)}
        for entry in store:
            if entry.symbol is None or entry.timeframe is None:
                log.warning("model store entry unreadable: %s", entry.error)
        loaded = []
        for symbol, timeframe in sorted(markets):
            market = self._market(symbol, timeframe)
            roles, error = self._roles(market, symbol, timeframe)
            if roles is None:
                loaded.append(f"{symbol} {timeframe}: {error}")
                continue
            for role, version in (("champion", roles.champion), ("challenger", roles.challenger)):
                if version is not None:
                    model, error = self._loaded(market, symbol, timeframe, version)
                    line = f"{version} ({role})" if model is not None else f"{version} ({role}): {error}"
                    loaded.append(f"{symbol} {timeframe} {line}")
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
        """For /healthz: the store's models and the roles the database gives them (the same on
        every worker), and this worker's load state of each champion; ``problems`` names every
        model that cannot be served and every market whose ML-driven sizing is off."""
        from ml_integration.store import stored_models, version_error

        with self._markets_lock:
            markets = sorted(self._markets.items())
        worker = {f"{s} {tf}": self._served(m) for (s, tf), m in markets}
        roles = role_store.list_roles(self.storage)
        try:
            store = stored_models(self.settings.model_dir)
        except OSError as exc:
            return ModelsStatus(
                self.settings.ml_enabled, [], worker, [f"cannot read the model store: {exc}"], roles
            )
        problems = [f"model {m.market} failed to load: {m.error}" for m in store if m.error]
        told = {(m.market, m.version) for m in store if m.error}
        for r in roles:
            for role, version in (("champion", r.champion), ("challenger", r.challenger)):
                if version is None or (r.market, version) in told:
                    continue
                error = version_error(self.settings.model_dir, r.symbol, r.timeframe, version)
                if error is not None:
                    problems.append(f"{role} {version} of {r.market} cannot be served: {error}")
            if r.sizing_off:
                problems.append(f"ML-driven sizing is off for {r.market}: {r.fallback_reason}")
        problems += [
            f"model {market} failed to load in worker {os.getpid()}: {error}"
            for market, (version, error) in worker.items()
            if error is not None and market in {m.market for m in store if not m.error}
        ]
        return ModelsStatus(self.settings.ml_enabled, store, worker, problems, roles)

    @staticmethod
    def _served(market: _Market) -> tuple[str | None, str | None]:
        """(the champion this worker serves, or None; why it serves none, or None)."""
        roles = market.roles
        if roles is None:
            return None, market.store_error
        if roles.champion in market.models:
            return roles.champion, None
        failed = market.load_errors.get(roles.champion)
        return None, failed[1] if failed else None  # not asked for yet in this worker

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
