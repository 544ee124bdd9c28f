"""TradingView ticker -> ccxt symbol mapping (pure functions; the ccxt-loaded case is in
test_ccxt_broker.py)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.exceptions import UnknownSymbolError
from engine.symbols import ParsedTicker, parse_tradingview_ticker, to_ccxt_symbol


def _market(symbol: str, market_id: str, *, kind: str = "spot") -> dict[str, Any]:
    """A market dict with the fields ccxt fills in and the mapping reads."""
    base, rest = symbol.split("/")
    quote = rest.split(":")[0]
    return {
        "id": market_id,
        "symbol": symbol,
        "base": base,
        "quote": quote,
        "spot": kind == "spot",
        "swap": kind in ("linear", "inverse"),
        "linear": kind == "linear",
        "inverse": kind == "inverse",
    }


MARKETS = {
    m["symbol"]: m
    for m in (
        _market("BTC/USDT", "BTCUSDT"),
        _market("ETH/USDT", "ETHUSDT"),
        _market("ETH/BTC", "ETHBTC"),
        _market("SOL/USDT", "SOLUSDT"),
        _market("BTC/USDT:USDT", "BTCUSDT", kind="linear"),
        _market("BTC/USD:BTC", "BTCUSD_PERP", kind="inverse"),
        _market("1000PEPE/USDT:USDT", "1000PEPEUSDT", kind="linear"),
    )
}


@pytest.mark.parametrize(
    ("ticker", "exchange", "expected"),
    [
        ("BINANCE:BTCUSDT", None, ParsedTicker("BINANCE", "BTCUSDT", perpetual=False)),
        ("BTCUSDT.P", None, ParsedTicker(None, "BTCUSDT", perpetual=True)),
        ("BINANCE:BTCUSDT.P", "binance", ParsedTicker("BINANCE", "BTCUSDT", perpetual=True)),
        ("BTCUSDTPERP", "BINANCE", ParsedTicker("BINANCE", "BTCUSDT", perpetual=True)),
        (" ethbtc ", None, ParsedTicker(None, "ETHBTC", perpetual=False)),
        ("BTC/USDT", None, ParsedTicker(None, "BTC/USDT", perpetual=False, unified=True)),
        ("BTC/USDT:USDT", None, ParsedTicker(None, "BTC/USDT:USDT", perpetual=True, unified=True)),
    ],
)
def test_parse_tradingview_ticker(ticker: str, exchange: str | None, expected: ParsedTicker) -> None:
    assert parse_tradingview_ticker(ticker, exchange) == expected


@pytest.mark.parametrize(
    ("ticker", "exchange", "message"),
    [
        ("", None, "empty ticker"),
        ("   ", None, "empty ticker"),
        ("BINANCE:BTC-USDT", None, "letters and digits only"),
        (":BTCUSDT", None, "malformed exchange prefix"),
        ("BYBIT:BTCUSDT", "BINANCE", "names exchange BYBIT but the alert says BINANCE"),
        ("BTC/US DT", None, "BASE/QUOTE"),
        (".P", None, "letters and digits only"),
    ],
)
def test_parse_rejects_malformed_tickers(ticker: str, exchange: str | None, message: str) -> None:
    with pytest.raises(UnknownSymbolError, match=message):
        parse_tradingview_ticker(ticker, exchange)


@pytest.mark.parametrize(
    ("ticker", "expected"),
    [
        ("BTCUSDT", "BTC/USDT"),
        ("BINANCE:BTCUSDT", "BTC/USDT"),
        ("BTCUSDT.P", "BTC/USDT:USDT"),
        ("BINANCE:ETHBTC", "ETH/BTC"),
        ("BTCTUSD", "BTC/TUSD"),  # longest quote first: not BTCT/USD
        ("BTCFDUSD", "BTC/FDUSD"),
        ("SOLUSDC", "SOL/USDC"),
        ("KRAKEN:XBTEUR", "XBT/EUR"),
        ("COINBASE:BTCUSD", "BTC/USD"),
        ("1000PEPEUSDT.P", "1000PEPE/USDT:USDT"),
        ("BNBETH", "BNB/ETH"),
        ("eth/usdt", "ETH/USDT"),
    ],
)
def test_without_markets_splits_on_known_quotes(ticker: str, expected: str) -> None:
    assert to_ccxt_symbol(ticker) == expected


@pytest.mark.parametrize("ticker", ["BTCXYZ", "USDT"])
def test_without_markets_unknown_quote_is_a_clear_error(ticker: str) -> None:
    with pytest.raises(UnknownSymbolError, match="known quote currencies"):
        to_ccxt_symbol(ticker)


@pytest.mark.parametrize(
    ("ticker", "expected"),
    [
        ("BINANCE:BTCUSDT", "BTC/USDT"),
        ("BTCUSDT.P", "BTC/USDT:USDT"),
        ("BINANCE:BTCUSDT.P", "BTC/USDT:USDT"),
        ("ETHBTC", "ETH/BTC"),
        ("1000PEPEUSDT.P", "1000PEPE/USDT:USDT"),
        ("BTC/USDT", "BTC/USDT"),
        ("BTC/USDT:USDT", "BTC/USDT:USDT"),
    ],
)
def test_with_markets_picks_spot_or_linear_swap(ticker: str, expected: str) -> None:
    assert to_ccxt_symbol(ticker, MARKETS) == expected


def test_with_markets_matches_base_plus_quote_when_the_id_differs() -> None:
    markets = {"BTC/USD": _market("BTC/USD", "XXBTZUSD")}  # Kraken-style id
    assert to_ccxt_symbol("KRAKEN:BTCUSD", markets) == "BTC/USD"
    assert to_ccxt_symbol("XXBTZUSD", markets) == "BTC/USD"


def test_unknown_ticker_with_markets_suggests_close_ones() -> None:
    with pytest.raises(UnknownSymbolError, match=r"did you mean .*BTCUSDT") as info:
        to_ccxt_symbol("BINANCE:BTCUSDTT", MARKETS)
    assert "BINANCE:BTCUSDTT" in str(info.value)


def test_unknown_unified_symbol_with_markets_suggests_close_ones() -> None:
    with pytest.raises(UnknownSymbolError, match=r"no market BTC/USDC.*did you mean .*BTC/USDT"):
        to_ccxt_symbol("BTC/USDC", MARKETS)


def test_perpetual_ticker_without_a_perpetual_market_names_what_exists() -> None:
    with pytest.raises(UnknownSymbolError, match=r"no linear perpetual \(swap\) market.*only ETH/BTC"):
        to_ccxt_symbol("ETHBTC.P", MARKETS)


def test_spot_ticker_with_only_a_swap_market_is_refused() -> None:
    with pytest.raises(UnknownSymbolError, match=r"no spot market.*only 1000PEPE/USDT:USDT"):
        to_ccxt_symbol("1000PEPEUSDT", MARKETS)


def test_nothing_close_gives_no_hint() -> None:
    with pytest.raises(UnknownSymbolError) as info:
        to_ccxt_symbol("QQQQQQQQ", MARKETS)
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize("markets", [None, MARKETS], ids=["known-quotes", "exchange-markets"])
def test_every_spelling_of_one_market_is_one_symbol(markets: dict[str, Any] | None) -> None:
    """The idempotency key uses the resolved symbol, so these must agree (one market, one order)."""
    spellings = [("BINANCE:SOLUSDT", None), ("SOLUSDT", "BINANCE"), ("BINANCE:SOLUSDT", "binance"),
                 ("SOL/USDT", None), ("solusdt", None), (" SOLUSDT ", "")]  # fmt: skip
    assert {to_ccxt_symbol(t, markets, e) for t, e in spellings} == {"SOL/USDT"}
    # The perpetual is another market, so another alert.
    with_perp = (
        None
        if markets is None
        else {**markets, "SOL/USDT:USDT": _market("SOL/USDT:USDT", "SOLUSDT", kind="linear")}
    )
    assert to_ccxt_symbol("BINANCE:SOLUSDT.P", with_perp) == "SOL/USDT:USDT"
