"""tvgw: a TradingView webhook signal gateway. The ``tvgw`` command lives in ``tvgw.cli``."""

from importlib.metadata import version

#: The installed distribution's version: pyproject.toml is its one source.
__version__ = version("tvgw")
