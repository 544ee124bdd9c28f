"""Shared fixtures. Exchange fixtures live in tests/fake_exchange.py (loaded as a plugin)."""

from __future__ import annotations

pytest_plugins = ["tests.fake_exchange"]
