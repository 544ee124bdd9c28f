"""Build the configured broker: ``paper`` or any ccxt exchange id."""

from __future__ import annotations

from collections.abc import Mapping

from engine.brokers.base import Broker
from engine.brokers.paper import PaperBroker
from engine.settings import EngineSettings
from storage import Storage

__all__ = ["create_broker"]


def create_broker(
    settings: EngineSettings, storage: Storage, credentials: Mapping[str, str] | None = None
) -> Broker:
    """The broker ``settings.broker`` names. Exchange ``credentials`` are read from the
    environment by the command package (``tvgw.config.exchange_credentials``) and handed in:
    the engine never reads the environment."""
    if settings.broker == "paper":
        return PaperBroker(storage, settings.paper, max_leverage=settings.risk.max_leverage)
    from engine.brokers.ccxt_broker import CcxtBroker

    return CcxtBroker(
        settings.broker,
        credentials=dict(credentials or {}),
        sandbox=settings.sandbox,
        api_url=settings.exchange_api_url,
        timeout_ms=settings.exchange_timeout_ms,
        # One reconciliation read after a lost answer keeps the worst case (order timeout +
        # lookup + backoff) near 2 x timeout, inside TradingView's 3 s at the 1.2 s default.
        read_retries=1,
        backoff_s=0.1,
        quote_currency=settings.paper.quote_currency,
    )
