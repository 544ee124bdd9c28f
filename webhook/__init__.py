"""The Flask application: ``create_app()`` builds one gateway per worker process."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

import orjson
from flask import Flask, current_app
from flask.json.provider import DefaultJSONProvider

from engine.brokers.factory import create_broker
from engine.outcomes import start_outcome_resolver
from storage import Storage
from tvgw.config import Settings, load_settings
from webhook.enrichment import Enricher
from webhook.errors import register_error_handlers
from webhook.gateway import Gateway

__all__ = ["create_app", "current_gateway", "get_gateway"]


def create_app(settings: Settings | None = None, test_config: Mapping[str, Any] | None = None) -> Flask:
    """Application factory: settings (defaults → ``TVGW_*`` → ``test_config``), storage
    migrated, broker and gateway built, blueprints registered."""
    settings = settings or load_settings(test_config)
    _configure_logging(settings.log_level)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json = FastJSONProvider(app)
    storage = Storage(settings.database, synchronous=settings.sqlite_synchronous)
    storage.migrate()
    broker = create_broker(settings, storage)
    market_data = None
    if settings.market_data:
        from ml_integration.market_data import create_exchange

        market_data = create_exchange(
            settings.market_data, timeout_ms=settings.exchange_timeout_ms, api_url=settings.exchange_api_url
        )
    enricher = Enricher(
        settings,
        storage,
        broker.resolve_symbol,
        live_exchange=settings.broker != "paper",
        market_data=market_data,
    )
    if settings.ml_enabled:
        # In the background: a worker that loads many models must not miss gunicorn's
        # heartbeat; an alert that arrives first simply waits for its market's model.
        threading.Thread(target=_preload, args=(enricher,), name="tvgw-preload", daemon=True).start()
    app.extensions["tvgw"] = Gateway(settings, storage, broker, enricher)
    if settings.resolve_interval_s > 0:
        start_outcome_resolver(storage, settings.resolve_interval_s)

    from webhook import api, routes

    app.register_blueprint(routes.bp)
    app.register_blueprint(api.bp)
    register_error_handlers(app)
    logging.getLogger("tvgw").info(
        "gateway ready (pid %d): broker %s, database %s, ML %s", os.getpid(), broker.name, settings.database,
        "on" if settings.ml_enabled else "off",
    )  # fmt: skip
    return app


class FastJSONProvider(DefaultJSONProvider):
    """Responses encoded by orjson (already installed with ccxt): the JSON a webhook answers
    with is on every alert's path. Key order is kept as built."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj, default=str).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)


def _preload(enricher: Enricher) -> None:
    for line in enricher.preload():
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
