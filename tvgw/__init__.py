"""tvgw: a TradingView webhook signal gateway. The ``tvgw`` command lives in ``tvgw.cli``."""

__version__ = "0.1.0"
