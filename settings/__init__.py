"""The gateway's settings, composed once at start-up from every layer's own settings types.

This package sits below the packages that read the composed settings (``webhook``, ``backtest``
and the ``tvgw`` command) and above those that declare their own (``engine``, ``ml_integration``,
``storage``), so that the command package imports the web layer and the web layer imports its
settings without a cycle: nothing here imports ``webhook``, ``backtest`` or ``tvgw``
(``tests/test_layers.py`` holds it to that).
"""

from common.errors import ConfigError
from engine.settings import AccountSettings, PaperMarketLimits, PaperSettings, RiskSettings, StrategySettings
from settings.loader import Settings, account_credentials, exchange_credentials, load_settings, secret_values
from settings.web import B64TOKEN, TRADINGVIEW_IPS, NotifySettings, WebSettings

__all__ = [
    "B64TOKEN",
    "TRADINGVIEW_IPS",
    "AccountSettings",
    "ConfigError",
    "NotifySettings",
    "PaperMarketLimits",
    "PaperSettings",
    "RiskSettings",
    "Settings",
    "StrategySettings",
    "WebSettings",
    "account_credentials",
    "exchange_credentials",
    "load_settings",
    "secret_values",
]
