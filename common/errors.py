"""The one exception root. Every error tvgw raises on purpose derives from :class:`TvgwError`,
so a caller that must never fail (the webhook's answer, a background loop) catches one base;
each layer's tree below it (``engine.exceptions``, ``ml_integration.exceptions``,
``webhook.errors.ApiError``, ``settings.ConfigError``, ``pine.render.RenderError``) says in its
docstrings what the operator must do."""

from __future__ import annotations

__all__ = ["ConfigError", "TvgwError"]


class TvgwError(Exception):
    """Base of every error tvgw raises on purpose."""


class ConfigError(TvgwError, ValueError):
    """Start-up configuration is invalid; the message names the variable (or the record) to fix.
    Raised by the one loader (:mod:`settings`) and by a layer that finds its stored state
    disagrees with the configuration (the paper book's starting balance)."""
