"""Who is posting: the client address (believing X-Forwarded-For only from trusted proxies),
the address allowlist, and the per-strategy passphrase (compared in constant time)."""

from __future__ import annotations

import hmac
import ipaddress
from functools import lru_cache
from typing import Any

from engine.alert import FieldConflict, canonical_fields
from settings import Settings, StrategySettings
from webhook.errors import ApiError

__all__ = ["CLIENT_VERIFY_HEADER", "authenticate", "check_client_certificate", "client_ip", "ip_allowed"]

#: Set by the reverse proxy to its TLS client-certificate verdict (nginx: ``$ssl_client_verify``).
CLIENT_VERIFY_HEADER = "X-Client-Verify"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=64)
def _networks(items: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(i, strict=False) for i in items)


@lru_cache(maxsize=4096)
def _in(address: str, networks: tuple[Network, ...]) -> bool:
    """Cached: senders repeat (TradingView has four addresses), parsing them costs ~10 µs."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == n.version and ip in n for n in networks)


def client_ip(remote_addr: str | None, forwarded_for: str | None, settings: Settings) -> str:
    """The address the request really came from.

    ``X-Forwarded-For`` is believed only when the direct peer is a trusted proxy; then the
    chain is read from the right, skipping trusted proxies, and the first untrusted hop is the
    client. A client can put anything at the left of that header, so leftmost is never taken
    on trust.
    """
    peer = remote_addr or ""
    trusted = _networks(settings.trusted_proxies)
    if not forwarded_for or not trusted or not _in(peer, trusted):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _in(hop, trusted):
            return hop
    return hops[0] if hops else peer


def ip_allowed(ip: str, settings: Settings) -> bool:
    return not settings.allowed_ips or _in(ip, _networks(settings.allowed_ips))


def check_client_certificate(remote_addr: str | None, verdict: str | None, settings: Settings) -> None:
    """With ``TVGW_REQUIRE_CLIENT_CERT``, refuse (403 ``client_certificate``) unless a trusted
    proxy says it verified the sender's TLS client certificate.

    TLS ends at the proxy, so only the proxy can see the certificate; its verdict header is
    believed only from a ``TVGW_TRUSTED_PROXIES`` peer, since anyone else can write that header.
    """
    if not settings.require_client_cert:
        return
    peer = remote_addr or ""
    if not _in(peer, _networks(settings.trusted_proxies)):
        raise ApiError(
            403,
            "client_certificate",
            f"TVGW_REQUIRE_CLIENT_CERT is on but {peer or 'the peer'} is not a trusted proxy "
            "(TVGW_TRUSTED_PROXIES): only the TLS proxy can vouch for a client certificate",
        )
    if (verdict or "").strip() != "SUCCESS":
        shown = (verdict or "absent").strip()[:120]
        raise ApiError(
            403,
            "client_certificate",
            f"no verified TLS client certificate ({CLIENT_VERIFY_HEADER}: {shown}): the sender "
            "did not present a certificate from the configured authority",
        )


def authenticate(data: dict[str, Any], settings: Settings) -> StrategySettings:
    """The strategy this alert acts for, if the passphrase it carries is that strategy's; else a
    401 :class:`ApiError`. Two spellings of one field that disagree are a 400 before any secret
    is compared: the alert is ambiguous, about who sent it (``strategy`` vs ``strategy_id``,
    ``passphrase`` vs ``secret``) or about what it asks.

    The strategy id and passphrase are read through the alert schema's own normalisation
    (:func:`engine.alert.canonical_fields`), so every alias, nesting and key case the schema
    accepts names the strategy that is authenticated, and the one whose mode, sizing and limits
    apply.
    """
    try:
        fields, _ = canonical_fields(data)
    except FieldConflict as exc:
        raise _conflict_error(exc) from None
    strategy_id, passphrase = fields.get("strategy_id"), fields.get("passphrase")
    if strategy_id is not None and not isinstance(strategy_id, str):
        raise ApiError(401, "unauthorized", "strategy_id must be a string")
    strategy = settings.strategy(strategy_id)
    if strategy is None:
        # Still compare, so the time taken does not tell which strategy ids exist.
        hmac.compare_digest(b"x" * 32, str(passphrase or "").encode())
        raise ApiError(401, "unauthorized", f"unknown strategy {strategy_id or settings.default_strategy!r}")
    if passphrase is None or (isinstance(passphrase, str) and not passphrase):
        raise ApiError(401, "unauthorized", 'missing passphrase: add a "passphrase" field to the alert')
    if not isinstance(passphrase, str) or not hmac.compare_digest(
        passphrase.encode(), strategy.passphrase.encode()
    ):
        raise ApiError(401, "unauthorized", f"wrong passphrase for strategy {strategy.id!r}")
    return strategy


def _conflict_error(exc: FieldConflict) -> ApiError:
    """400 naming the two spellings that disagree (never their values when secret)."""
    return ApiError(400, "conflicting_fields", str(exc), where=" and ".join(exc.fields))
