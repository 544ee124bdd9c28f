"""The settings' old address, kept only while modules still import it from here.

The composed settings and their loader live in :mod:`settings` (below the web layer, so that
``webhook`` and ``backtest`` can import them while this command package imports those layers).
Import from :mod:`settings`; this module re-exports the same objects and nothing else.
"""

from settings import *  # noqa: F403
from settings import __all__ as __all__
