"""Walk-forward backtest: the bundled Pine strategy's alerts, replayed bar by bar and decided by
the engine's own code (``backtest.execution`` is the one seam), with the ML models retrained on
each training window and judged only on the window after it.

Modules: ``data`` (candles and the checks made before any training), ``windows`` (the
walk-forward plan, purge and embargo), ``rules`` (the Pine script's rules in Python),
``baseline`` (the plain RandomForest), ``models`` (per-window training), ``execution`` (the
engine adapter), ``replay`` (the bar loop, stops and targets), ``metrics``, ``report`` (HTML and
JSON) and ``run`` (the whole thing, as ``tvgw backtest`` calls it).
"""

from backtest.errors import BacktestInputError

__all__ = ["BacktestInputError"]
