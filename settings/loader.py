"""The one configuration loader: every layer's settings composed into one :class:`Settings`.

Settings are read once at start-up: defaults, then ``TVGW_*`` environment variables, then an
optional TOML file (``TVGW_CONFIG``) for per-strategy settings, then a test override. They are
validated here and passed down as a frozen object; nothing else in the project reads
``os.environ`` (exchange credentials included: see ``exchange_credentials``).

A bad value stops start-up with a :class:`ConfigError` naming the variable, because a trading
gateway that starts with a half-understood configuration is worse than one that does not start.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from common.errors import ConfigError
from engine.continuity import ContinuitySettings
from engine.settings import (
    ACCOUNT_NAME,
    AccountSettings,
    FrozenSettings,
    PaperSettings,
    RiskSettings,
    StrategySettings,
)
from settings.web import LOOPBACK, TRADINGVIEW_IPS, WebSettings
from storage.retention import RetentionPolicy

__all__ = [
    "Settings",
    "account_credentials",
    "exchange_credentials",
    "load_settings",
    "secret_values",
]

#: Variables handed to the sentiment sources (keys stay out of the repository and of alerts).
SENTIMENT_VARIABLES = (
    "TVGW_NEWSAPI_KEY", "TVGW_REDDIT_CLIENT_ID", "TVGW_REDDIT_CLIENT_SECRET", "TVGW_X_BEARER_TOKEN",
    "TVGW_RSS_FEEDS",
)  # fmt: skip


class RetentionSettings(FrozenSettings):
    """How long the store keeps what piles up under a steady alert stream (days; 0 keeps it
    forever), and how often the one pruner runs (``storage.retention`` says what is never pruned).
    A year of equity and predictions covers the dashboard's curves and every accuracy window."""

    equity_days: float = Field(default=365.0, ge=0)
    predictions_days: float = Field(default=365.0, ge=0)
    notifications_days: float = Field(default=30.0, ge=0)
    alert_bodies_days: float = Field(default=90.0, ge=0)
    #: Heartbeats and the marks order alerts leave on their chart's feed (engine.continuity).
    feed_marks_days: float = Field(default=30.0, ge=0)
    #: Seconds between pruning runs; one worker of one host runs each (0: no background pruning).
    prune_interval_s: float = Field(default=3600.0, ge=0)

    def policy(self) -> RetentionPolicy:
        return RetentionPolicy(
            equity_days=self.equity_days, predictions_days=self.predictions_days,
            notifications_days=self.notifications_days, alert_bodies_days=self.alert_bodies_days,
            feed_marks_days=self.feed_marks_days,
        )  # fmt: skip


#: Shortest periods that keep what the gateway reads: the day's opening equity (daily loss),
#: the dashboard's 30 days of accuracy, a notification's day (its key names it), a body's day,
#: the week of heartbeats the daily continuity summary counts by default.
MIN_RETENTION_DAYS = {"equity_days": 2.0, "predictions_days": 30.0, "notifications_days": 2.0,
                      "alert_bodies_days": 1.0, "feed_marks_days": 7.0}  # fmt: skip


