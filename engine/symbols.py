"""TradingView tickers to ccxt unified symbols.

TradingView names a market ``BINANCE:BTCUSDT`` (spot) or ``BINANCE:BTCUSDT.P`` (perpetual);
ccxt names the same markets ``BTC/USDT`` and ``BTC/USDT:USDT``. An alert carries the former, a
broker needs the latter. With the exchange's markets at hand (``exchange.load_markets()``) the
mapping is exact: the market whose exchange id or base+quote matches, spot for plain tickers and
the linear swap for ``.P``. Without them (the paper broker) the ticker is split on a list of known
quote currencies, longest first, so ``BTCTUSD`` is BTC/TUSD and not BTCT/USD.

Pure functions: no network, no state.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.exceptions import UnknownSymbolError

__all__ = [
    "KNOWN_QUOTES",
    "ParsedTicker",
    "base_currency",
    "is_contract",
    "parse_tradingview_ticker",
    "to_ccxt_symbol",
]

#: Quote currencies recognised when no market list is available, longest matched first.
KNOWN_QUOTES: tuple[str, ...] = tuple(
    sorted(
        (
            "USDT", "USDC", "BUSD", "FDUSD", "TUSD", "USDP", "DAI", "USD", "EUR", "GBP",
            "JPY", "TRY", "BRL", "AUD", "BTC", "ETH", "BNB",
        ),
        key=lambda q: (-len(q), q),
    )
)  # fmt: skip

#: TradingView's suffixes for perpetual contracts (``BTCUSDT.P``, older ``BTCUSDTPERP``).
_PERPETUAL_SUFFIXES = (".P", "PERP")
_PAIR = re.compile(r"^[A-Z0-9]+$")
_UNIFIED = re.compile(r"^[A-Z0-9]+/[A-Z0-9]+(:[A-Z0-9]+)?$")


@dataclass(frozen=True)
class ParsedTicker:
    """A TradingView ticker taken apart.

    ``base_quote`` is the pair as TradingView writes it (``BTCUSDT``), or the whole symbol when the
    ticker was already in ccxt form (``BTC/USDT``); ``unified`` says which.
    """

    exchange: str | None
    base_quote: str
    perpetual: bool
    unified: bool = False


def parse_tradingview_ticker(ticker: str, exchange: str | None = None) -> ParsedTicker:
    """Split ``[EXCHANGE:]PAIR[.P]`` (or a ccxt symbol) into its parts.

    ``exchange`` is the alert's separate exchange field (TradingView's ``{{exchange}}``); it is
    used when the ticker has no prefix and must agree with the prefix when it has one.
    """
    if not isinstance(ticker, str) or not ticker.strip():
        raise UnknownSymbolError(f"empty ticker {ticker!r}: expected e.g. BINANCE:BTCUSDT or BTC/USDT")
    text = ticker.strip().upper()
    wanted_exchange = exchange.strip().upper() if exchange and exchange.strip() else None
    if "/" in text:
        if not _UNIFIED.match(text):
            raise UnknownSymbolError(
                f"ticker {ticker!r} looks like a ccxt symbol but is not BASE/QUOTE[:SETTLE]"
            )
        return ParsedTicker(wanted_exchange, text, perpetual=is_contract(text), unified=True)
    prefix, sep, pair = text.rpartition(":")
    if sep:
        if not prefix or not _PAIR.match(prefix):
            raise UnknownSymbolError(f"ticker {ticker!r} has a malformed exchange prefix {prefix!r}")
        if wanted_exchange and wanted_exchange != prefix:
            raise UnknownSymbolError(
                f"ticker {ticker!r} names exchange {prefix} but the alert says {wanted_exchange}"
            )
        wanted_exchange = prefix
    perpetual = False
    for suffix in _PERPETUAL_SUFFIXES:
        if pair.endswith(suffix) and len(pair) > len(suffix):
            pair, perpetual = pair[: -len(suffix)], True
            break
    if not _PAIR.match(pair):
        raise UnknownSymbolError(
            f"ticker {ticker!r}: pair {pair!r} must be letters and digits only, e.g. BTCUSDT or BTCUSDT.P"
        )
    return ParsedTicker(wanted_exchange, pair, perpetual)


def to_ccxt_symbol(
    ticker: str, markets: Mapping[str, Mapping[str, Any]] | None = None, exchange: str | None = None
) -> str:
    """The ccxt unified symbol for a TradingView ticker.

    ``markets`` is ccxt's ``exchange.markets`` (symbol -> market dict). Given, the answer is a
    market that really exists there, and an unknown ticker's error suggests the closest ones.
    Omitted, the ticker is split on :data:`KNOWN_QUOTES`.
    """
    parsed = parse_tradingview_ticker(ticker, exchange)
    if markets is None:
        return _split_on_known_quote(ticker, parsed)
    if parsed.unified:
        if parsed.base_quote in markets:
            return parsed.base_quote
        raise UnknownSymbolError(f"no market {parsed.base_quote} on this exchange{_hint(parsed, markets)}")
    return _match_market(ticker, parsed, markets)


def _split_on_known_quote(ticker: str, parsed: ParsedTicker) -> str:
    if parsed.unified:
        return parsed.base_quote
    for quote in KNOWN_QUOTES:
        base = parsed.base_quote[: -len(quote)]
        if parsed.base_quote.endswith(quote) and base:
            return f"{base}/{quote}:{quote}" if parsed.perpetual else f"{base}/{quote}"
    raise UnknownSymbolError(
        f"cannot split ticker {ticker!r} into base and quote: it ends in none of the known quote "
        f"currencies ({', '.join(KNOWN_QUOTES)}); write it as BASE/QUOTE instead"
    )


def _match_market(ticker: str, parsed: ParsedTicker, markets: Mapping[str, Mapping[str, Any]]) -> str:
    candidates = [
        m
        for m in markets.values()
        if str(m.get("id", "")).upper() == parsed.base_quote
        or f"{m.get('base', '')}{m.get('quote', '')}".upper() == parsed.base_quote
    ]
    if parsed.perpetual:
        chosen = [m for m in candidates if m.get("swap") and m.get("linear")]
        kind = "linear perpetual (swap)"
    else:
        chosen = [m for m in candidates if m.get("spot")]
        kind = "spot"
    if chosen:
        # Several matches happen only with aliases; prefer the one whose id is the ticker itself.
        chosen.sort(key=lambda m: str(m.get("id", "")).upper() != parsed.base_quote)
        return str(chosen[0]["symbol"])
    if candidates:
        others = ", ".join(sorted(str(m["symbol"]) for m in candidates))
        raise UnknownSymbolError(f"ticker {ticker!r}: no {kind} market on this exchange, only {others}")
    raise UnknownSymbolError(f"ticker {ticker!r} matches no market on this exchange{_hint(parsed, markets)}")


def _hint(parsed: ParsedTicker, markets: Mapping[str, Mapping[str, Any]]) -> str:
    """A "did you mean" tail naming the closest market ids and symbols, or nothing."""
    names = {str(m.get("id", "")).upper() for m in markets.values()} | {s.upper() for s in markets}
    close = difflib.get_close_matches(parsed.base_quote, sorted(names), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def is_contract(symbol: str) -> bool:
    """A contract market (perpetual or future): ccxt's unified symbol names its settle
    currency after a colon (``BTC/USDT:USDT``); a spot symbol has none."""
    return ":" in symbol


def base_currency(symbol: str) -> str:
    """The coin a unified symbol trades: ``BTC`` of ``BTC/USDT`` and of ``BTC/USDT:USDT``."""
    return symbol.split("/", 1)[0]
