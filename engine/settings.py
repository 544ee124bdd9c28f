"""The settings the engine and its brokers read, declared here as the engine's own types.

The :mod:`settings` package composes them (with every other layer's) from defaults, the
``TVGW_*`` environment and the config file, once, at start-up (:func:`settings.load_settings`);
the engine never reads the environment and never imports the settings or command packages.
"""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from engine.alert import whole_leverage
from engine.exits import parse_level, parse_targets

__all__ = [
    "ACCOUNT_NAME",
    "AccountSettings",
    "EngineSettings",
    "FrozenSettings",
    "Mode",
    "PaperMarketLimits",
    "PaperSettings",
    "RiskSettings",
    "Sizing",
    "StrategySettings",
]

Mode = Literal["annotate", "execute", "ml_gate", "hybrid"]
MarginMode = Literal["isolated", "cross"]
Sizing = Literal["alert", "fixed_quote", "kelly"]

#: An account's name: it becomes the ``broker`` column of its orders and positions, part of its
#: client order ids (exchanges cap those near 36 characters) and of its credentials' variable
#: names (``TVGW_ACCOUNT_<NAME>_API_KEY``), so it is short and plain.
ACCOUNT_NAME = r"[a-z][a-z0-9_-]{0,15}"


class FrozenSettings(BaseModel):
    """Settings are validated once and never change while the gateway runs."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class StrategySettings(FrozenSettings):
    """Per-strategy settings: its secret, how its alerts are acted on, and how they are sized."""

    id: str
    #: At least 8 characters: a short secret is guessable, and an alert that carries the secret
    #: anywhere but its passphrase field is refused, which a short one would trip by chance.
    passphrase: str = Field(min_length=8)
    mode: Mode = "execute"
    #: ``alert``: trade the alert's contracts; ``fixed_quote``: spend ``quote_amount``;
    #: ``kelly``: the ML Kelly fraction of equity (falls back to ``alert`` without ML).
    sizing: Sizing = "alert"
    quote_amount: float = Field(default=100.0, gt=0)
    #: Use ``position_size``/``market_position`` as the target position when the alert has them.
    target_position: bool = True
    #: ``ml_gate`` opens only when the signal's confidence, the out-of-sample probability that
    #: the model's side is right, is at least this: 0.55 is a validated edge of five points over
    #: a coin flip (the seed's 0.8 was never reached by its vote-shaped confidence).
    ml_threshold: float = Field(default=0.55, ge=0, le=1)
    hybrid_entry_score: float = 6.0
    timeframe: str = "1h"
    #: Exits an entry gets when neither the alert nor the ML signal gives them (the spellings of
    #: the alert's fields: a price, "2%", "1.5atr"; targets "1%@50, 2%@50").
    stop_loss: str | None = None
    take_profit: str | None = None
    trailing_stop: str | None = None
    #: Move the stop to the entry price once the first take-profit level has filled.
    break_even: bool = False
    #: Entries one position may stack (TradingView's ``pyramiding``): 1 refuses any add to an
    #: open position in the same direction; None (the default) sets no limit.
    pyramiding: int | None = Field(default=None, ge=1)
    #: The accounts ([accounts.<name>]) each alert of this strategy is decided and ordered on,
    #: each with its own sizing, risk limits and position. None: the gateway's default account,
    #: named after TVGW_BROKER (``paper`` or the exchange id), as before accounts existed.
    accounts: tuple[str, ...] | None = Field(default=None, min_length=1)
    #: Seconds after a heartbeat's bar closed before it counts as missed, for this strategy's
    #: charts (None: the gateway's TVGW_HEARTBEAT_GRACE_S; see engine.continuity).
    heartbeat_grace_s: float | None = Field(default=None, gt=0, le=86_400)
    #: An alert whose intended position the booked one has drifted from (a lost or refused
    #: alert) moves to it, repairing the gap, when that trades at most this share of equity
    #: beyond the alert's own order; a larger repair is refused and told (engine.intent).
    max_repair_fraction: float = Field(default=0.25, gt=0, le=10)

    @field_validator("accounts")
    @classmethod
    def _distinct(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"names an account twice ({', '.join(value)}): one order per account")
        return value

    #: Perpetuals (``BTCUSDT.P``): the leverage and margin mode an entry trades at when the
    #: alert names none (None: as the ML signal asks, else 1x; the exchange's margin mode is left
    #: as it is). An alert may ask for up to ``max_leverage`` (None: ``[risk] max_leverage``).
    leverage: float | None = Field(default=None, ge=1, le=125)
    margin_mode: MarginMode | None = None
    max_leverage: float | None = Field(default=None, ge=1, le=125)

    @field_validator("leverage")
    @classmethod
    def _whole_leverage(cls, value: float | None) -> float | None:
        return whole_leverage("strategies.leverage", value)

    @field_validator("stop_loss", "trailing_stop")
    @classmethod
    def _level(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else str(parse_level(f"strategies.{info.field_name}", value))

    @field_validator("take_profit")
    @classmethod
    def _targets(cls, value: str | None) -> str | None:
        if value is not None:
            parse_targets("strategies.take_profit", value)
        return value


class PaperMarketLimits(FrozenSettings):
    """Order limits of one paper market, the shape ccxt gives an exchange market. The default
    resembles a spot market: the paper book refuses what an exchange would refuse."""

    min_amount: float = Field(default=1e-8, gt=0)
    max_amount: float = Field(default=1e9, gt=0)
    amount_step: float = Field(default=1e-8, gt=0)
    min_cost: float = Field(default=1.0, ge=0)
    max_cost: float = Field(default=1e8, gt=0)
    price_tick: float = Field(default=1e-8, gt=0)


class PaperSettings(FrozenSettings):
    """The paper book: where it starts, what a fill costs, and each market's order limits
    (``[paper.limits]`` for every market, ``[paper.markets."BTC/USDT"]`` for one)."""

    starting_balance: float = Field(default=10_000.0, gt=0)
    quote_currency: str = "USDT"
    fee_rate: float = Field(default=0.001, ge=0, lt=0.1)
    slippage_bps: float = Field(default=5.0, ge=0, lt=1000)
    limits: PaperMarketLimits = PaperMarketLimits()
    markets: dict[str, PaperMarketLimits] = Field(default_factory=dict)

    def limits_for(self, symbol: str) -> PaperMarketLimits:
        return self.markets.get(symbol, self.limits)


class RiskSettings(FrozenSettings):
    """Limits the risk manager enforces before any order is sent."""

    risk_per_trade: float = Field(default=0.02, gt=0, le=1)
    max_portfolio_risk: float = Field(default=0.10, gt=0, le=1)
    max_drawdown: float = Field(default=0.20, gt=0, le=1)
    max_position_fraction: float = Field(default=0.25, gt=0, le=10)
    max_open_positions: int = Field(default=5, ge=1)
    daily_loss_limit: float = Field(default=0.05, gt=0, le=1)
    cooldown_seconds: float = Field(default=0.0, ge=0)
    max_leverage: float = Field(default=3.0, ge=1, le=10)


class AccountSettings(FrozenSettings):
    """One account a strategy's alerts can be routed to (``[accounts.<name>]``): a broker of its
    own and its own sizing and risk limits. ``paper`` is a paper book of its own (its ledger is
    keyed by the account's name); any other value is a ccxt exchange id, with the credentials of
    ``TVGW_ACCOUNT_<NAME>_API_KEY`` / ``_SECRET`` / ``_PASSWORD`` (the exchange's own
    ``TVGW_<EXCHANGE>_*`` when none of those is set). What it leaves unset it inherits: the
    sizing from the strategy routed to it, the risk limits from the gateway's ``[risk]`` (the
    loader merges its ``[accounts.<name>.risk]`` over them), the sandbox and API URL from
    ``TVGW_SANDBOX`` and ``TVGW_EXCHANGE_API_URL``, the paper book from ``[paper]``."""

    broker: str = "paper"
    sandbox: bool | None = None
    api_url: str | None = None
    sizing: Sizing | None = None
    quote_amount: float | None = Field(default=None, gt=0)
    #: A paper account's starting cash (``[paper] starting_balance`` when unset).
    starting_balance: float | None = Field(default=None, gt=0)
    risk: RiskSettings = RiskSettings()

    def terms(self, strategy: StrategySettings) -> StrategySettings:
        """``strategy`` as this account trades it: its own sizing where it sets one."""
        update = {"sizing": self.sizing, "quote_amount": self.quote_amount}
        return strategy.model_copy(update={k: v for k, v in update.items() if v is not None})

    def paper_book(self, paper: PaperSettings) -> PaperSettings:
        """The gateway's ``[paper]`` settings with this account's starting cash."""
        if self.starting_balance is None:
            return paper
        return paper.model_copy(update={"starting_balance": self.starting_balance})


class EngineSettings(Protocol):
    """What the engine and building its broker read (:class:`engine.engine.TradingEngine`,
    :func:`engine.brokers.factory.create_broker`); :class:`settings.Settings` provides it."""

    @property
    def broker(self) -> str: ...
    @property
    def sandbox(self) -> bool: ...
    @property
    def exchange_api_url(self) -> str | None: ...
    @property
    def exchange_timeout_ms(self) -> int: ...
    @property
    def exchange_fresh_s(self) -> float: ...
    @property
    def exchange_max_age_s(self) -> float: ...
    @property
    def paper(self) -> PaperSettings: ...
    @property
    def risk(self) -> RiskSettings: ...
    @property
    def database(self) -> str: ...
    @property
    def strategies(self) -> dict[str, StrategySettings]: ...
    @property
    def accounts(self) -> dict[str, AccountSettings]: ...
    @property
    def default_strategy(self) -> str: ...
    @property
    def max_price_deviation(self) -> float: ...