class Settings(WebSettings):
    """Everything the gateway needs to know at start-up: the web layer's settings
    (:class:`settings.web.WebSettings`), the engine's (its types from :mod:`engine.settings`; it
    reads them through :class:`engine.settings.EngineSettings`), and what serving, outcome
    tracking and training read (each through a Protocol of its own in ``ml_integration``)."""

    #: A SQLite file path (one machine), or a ``postgresql://`` URL (several gateway hosts).
    database: str = "var/tvgw.sqlite"
    model_dir: Path = Path("models")
    broker: str = "paper"
    sandbox: bool = True
    #: Base URL replacing the exchange's REST API (a local fake exchange in tests, a proxy).
    exchange_api_url: str | None = None
    exchange_timeout_ms: int = Field(default=1_200, ge=100, le=60_000)
    #: Seconds between reloads of an exchange's market table (loaded as each worker starts and
    #: then in the background; no alert waits on it).
    markets_refresh_s: float = Field(default=3_600.0, ge=1)
    #: An exchange's ticker or equity younger than this is used as it is; an older one is read
    #: again (an alert waits a fraction of a second for that, then takes the older one).
    exchange_fresh_s: float = Field(default=5.0, gt=0)
    #: The oldest ticker or equity reading an alert may still be decided with while the exchange
    #: does not answer; after that the alert fails, saying why.
    exchange_max_age_s: float = Field(default=60.0, gt=0)
    #: Largest relative distance between an alert's price and the market price the gateway
    #: knows (candle store close or ticker); beyond it the alert is refused.
    max_price_deviation: float = Field(default=0.03, gt=0, le=1)
    #: ``NORMAL`` (WAL) loses nothing committed when a process dies (SIGKILL, OOM); ``FULL``
    #: also survives power loss or a kernel crash, at an fsync per commit (see BENCHMARKS.md).
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    default_strategy: str = "default"
    strategies: dict[str, StrategySettings] = Field(default_factory=dict)
    #: Named accounts strategies route to (``[accounts.<name>]``), besides the default account
    #: named after ``broker``.
    accounts: dict[str, AccountSettings] = Field(default_factory=dict)
    paper: PaperSettings = PaperSettings()
    risk: RiskSettings = RiskSettings()
    ml_enabled: bool = True
    ml_budget_ms: float = Field(default=500.0, gt=0)
    #: ccxt exchange id whose public candles keep the candle store current (None: alert bars
    #: only). Defaults to the broker's exchange when trading live.
    market_data: str | None = None
    #: How long an alert may wait for that incremental fetch; it finishes in the background.
    market_data_budget_ms: float = Field(default=400.0, gt=0)
    #: Seconds between outcome-resolver runs in each worker (0 turns the schedule off).
    resolve_interval_s: float = Field(default=60.0, ge=0)
    #: Seconds between checks of the open exits in each worker: the paper book's against the
    #: stored bars; on an exchange, what its resting exits did, trailing stops, and the exits the
    #: gateway holds itself (0 turns it off: paper exits then act only when an alert for their
    #: market arrives, and an exchange's exit fills are not recorded until it is on again).
    exit_watch_interval_s: float = Field(default=5.0, ge=0)
    #: Seconds between passes of the order lifecycle in each worker (one worker acts, holding
    #: the ``orders`` lease): orders the exchange has not closed are asked about by client id,
    #: each on its own back-off (0.5 s doubling to 30 s). 0 turns it off (then only start-up
    #: recovery settles them).
    order_poll_interval_s: float = Field(default=1.0, ge=0)
    #: Seconds after which an order the exchange still does not know (sent, but its answer was
    #: lost) is closed as ``not_placed`` and stops counting as exposure.
    order_not_found_grace_s: float = Field(default=60.0, ge=0)
    #: Seconds between reconciler passes (one worker acts, holding the ``reconcile`` lease):
    #: booked positions against the exchange's balances (spot) or positions (perpetuals). 0
    #: turns the schedule off (``tvgw reconcile`` still checks on demand).
    reconcile_interval_s: float = Field(default=10.0, ge=0)
    drift_min_accuracy: float = Field(default=0.5, ge=0, le=1)
    drift_max_drawdown: float = Field(default=0.15, gt=0, le=1)
    drift_min_sharpe: float = 0.5
    drift_window_days: float = Field(default=7.0, gt=0)
    #: Champion and challenger: resolved alerts both versions predicted before a challenger can
    #: be promoted, and resolved predictions of the champion before it is judged against the
    #: base rate (ML-driven sizing off when it is no better).
    champion_min_outcomes: int = Field(default=100, ge=10, le=100_000)
    #: The newest resolved alerts each of those tests reads (a rolling window).
    champion_window: int = Field(default=500, ge=10, le=100_000)
    #: Seconds between background sentiment refreshes for models that use sentiment (0: off).
    sentiment_refresh_s: float = Field(default=300.0, ge=0)
    #: Dask scheduler address (``tcp://host:8786``) that ``tvgw train`` sends batch training
    #: and tuning trials to; None trains in this process (joblib).
    dask_scheduler: str | None = None
    #: The news/social source settings (TVGW_NEWSAPI_KEY, TVGW_REDDIT_CLIENT_ID,
    #: TVGW_REDDIT_CLIENT_SECRET, TVGW_X_BEARER_TOKEN, TVGW_RSS_FEEDS), as read at start-up.
    sentiment_env: dict[str, str] = Field(default_factory=dict, repr=False)
    log_level: str = "INFO"
    #: Heartbeats and sequence numbers: the grace, the overdue check's rhythm, the /healthz window.
    continuity: ContinuitySettings = ContinuitySettings()
    retention: RetentionSettings = RetentionSettings()

    @field_validator("database", mode="before")
    @classmethod
    def _database_text(cls, value: object) -> object:
        """A path (``Path`` from code, text from the environment) or a PostgreSQL URL, as text:
        a URL must not pass through ``Path``, which would fold its ``//``."""
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("accounts")
    @classmethod
    def _account_names(cls, value: dict[str, AccountSettings]) -> dict[str, AccountSettings]:
        for name in value:
            if re.fullmatch(ACCOUNT_NAME, name) is None:
                raise ValueError(
                    f"account name {name!r}: use 1 to 16 lower-case letters, digits, _ or -, "
                    "starting with a letter (it becomes part of client order ids)"
                )
        return value

    @model_validator(mode="after")
    def _readings_age_in_order(self) -> Settings:
        if self.exchange_max_age_s < self.exchange_fresh_s:
            raise ValueError(
                f"exchange_max_age_s ({self.exchange_max_age_s:g}) must be at least exchange_fresh_s "
                f"({self.exchange_fresh_s:g}): a reading cannot expire before it goes stale"
            )
        return self

    def strategy(self, strategy_id: str | None) -> StrategySettings | None:
        """The settings of ``strategy_id`` (the default strategy when None), or None."""
        return self.strategies.get(strategy_id or self.default_strategy)


