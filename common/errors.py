"""The one exception root. Every error tvgw raises on purpose derives from :class:`TvgwError`,
so a caller that must never fail (the webhook's answer, a background loop) catches one base;
each layer's tree below it (``engine.exceptions``, ``ml_integration.exceptions``,
``webhook.errors.ApiError``, ``tvgw.config.ConfigError``, ``pine.render.RenderError``) says in its
docstrings what the operator must do."""

from __future__ import annotations

__all__ = ["TvgwError"]


class TvgwError(Exception):
    """Base of every error tvgw raises on purpose."""
