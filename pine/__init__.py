"""The bundled TradingView Pine scripts and the renderer that builds the gateway's alert message
into them (see :mod:`pine.render` and the README, "From a TradingView chart to the gateway, step by step")."""

from pine.render import (
    DEFAULT_STRATEGY_ID,
    KINDS,
    STRATEGY_ALERT_MESSAGE,
    WEBHOOK_URL_HINT,
    RenderedScript,
    RenderError,
    render,
)

__all__ = [
    "DEFAULT_STRATEGY_ID",
    "KINDS",
    "STRATEGY_ALERT_MESSAGE",
    "WEBHOOK_URL_HINT",
    "RenderError",
    "RenderedScript",
    "render",
]
