"""The Flask application: ``create_app()`` builds one gateway per worker process."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from flask import Flask, current_app
from flask.json.provider import DefaultJSONProvider

from engine.brokers.base import Broker
from engine.brokers.factory import create_account_brokers, create_broker
from engine.decision import Clock
from engine.engine import TradingEngine
from ml_integration.champions import ChampionRules, review
from ml_integration.serving import SignalService
from ml_integration.tracking import start_outcome_resolver
from settings import Settings, account_credentials, exchange_credentials, load_settings
from storage import Storage
from storage.leases import start_owned_job
from storage.retention import RetentionPolicy, prune
from webhook.errors import register_error_handlers
from webhook.gateway import Gateway

__all__ = ["background_loops", "create_app", "current_gateway", "get_gateway", "stop_background"]

#: The stop signal of every app's background loops in this process (see :func:`stop_background`).
_BACKGROUND: weakref.WeakSet[threading.Event] = weakref.WeakSet()

#: How long a starting worker waits for its exchanges' market tables before it serves anyway
#: (what needs a table not loaded yet then fails at once, saying so, while the load goes on in
#: the background): well inside gunicorn's 10 s worker timeout, which a longer wait would trip.
MARKETS_START_WAIT_S = 5.0


def create_app(
    settings: Settings | None = None,
    test_config: Mapping[str, Any] | None = None,
    *,
    clock: Clock | None = None,
) -> Flask:
    """Application factory: settings (defaults → ``TVGW_*`` → ``test_config``), storage
    migrated, broker and gateway built, blueprints registered. ``clock`` is the time the intake
    and the engine go by (the machine's, unless a test hands in one it moves itself)."""
    settings = settings or load_settings(test_config)
    _configure_logging(settings.log_level)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes + 1  # see webhook.routes.webhook
    app.json = FastJSONProvider(app)
    storage = Storage(settings.database, synchronous=settings.sqlite_synchronous)
    storage.migrate()
    broker = create_broker(settings, storage, exchange_credentials(settings.broker))
    accounts = create_account_brokers(settings, storage, account_credentials)
    start_brokers([broker, *accounts.values()], settings.markets_refresh_s)
    market_data = None
    if settings.market_data:
        from ml_integration.market_data import create_exchange

        market_data = create_exchange(
            settings.market_data, timeout_ms=settings.exchange_timeout_ms, api_url=settings.exchange_api_url
        )
    signals = SignalService(settings, storage, live_exchange=broker.live, market_data=market_data)
    if settings.ml_enabled:
        # In the background: a worker that loads many models must not miss gunicorn's
        # heartbeat; an alert that arrives first simply waits for its market's model.
        threading.Thread(target=_preload, args=(signals,), name="tvgw-preload", daemon=True).start()
    gateway = app.extensions["tvgw"] = Gateway(
        settings, storage, broker, signals, accounts=accounts, clock=clock
    )
    stop = app.extensions["tvgw_stop"] = threading.Event()
    _BACKGROUND.add(stop)
    if settings.resolve_interval_s > 0:
        rules = ChampionRules.from_settings(settings)
        start_outcome_resolver(
            storage, settings.resolve_interval_s, stop,
            review=lambda: review(storage, rules, model_dir=settings.model_dir),
        )  # fmt: skip
    if settings.exit_watch_interval_s > 0:
        start_exit_watcher(gateway.engine, settings.exit_watch_interval_s, stop)
    if settings.retention.prune_interval_s > 0:
        start_pruner(storage, settings.retention.policy(), settings.retention.prune_interval_s, stop)
    if any(not desk.broker.settles_instantly for desk in gateway.engine.desks()):
        start_book_keeping(gateway.engine, storage, settings, stop)

    from webhook import api, dashboard, metrics, ml_api, notify, openapi, routes
    from webhook.events import watch_webhook

    dashboard.configure_sessions(app, settings.api_token, secure_cookie=settings.dashboard_secure_cookie)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(routes.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(ml_api.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(metrics.bp)
    notifier = notify.Notifier.from_settings(settings, storage)
    app.extensions["tvgw_notifier"] = notifier
    watch_webhook(app, metrics.observe_alert, notifier.alert)
    if settings.continuity.check_interval_s > 0:
        from webhook.continuity import start_continuity_watch

        start_continuity_watch(gateway.continuity, notifier, settings.continuity.check_interval_s)
    register_error_handlers(app)
    logging.getLogger("tvgw").info(
        "gateway ready (pid %d): broker %s, database %s, ML %s", os.getpid(), broker.name, storage.describe(),
        "on" if settings.ml_enabled else "off",
    )  # fmt: skip
    return app


class FastJSONProvider(DefaultJSONProvider):
    """Responses encoded by orjson (already installed with ccxt): the JSON a webhook answers
    with is on every alert's path. Key order is kept as built."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        try:
            return orjson.dumps(obj, default=str).decode()
        except orjson.JSONEncodeError:
            # What orjson cannot write (an integer beyond 64 bits, a lone surrogate in a row an
            # older version stored) is still answered, never a 500: the standard library writes
            # both (the surrogate as an escape).
            return json.dumps(obj, default=str)

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)


def start_exit_watcher(
    engine: TradingEngine, interval_s: float, stop: threading.Event | None = None
) -> threading.Thread:
    """A daemon thread per worker that acts on exits every ``interval_s`` seconds, for markets
    that get no alerts: it fills the paper book's crossed exits; on an exchange it records the
    fills of the exits resting there, moves trailing stops, and fires the exits the exchange
    cannot hold. Every worker runs one; claims in the write transaction make each act once.
    Each pass is counted per worker (``tvgw_exit_watcher_passes`` in /metrics): a watcher that
    stopped passing is seen, and a test waits on passes rather than on time. It ends when
    ``stop`` is set."""
    from webhook.metrics import EXIT_WATCHER_PASSES

    log = logging.getLogger("tvgw.exits")
    stop = stop or threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):  # the watcher's rhythm, until its app stops
            try:
                engine.watch_exits()
            except Exception:
                log.exception("exit watcher failed; retrying in %.1f s", interval_s)
                EXIT_WATCHER_PASSES.labels(outcome="failed").inc()
            else:
                EXIT_WATCHER_PASSES.labels(outcome="ok").inc()

    thread = threading.Thread(target=loop, name="tvgw-exits", daemon=True)
    thread.start()
    return thread


def start_pruner(
    storage: Storage, policy: RetentionPolicy, interval_s: float, stop: threading.Event | None = None
) -> threading.Thread:
    """Apply the retention periods every ``interval_s`` seconds, in one worker of one host (the
    ``retention`` lease holder): two pruners would only fight over the same rows. ``stop`` ends
    the loop (see :func:`stop_background`)."""
    log = logging.getLogger("tvgw.retention")

    def run() -> None:
        done = prune(storage, policy)
        if done.total():
            log.info("retention pruned %s", done)

    return start_owned_job(storage, "retention", interval_s, run, stop=stop)


def background_loops() -> list[threading.Event]:
    """The stop signals of the background loops of every app this process built and not stopped."""
    return [event for event in _BACKGROUND if not event.is_set()]


def stop_background(app: Flask | None = None) -> None:
    """Stop the background loops (exit watcher, outcome resolver, retention pruner) of ``app``, or
    of every app this process built: gunicorn's ``worker_exit`` calls it, and the tests' teardown,
    so that no loop outlives its database (it would log "unable to open database file" every
    interval)."""
    events = [app.extensions["tvgw_stop"]] if app is not None else list(_BACKGROUND)
    for event in events:
        event.set()


def start_book_keeping(
    engine: TradingEngine, storage: Storage, settings: Settings, stop: threading.Event | None = None
) -> None:
    """The order lifecycle (``orders`` lease) and the reconciler (``reconcile`` lease), each run
    by one worker of one host, until ``stop`` is set: for accounts on an exchange only (the paper
    book settles every order in its own transaction, and is its own truth)."""
    from engine.lifecycle import OrderKeeper
    from engine.reconciler import Reconciler

    log = logging.getLogger("tvgw.orders")
    if settings.order_poll_interval_s > 0:
        keeper = OrderKeeper(storage, engine.accounts, not_found_grace_s=settings.order_not_found_grace_s)

        def follow() -> None:
            for line in keeper.run_once(engine.clock.now()):
                log.info("%s", line)

        start_owned_job(storage, "orders", settings.order_poll_interval_s, follow, stop=stop)
    if settings.reconcile_interval_s > 0:
        reconciler = Reconciler(storage, engine.accounts)  # drift is logged (and told) by itself

        def reconcile() -> None:
            reconciler.run_once(engine.clock.now())

        start_owned_job(storage, "reconcile", settings.reconcile_interval_s, reconcile, stop=stop)


def start_brokers(brokers: Iterable[Broker], refresh_s: float) -> None:
    """As the worker starts, not inside a request: each broker loads what it keeps up in the
    background (an exchange's market table, refreshed every ``refresh_s``), all at once, and the
    worker waits up to MARKETS_START_WAIT_S for them together."""
    brokers = list(brokers)
    for broker in brokers:
        broker.start(refresh_s=refresh_s)
    deadline = time.monotonic() + MARKETS_START_WAIT_S
    for broker in brokers:
        if not broker.ready(max(0.0, deadline - time.monotonic())):
            logging.getLogger("tvgw").warning(
                "%s: markets not loaded within %.0f s of start-up; serving anyway (alerts for it fail, "
                "saying so, until the background load succeeds)", broker.name, MARKETS_START_WAIT_S,
            )  # fmt: skip


def _preload(signals: SignalService) -> None:
    for line in signals.preload():
        logging.getLogger("tvgw").info("model %s", line)


def _configure_logging(level: str) -> None:
    """One line per alert is logged, so a log record must be cheap: no caller lookup (the
    logging docs' own optimisation; the caller fields still format, as "(unknown file)", 0).

    The record's thread and process fields are left on: they cost a few hundred nanoseconds,
    and switching them off process-wide made them None for every formatter in the process,
    so gunicorn's own lines (``%(process)d``) failed with "--- Logging error ---"."""
    logging._srcfile = None
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def current_gateway() -> Gateway:
    """The gateway of the app handling the current request (for the blueprints)."""
    return get_gateway(current_app)


def get_gateway(app: Flask) -> Gateway:
    gateway = app.extensions["tvgw"]
    assert isinstance(gateway, Gateway)
    return gateway
