"""Argument checks every layer shares (a twin in two packages would drift)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import fields
from typing import Any

__all__ = ["refuse_unknown_keys", "require_finite"]


def require_finite(name: str, value: float, *, low: float | None = None, high: float | None = None) -> None:
    """Refuse (ValueError naming ``name``) a value that is not a finite number, or outside
    ``[low, high]``: a NaN or an infinity slips through every comparison otherwise."""
    try:
        finite = math.isfinite(value)
    except TypeError:
        finite = False
    if not finite:
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be at least {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be at most {high}, got {value}")


def refuse_unknown_keys(what: str, keys: Iterable[str], options: Any, *, exclude: Iterable[str] = ()) -> None:
    """Refuse (ValueError naming them and the known ones) ``keys`` that are not fields of the
    dataclass ``options`` (less ``exclude``): a misspelt option that silently took its default
    would train or trade on settings nobody asked for."""
    known = {f.name for f in fields(options)} - set(exclude)
    unknown = sorted(set(keys) - known)
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; known: {sorted(known)}")