# --- environment parsing ------------------------------------------------------------------

#: TVGW_* variable -> (settings key path, parser name). The names are a public interface.
_ENV: dict[str, tuple[tuple[str, ...], str]] = {
    "TVGW_DATABASE": (("database",), "str"),
    "TVGW_MODEL_DIR": (("model_dir",), "str"),
    "TVGW_BROKER": (("broker",), "str"),
    "TVGW_SANDBOX": (("sandbox",), "bool"),
    "TVGW_EXCHANGE_API_URL": (("exchange_api_url",), "str"),
    "TVGW_EXCHANGE_TIMEOUT_MS": (("exchange_timeout_ms",), "str"),
    "TVGW_MARKETS_REFRESH_S": (("markets_refresh_s",), "str"),
    "TVGW_EXCHANGE_FRESH_S": (("exchange_fresh_s",), "str"),
    "TVGW_EXCHANGE_MAX_AGE_S": (("exchange_max_age_s",), "str"),
    "TVGW_ALLOWED_IPS": (("allowed_ips",), "ips"),
    "TVGW_TRUSTED_PROXIES": (("trusted_proxies",), "ips"),
    "TVGW_REQUIRE_CLIENT_CERT": (("require_client_cert",), "bool"),
    "TVGW_MAX_LAG_SECONDS": (("max_lag_seconds",), "str"),
    "TVGW_MAX_PRICE_DEVIATION": (("max_price_deviation",), "str"),
    "TVGW_API_TOKEN": (("api_token",), "str"),
    "TVGW_MAX_BODY_BYTES": (("max_body_bytes",), "str"),
    "TVGW_SQLITE_SYNCHRONOUS": (("sqlite_synchronous",), "upper"),
    "TVGW_STRATEGY_MODE": (("_default_strategy", "mode"), "str"),
    "TVGW_ML_ENABLED": (("ml_enabled",), "bool"),
    "TVGW_ML_BUDGET_MS": (("ml_budget_ms",), "str"),
    "TVGW_MARKET_DATA": (("market_data",), "str"),
    "TVGW_MARKET_DATA_BUDGET_MS": (("market_data_budget_ms",), "str"),
    "TVGW_RESOLVE_INTERVAL_S": (("resolve_interval_s",), "str"),
    "TVGW_EXIT_WATCH_INTERVAL_S": (("exit_watch_interval_s",), "str"),
    "TVGW_ORDER_POLL_INTERVAL_S": (("order_poll_interval_s",), "str"),
    "TVGW_ORDER_NOT_FOUND_GRACE_S": (("order_not_found_grace_s",), "str"),
    "TVGW_RECONCILE_INTERVAL_S": (("reconcile_interval_s",), "str"),
    "TVGW_SENTIMENT_REFRESH_S": (("sentiment_refresh_s",), "str"),
    "TVGW_CHAMPION_MIN_OUTCOMES": (("champion_min_outcomes",), "str"),
    "TVGW_CHAMPION_WINDOW": (("champion_window",), "str"),
    "TVGW_DASK_SCHEDULER": (("dask_scheduler",), "str"),
    "TVGW_PAPER_BALANCE": (("paper", "starting_balance"), "str"),
    "TVGW_PAPER_FEE_RATE": (("paper", "fee_rate"), "str"),
    "TVGW_PAPER_SLIPPAGE_BPS": (("paper", "slippage_bps"), "str"),
    "TVGW_LOG_LEVEL": (("log_level",), "upper"),
    "TVGW_DASHBOARD_SECURE_COOKIE": (("dashboard_secure_cookie",), "bool"),
    "TVGW_TELEGRAM_BOT_TOKEN": (("notify", "telegram_bot_token"), "str"),
    "TVGW_TELEGRAM_CHAT_ID": (("notify", "telegram_chat_id"), "str"),
    "TVGW_TELEGRAM_API_URL": (("notify", "telegram_api_url"), "str"),
    "TVGW_DISCORD_WEBHOOK_URL": (("notify", "discord_webhook_url"), "str"),
    "TVGW_NOTIFY_WEBHOOK_URL": (("notify", "webhook_url"), "str"),
    "TVGW_NOTIFY_TIMEOUT_S": (("notify", "timeout_s"), "str"),
    "TVGW_NOTIFY_QUEUE_SIZE": (("notify", "queue_size"), "str"),
    "TVGW_HEARTBEAT_GRACE_S": (("continuity", "grace_s"), "str"),
    "TVGW_CONTINUITY_CHECK_S": (("continuity", "check_interval_s"), "str"),
    "TVGW_GAP_PROBLEM_S": (("continuity", "problem_window_s"), "str"),
    "TVGW_RETAIN_EQUITY_DAYS": (("retention", "equity_days"), "str"),
    "TVGW_RETAIN_PREDICTIONS_DAYS": (("retention", "predictions_days"), "str"),
    "TVGW_RETAIN_NOTIFICATIONS_DAYS": (("retention", "notifications_days"), "str"),
    "TVGW_RETAIN_ALERT_BODIES_DAYS": (("retention", "alert_bodies_days"), "str"),
    "TVGW_RETAIN_FEED_MARKS_DAYS": (("retention", "feed_marks_days"), "str"),
    "TVGW_PRUNE_INTERVAL_S": (("retention", "prune_interval_s"), "str"),
}


