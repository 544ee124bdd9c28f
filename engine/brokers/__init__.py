"""Brokers: one interface (``Broker``), a paper book and any ccxt exchange behind it."""

from engine.brokers.base import Broker, OrderRequest, OrderResult

__all__ = ["Broker", "OrderRequest", "OrderResult"]
