"""The settings the web layer reads, declared as the web layer's own types: who may post (the
allow-list, trusted proxies, the client certificate), the operator API's bearer token, request
limits, the dashboard cookie and where notifications go.

They live here rather than in ``webhook/`` because the composed :class:`settings.Settings` is
built from them and the webhook imports that: a type declared inside ``webhook`` would make the
settings package import the webhook, the cycle this package exists to break. Their names in the
``TVGW_*`` environment and the config file are top-level keys (``allowed_ips``, ``api_token``),
so :class:`WebSettings` is a base the composed settings extend, not a nested table.
"""

from __future__ import annotations

import ipaddress
import re

from pydantic import Field, field_validator

from engine.settings import FrozenSettings

__all__ = ["B64TOKEN", "LOOPBACK", "TRADINGVIEW_IPS", "NotifySettings", "WebSettings"]

#: The addresses TradingView documents as the senders of webhook alerts.
TRADINGVIEW_IPS: tuple[str, ...] = (
    "52.89.214.238",
    "34.212.75.30",
    "54.218.53.128",
    "52.32.178.7",
)
LOOPBACK: tuple[str, ...] = ("127.0.0.0/8", "::1")
#: RFC 6750's b64token: what a bearer token (``TVGW_API_TOKEN``) may be made of.
B64TOKEN = r"[A-Za-z0-9\-._~+/]+=*"


class NotifySettings(FrozenSettings):
    """Where trade, refusal, exchange-failure and drift messages go (all off when unset).

    The bot token and the webhook URLs are secrets (a Discord webhook URL embeds its token):
    they are scrubbed like the passphrases and never appear in a message, a row or a log."""

    telegram_bot_token: str | None = Field(default=None, repr=False)
    telegram_chat_id: str | None = None
    #: Telegram's Bot API base URL (a local fake in tests, or a self-hosted Bot API server).
    telegram_api_url: str = "https://api.telegram.org"
    discord_webhook_url: str | None = Field(default=None, repr=False)
    #: Any HTTPS endpoint that takes a JSON POST (Slack-compatible relays, n8n, your own).
    webhook_url: str | None = Field(default=None, repr=False)
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    #: Messages waiting to be sent; beyond this they are dropped (and counted), not queued forever.
    queue_size: int = Field(default=100, ge=1, le=10_000)


class WebSettings(FrozenSettings):
    """What the HTTP layer (``webhook/``) reads besides the strategies' passphrases, which are
    part of each strategy's table (:class:`engine.settings.StrategySettings`)."""

    #: Client addresses or networks allowed to post alerts; empty means anyone.
    allowed_ips: tuple[str, ...] = (*TRADINGVIEW_IPS, *LOOPBACK)
    trusted_proxies: tuple[str, ...] = ()
    #: Accept only alerts whose TLS client certificate a trusted proxy verified (X-Client-Verify).
    require_client_cert: bool = False
    max_lag_seconds: float = Field(default=60.0, gt=0)
    api_token: str | None = None
    max_body_bytes: int = Field(default=64 * 1024, ge=256)
    max_json_depth: int = Field(default=8, ge=2, le=64)
    #: Send the dashboard's session cookie over HTTPS only: set it when a TLS proxy is in front.
    dashboard_secure_cookie: bool = False
    notify: NotifySettings = NotifySettings()

    @field_validator("allowed_ips", "trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"{item!r} is not an IP address or network") from exc
        return value

    @field_validator("api_token")
    @classmethod
    def _bearer_token(cls, value: str | None) -> str | None:
        if value and re.fullmatch(B64TOKEN, value) is None:
            raise ValueError(
                "must be one RFC 6750 bearer token: letters, digits and - . _ ~ + / (then = padding), "
                "no spaces"
            )
        return value