def _parse_bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}={raw!r}: expected true or false")


def _parse_ips(raw: str) -> tuple[str, ...]:
    """Comma list; ``tradingview`` and ``loopback`` expand; ``any`` (or empty) means no list."""
    items: list[str] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part or part.lower() == "any":
            continue
        if part.lower() == "tradingview":
            items.extend(TRADINGVIEW_IPS)
        elif part.lower() == "loopback":
            items.extend(LOOPBACK)
        else:
            items.append(part)
    return tuple(items)


def _set_path(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value


def _from_environment(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Settings values from ``environ`` and, for error messages, which variable set each key."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, (path, kind) in _ENV.items():
        if name not in environ:
            continue
        raw = environ[name]
        value: Any
        if kind == "bool":
            value = _parse_bool(name, raw)
        elif kind == "ips":
            value = _parse_ips(raw)
        elif kind == "upper":
            value = raw.strip().upper()
        else:
            value = raw.strip() or None if name == "TVGW_API_TOKEN" else raw.strip()
        _set_path(values, path, value)
        origin[".".join(p for p in path if not p.startswith("_"))] = name
    return values, origin


def _read_config_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"TVGW_CONFIG={path!r}: cannot read the file ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"TVGW_CONFIG={path!r}: not valid TOML ({exc})") from exc


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _strategies(values: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Build the strategy table: the default strategy's secret comes from TVGW_PASSPHRASE."""
    default_id = values.get("default_strategy", "default")
    table: dict[str, Any] = dict(values.get("strategies", {}))
    default_extra = values.pop("_default_strategy", {})
    passphrase = environ.get("TVGW_PASSPHRASE")
    if passphrase is not None or default_extra or default_id not in table:
        entry = dict(table.get(default_id, {}))
        entry.update(default_extra)
        if passphrase is not None:
            entry["passphrase"] = passphrase
        if entry.get("passphrase"):
            table[default_id] = entry
    for strategy_id, entry in table.items():
        if isinstance(entry, dict):
            entry.setdefault("id", strategy_id)
            env_key = f"TVGW_PASSPHRASE_{strategy_id.upper().replace('-', '_')}"
            if env_key in environ:
                entry["passphrase"] = environ[env_key]
    values["strategies"] = table


def _accounts(values: dict[str, Any]) -> None:
    """Each account's risk limits start from the gateway's ``[risk]``: its own
    ``[accounts.<name>.risk]`` overrides only the limits it names."""
    table = values.get("accounts")
    base = values.get("risk", {})
    if not isinstance(table, Mapping) or not isinstance(base, Mapping):
        return  # the validation names what is wrong
    accounts = {}
    for name, entry in table.items():
        if isinstance(entry, Mapping) and isinstance(entry.get("risk", {}), Mapping):
            entry = {**entry, "risk": _merge(dict(base), entry.get("risk", {}))}
        accounts[name] = entry
    values["accounts"] = accounts


def _check_routes(settings: Settings) -> None:
    """Every account a strategy names exists, and no account hides the default one."""
    default = settings.broker
    if default in settings.accounts:
        raise ConfigError(
            f"[accounts.{default}]: {default!r} is the default account's name (after TVGW_BROKER); "
            "give this account another name"
        )
    known = [default, *settings.accounts]
    for strategy in settings.strategies.values():
        for name in strategy.accounts or ():
            if name not in known:
                raise ConfigError(
                    f"strategies.{strategy.id}.accounts names unknown account {name!r}: define "
                    f"[accounts.{name}] in the TVGW_CONFIG file (known accounts: {', '.join(known)})"
                )


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read and validate the settings once; raise :class:`ConfigError` naming the culprit."""
    env = os.environ if environ is None else environ
    values, origin = _from_environment(env)
    if env.get("TVGW_CONFIG"):
        values = _merge(_read_config_file(env["TVGW_CONFIG"]), values)
    if overrides:
        values = _merge(values, overrides)
    values.setdefault("sentiment_env", {k: env[k] for k in SENTIMENT_VARIABLES if k in env})
    _strategies(values, env)
    _accounts(values)
    default_id = values.get("default_strategy", "default")
    for name, key in (("TVGW_STRATEGY_MODE", "mode"), ("TVGW_PASSPHRASE", "passphrase")):
        if name in env:
            origin[f"strategies.{default_id}.{key}"] = name
    try:
        settings = Settings.model_validate(values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            source = origin.get(key) or (f"TVGW_CONFIG [{key}]" if env.get("TVGW_CONFIG") else key)
            secret = _SECRET_SETTING.search(key)
            got = "" if secret else f" (got {err.get('input')!r})"  # a bad secret is still a secret
            problems.append(f"{source}: {err['msg']}{got}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from exc
    if settings.market_data is None and settings.broker != "paper":
        settings = settings.model_copy(update={"market_data": settings.broker})
    if settings.require_client_cert and not settings.trusted_proxies:
        raise ConfigError(
            "TVGW_REQUIRE_CLIENT_CERT is on but TVGW_TRUSTED_PROXIES is empty: the client certificate "
            "is verified by the TLS proxy, so name that proxy's address"
        )
    _check_routes(settings)
    _check_retention(settings, origin)
    if settings.champion_window < settings.champion_min_outcomes:
        raise ConfigError(
            f"TVGW_CHAMPION_WINDOW ({settings.champion_window}) is below TVGW_CHAMPION_MIN_OUTCOMES "
            f"({settings.champion_min_outcomes}): no test could ever have enough outcomes"
        )
    if not settings.strategies:
        raise ConfigError(
            "no strategy has a passphrase: set TVGW_PASSPHRASE (the default strategy's secret) "
            "or define [strategies.<id>] with a passphrase in the TVGW_CONFIG file"
        )
    return settings


def _check_retention(settings: Settings, origin: Mapping[str, str]) -> None:
    """A retention period shorter than what the gateway reads back would prune it: refused."""
    for name, least in MIN_RETENTION_DAYS.items():
        days = getattr(settings.retention, name)
        if name == "predictions_days":
            least = max(least, settings.drift_window_days)
        if 0 < days < least:
            source = origin.get(f"retention.{name}", f"[retention] {name}")
            raise ConfigError(
                f"{source}={days:g} days would prune what the gateway still reads: "
                f"use at least {least:g} days (or 0 to keep everything)"
            )


def secret_values(settings: Settings, environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Every secret the gateway holds: the strategies' passphrases, the API token, the broker's
    exchange credentials and the news sources' keys. Nothing of these may be written anywhere
    (the webhook's redaction scrubs them from rows, logs and answers)."""
    values = [s.passphrase for s in settings.strategies.values()]
    values += [settings.api_token or ""]
    if settings.broker != "paper":
        values += exchange_credentials(settings.broker, environ).values()
    for name, account in settings.accounts.items():
        if account.broker != "paper":
            values += account_credentials(name, account, environ).values()
    values += [v for k, v in settings.sentiment_env.items() if _SECRET_SETTING.search(k)]
    notify = settings.notify
    values += [notify.telegram_bot_token or "", notify.discord_webhook_url or "", notify.webhook_url or ""]
    return tuple(v for v in values if v)


#: What names a secret, in a setting's key path or an environment variable's name: one rule for
#: what :func:`secret_values` scrubs and what a configuration error never echoes.
_SECRET_SETTING = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSPHRASE|WEBHOOK_URL|SENTIMENT_ENV", re.IGNORECASE)


def exchange_credentials(exchange_id: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """API credentials for ``exchange_id`` from ``TVGW_<EXCHANGE>_API_KEY`` / ``_SECRET`` /
    ``_PASSWORD``. Credentials never come from an alert body or a config file in the repo."""
    return _credentials(f"TVGW_{exchange_id.upper()}_", environ)


def account_credentials(
    name: str, account: AccountSettings, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """API credentials of the account ``name``: ``TVGW_ACCOUNT_<NAME>_API_KEY`` / ``_SECRET`` /
    ``_PASSWORD`` (``-`` in the name spelled ``_``) when any of them is set, else the exchange's
    own (:func:`exchange_credentials`), so one account per exchange needs nothing new."""
    own = _credentials(f"TVGW_ACCOUNT_{name.upper().replace('-', '_')}_", environ)
    return own or exchange_credentials(account.broker, environ)


def _credentials(prefix: str, environ: Mapping[str, str] | None) -> dict[str, str]:
    env = os.environ if environ is None else environ
    creds = {}
    for suffix, key in (("API_KEY", "apiKey"), ("SECRET", "secret"), ("PASSWORD", "password")):
        if env.get(prefix + suffix):
            creds[key] = env[prefix + suffix]
    return creds
