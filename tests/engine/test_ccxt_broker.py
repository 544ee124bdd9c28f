"""CcxtBroker against the local fake Binance: real ccxt, real HTTP on 127.0.0.1, real failures."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from engine.brokers import ccxt_broker
from engine.brokers.base import OrderRequest
from engine.brokers.ccxt_broker import CcxtBroker, _with_base_url
from engine.exceptions import (
    ExchangeUnavailableError,
    InsufficientFundsError,
    InvalidOrderError,
    OperationalError,
    OrderUncertainError,
    TemporaryError,
    UnknownSymbolError,
)
from tests.fake_exchange import DEFAULT_API_KEY, DEFAULT_SECRET, FakeBinance

READ_RETRIES = 3


def _broker(fake: FakeBinance, **overrides: object) -> CcxtBroker:
    options: dict[str, object] = {
        "credentials": {"apiKey": DEFAULT_API_KEY, "secret": DEFAULT_SECRET},
        "sandbox": False,
        "api_url": fake.url,
        "timeout_ms": 500,  # the fake's "timeout" holds 1 s; normal answers take a few ms
        "read_retries": READ_RETRIES,
        "backoff_s": 0.01,
        "rate_limit_ms": 1,  # the limiter stays on, at a pace that keeps tests fast
    }
    options.update(overrides)
    return CcxtBroker("binance", **options)  # type: ignore[arg-type]


@pytest.fixture
def broker(fake_exchange: FakeBinance) -> Iterator[CcxtBroker]:
    b = _broker(fake_exchange)
    try:
        yield b
    finally:
        b.close()


def _order(client_order_id: str = "tvgw-1", **fields: object) -> OrderRequest:
    values: dict[str, object] = {"symbol": "BTC/USDT", "side": "buy", "amount": 0.01}
    values.update(fields)
    return OrderRequest(client_order_id=client_order_id, **values)  # type: ignore[arg-type]


def _posts(fake: FakeBinance) -> int:
    return fake.request_count("POST", "/api/v3/order")


# --- markets and symbols -----------------------------------------------------------------


def test_loads_markets_and_maps_tradingview_tickers(broker: CcxtBroker, fake_exchange: FakeBinance) -> None:
    assert broker.resolve_symbol("BINANCE:BTCUSDT") == "BTC/USDT"
    assert broker.resolve_symbol("BTCUSDT.P") == "BTC/USDT:USDT"
    assert broker.resolve_symbol("ETHBTC", exchange="BINANCE") == "ETH/BTC"
    assert broker.resolve_symbol("SOL/USDT") == "SOL/USDT"
    paths = {path for _, path, _ in fake_exchange.requests}
    assert {"/api/v3/exchangeInfo", "/fapi/v1/exchangeInfo"} <= paths
    assert "/dapi/v1/exchangeInfo" not in paths  # coin-margined futures are not loaded
    assert fake_exchange.unknown_paths == []
    assert fake_exchange.request_count("GET", "/api/v3/exchangeInfo") == 1  # markets are cached


def test_unknown_ticker_names_the_closest_markets(broker: CcxtBroker) -> None:
    with pytest.raises(UnknownSymbolError, match=r"BINANCE:BTCUSDX.*did you mean .*BTCUSDT"):
        broker.resolve_symbol("BINANCE:BTCUSDX")


def test_order_on_a_symbol_the_exchange_lacks_is_refused_before_sending(
    broker: CcxtBroker, fake_exchange: FakeBinance
) -> None:
    with pytest.raises(UnknownSymbolError, match="DOGE/USDT"):
        broker.execute(_order(symbol="DOGE/USDT"))
    assert _posts(fake_exchange) == 0


# --- orders that work ---------------------------------------------------------------------


def test_market_buy_then_sell_moves_the_fakes_balances(
    broker: CcxtBroker, fake_exchange: FakeBinance
) -> None:
    bought = broker.execute(_order("buy-1", amount=0.01))
    assert bought.status == "filled"
    assert bought.filled == pytest.approx(0.01)
    assert bought.average == pytest.approx(50_000.0)
    assert bought.fee == pytest.approx(0.00001) and bought.fee_currency == "BTC"
    assert bought.exchange_order_id is not None
    assert fake_exchange.balance("USDT") == Decimal("9500")
    assert fake_exchange.balance("BTC") == Decimal("0.50999")

    fake_exchange.set_price("BTCUSDT", "51000")
    sold = broker.execute(_order("sell-1", side="sell", amount=0.01))
    assert sold.status == "filled" and sold.average == pytest.approx(51_000.0)
    assert sold.fee_currency == "USDT"
    assert fake_exchange.balance("USDT") == Decimal("9500") + Decimal("510") - Decimal("0.51")
    assert fake_exchange.balance("BTC") == Decimal("0.49999")
    sent = [p for m, path, p in fake_exchange.requests if (m, path) == ("POST", "/api/v3/order")]
    assert [p["newClientOrderId"] for p in sent] == ["buy-1", "sell-1"]
    assert all("quantity" in p and "quoteOrderQty" not in p for p in sent)


def test_amount_and_price_are_rounded_to_the_market_precision(
    broker: CcxtBroker, fake_exchange: FakeBinance
) -> None:
    result = broker.execute(_order("limit-1", order_type="limit", amount=0.0123456789, price=45_000.004))
    assert result.status == "open" and result.filled == 0.0
    (sent,) = [p for m, path, p in fake_exchange.requests if (m, path) == ("POST", "/api/v3/order")]
    assert sent["quantity"] == "0.01234"  # truncated to the 0.00001 step
    assert sent["price"] == "45000"  # rounded to the 0.01 tick
    assert fake_exchange.balances["USDT"]["locked"] == Decimal("0.01234") * 45_000

    canceled = broker.cancel_order("limit-1", "BTC/USDT")
    assert canceled.status == "canceled"
    assert fake_exchange.balances["USDT"] == {"free": Decimal("10000"), "locked": Decimal("0")}


def test_resting_limit_order_is_reported_filled_after_the_market_reaches_it(
    broker: CcxtBroker, fake_exchange: FakeBinance
) -> None:
    broker.execute(_order("limit-2", order_type="limit", amount=0.001, price=49_000))
    fake_exchange.set_price("BTCUSDT", "48900")
    result = broker.fetch_order("limit-2", "BTC/USDT")
    assert result is not None and result.status == "filled" and result.filled == pytest.approx(0.001)


def test_fetch_order_of_an_unknown_client_id_is_none(broker: CcxtBroker) -> None:
    assert broker.fetch_order("never-sent", "BTC/USDT") is None


def test_equity_marks_holdings_at_last_price(broker: CcxtBroker) -> None:
    # 10000 USDT + 0.5 BTC at 50000 + 2 ETH at 3000; SOL and BNB are zero.
    assert broker.equity() == pytest.approx(10_000 + 25_000 + 6_000)


def test_fetch_ohlcv_returns_the_exchanges_candles(broker: CcxtBroker, fake_exchange: FakeBinance) -> None:
    hour = 3_600_000
    rows = [[1_700_000_000_000 + i * hour, 100.0 + i, 101.0 + i, 99.0 + i, 100.5 + i, 10.0] for i in range(6)]
    fake_exchange.set_klines("ETHUSDT", "1h", rows)
    got = broker.fetch_ohlcv("ETH/USDT", "1h", since_ms=rows[2][0], limit=3)
    assert got == [[float(x) for x in r] for r in rows[2:5]]


# --- refusals before sending --------------------------------------------------------------


def test_below_min_notional_is_refused_before_sending(broker: CcxtBroker, fake_exchange: FakeBinance) -> None:
    with pytest.raises(InvalidOrderError, match=r"buy 5e-05 BTC/USDT.*below the market minimum 5"):
        broker.execute(_order(amount=0.00005))  # 2.50 USDT at 50000
    assert _posts(fake_exchange) == 0


def test_amount_below_one_step_is_refused_before_sending(
    broker: CcxtBroker, fake_exchange: FakeBinance
) -> None:
    with pytest.raises(InvalidOrderError, match="minimum amount precision"):
        broker.execute(_order(amount=0.000001))
    assert _posts(fake_exchange) == 0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"amount": 0.0}, "amount must be a positive number"),
        ({"amount": float("nan")}, "amount must be a positive number"),
        ({"order_type": "limit", "price": None}, "limit order needs a positive price"),
    ],
)
def test_nonsense_orders_are_refused_before_sending(
    broker: CcxtBroker, fake_exchange: FakeBinance, fields: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidOrderError, match=message):
        broker.execute(_order(**fields))
    assert _posts(fake_exchange) == 0


# --- exchange refusals and failures -------------------------------------------------------


def test_insufficient_balance_is_mapped(broker: CcxtBroker, fake_exchange: FakeBinance) -> None:
    with pytest.raises(
        InsufficientFundsError, match=r"market buy 1\.0 BTC/USDT @ 50000.*insufficient balance"
    ):
        broker.execute(_order(amount=1.0, price=50_000))  # 50000 USDT > 10000 held
    assert fake_exchange.orders == []


def test_injected_insufficient_balance_is_mapped(broker: CcxtBroker, fake_exchange: FakeBinance) -> None:
    fake_exchange.fail_next("POST /api/v3/order", "insufficient_balance")
    with pytest.raises(InsufficientFundsError):
        broker.execute(_order())
    assert fake_exchange.orders == [] and _posts(fake_exchange) == 1


@pytest.mark.parametrize("mode", ["429", "500", "503", "timeout"])
def test_reads_are_retried_until_they_succeed(
    broker: CcxtBroker, fake_exchange: FakeBinance, mode: str
) -> None:
    fake_exchange.fail_next("/api/v3/ticker/24hr", mode, times=2)
    assert broker.last_price("BTC/USDT") == pytest.approx(50_000.0)
    assert fake_exchange.request_count("GET", "/api/v3/ticker/24hr") == 3


@pytest.mark.parametrize(("mode", "error"), [("429", TemporaryError), ("503", ExchangeUnavailableError)])
def test_reads_give_up_after_the_retries(
    broker: CcxtBroker, fake_exchange: FakeBinance, mode: str, error: type[Exception]
) -> None:
    fake_exchange.fail_next("GET /api/v3/account", mode, times=READ_RETRIES + 1)
    with pytest.raises(error, match="fetch_balance"):
        broker.fetch_balance()
    assert fake_exchange.request_count("GET", "/api/v3/account") == READ_RETRIES + 1


def test_load_markets_is_retried(fake_exchange: FakeBinance) -> None:
    fake_exchange.fail_next("/api/v3/exchangeInfo", "500")
    b = _broker(fake_exchange)
    try:
        assert b.resolve_symbol("BTCUSDT") == "BTC/USDT"
    finally:
        b.close()


def test_rate_limited_create_is_not_reconciled_nor_resent(
    broker: CcxtBroker, fake_exchange: FakeBinance
) -> None:
    fake_exchange.fail_next("POST /api/v3/order", "429")
    with pytest.raises(TemporaryError, match=r"market buy 0\.01 BTC/USDT"):
        broker.execute(_order())
    assert _posts(fake_exchange) == 1
    assert fake_exchange.request_count("GET", "/api/v3/order") == 0
    assert fake_exchange.orders == []


@pytest.mark.parametrize("mode", ["500", "503"])
def test_5xx_on_create_is_looked_up_never_resent(
    broker: CcxtBroker, fake_exchange: FakeBinance, mode: str
) -> None:
    fake_exchange.fail_next("POST /api/v3/order", mode)
    with pytest.raises(OrderUncertainError, match="not re-sent") as info:
        broker.execute(_order("five-xx"))
    assert info.value.client_order_id == "five-xx"
    assert isinstance(info.value.__cause__, TemporaryError)  # the mapped 5xx, itself from ccxt's error
    assert _posts(fake_exchange) == 1
    assert fake_exchange.orders == []
    lookups = [p for m, path, p in fake_exchange.requests if (m, path) == ("GET", "/api/v3/order")]
    assert len(lookups) == READ_RETRIES + 1
    assert all(p["origClientOrderId"] == "five-xx" for p in lookups)


def test_timeout_on_create_is_reconciled_by_client_order_id(
    broker: CcxtBroker, fake_exchange: FakeBinance
) -> None:
    fake_exchange.fail_next("POST /api/v3/order", "timeout")
    result = broker.execute(_order("slow-1"))
    assert result.status == "filled" and result.filled == pytest.approx(0.01)
    assert result.info["reconciled"] is True
    assert _posts(fake_exchange) == 1
    assert len(fake_exchange.orders_for("slow-1")) == 1 and len(fake_exchange.orders) == 1


def test_reconciliation_lookups_survive_temporary_errors(
    broker: CcxtBroker, fake_exchange: FakeBinance
) -> None:
    fake_exchange.fail_next("POST /api/v3/order", "timeout")
    fake_exchange.fail_next("GET /api/v3/order", "503", times=2)
    result = broker.execute(_order("slow-2"))
    assert result.status == "filled"
    assert fake_exchange.request_count("GET", "/api/v3/order") == 3
    assert len(fake_exchange.orders) == 1


def test_exchanges_without_lookup_by_client_id_are_reconciled_by_scanning_orders(
    broker: CcxtBroker, fake_exchange: FakeBinance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ccxt_broker, "_FETCH_BY_CLIENT_ID", {})  # as for an exchange not listed there
    broker.execute(_order("other-1"))
    fake_exchange.fail_next("POST /api/v3/order", "timeout")
    result = broker.execute(_order("slow-3", side="sell"))
    assert result.status == "filled" and result.client_order_id == "slow-3"
    assert result.info["reconciled"] is True
    assert fake_exchange.request_count("GET", "/api/v3/allOrders") == 1
    assert fake_exchange.request_count("GET", "/api/v3/order") == 0
    assert broker.fetch_order("never-sent", "BTC/USDT") is None


def test_lost_order_raises_uncertain_and_is_not_resent(
    broker: CcxtBroker, fake_exchange: FakeBinance
) -> None:
    fake_exchange.fail_next("POST /api/v3/order", "timeout_lost")
    with pytest.raises(OrderUncertainError, match="client id lost-1") as info:
        broker.execute(_order("lost-1"))
    assert isinstance(info.value.__cause__, ExchangeUnavailableError)
    assert _posts(fake_exchange) == 1
    assert fake_exchange.orders == []


def test_duplicate_client_order_id_returns_the_existing_order(
    broker: CcxtBroker, fake_exchange: FakeBinance
) -> None:
    first = broker.execute(_order("dup-1"))
    again = broker.execute(_order("dup-1"))
    assert again.exchange_order_id == first.exchange_order_id
    assert again.status == "filled"
    assert _posts(fake_exchange) == 2  # the second was sent and refused by the exchange
    assert len(fake_exchange.orders) == 1
    assert fake_exchange.balance("USDT") == Decimal("9500")  # paid once


# --- configuration ------------------------------------------------------------------------


def test_missing_api_key_is_an_operational_error(fake_exchange: FakeBinance) -> None:
    b = _broker(fake_exchange, credentials={})
    try:
        with pytest.raises(OperationalError, match="apiKey"):
            b.fetch_balance()
    finally:
        b.close()


def test_wrong_api_key_is_an_operational_error(fake_exchange: FakeBinance) -> None:
    b = _broker(fake_exchange, credentials={"apiKey": "stolen", "secret": "x"})
    try:
        with pytest.raises(OperationalError, match="Invalid API-key"):
            b.execute(_order())
    finally:
        b.close()
    assert fake_exchange.orders == []


def test_unknown_exchange_id_suggests_the_right_one() -> None:
    with pytest.raises(OperationalError, match="did you mean binance"):
        CcxtBroker("binanse", credentials={}, sandbox=True)


def test_unknown_credential_key_is_refused() -> None:
    with pytest.raises(OperationalError, match="api_key"):
        CcxtBroker("binance", credentials={"api_key": "x"}, sandbox=True)


def test_sandbox_switches_to_the_test_network_without_api_url() -> None:
    b = CcxtBroker("binance", credentials={}, sandbox=True)
    try:
        assert "testnet" in b._pool.first.urls["api"]["public"]
    finally:
        b.close()


def test_api_url_replaces_scheme_and_host_keeping_paths() -> None:
    urls = {"public": "https://api.binance.com/api/v3", "fapiPublic": "https://fapi.binance.com/fapi/v1"}
    assert _with_base_url(urls, "http://127.0.0.1:9/") == {
        "public": "http://127.0.0.1:9/api/v3",
        "fapiPublic": "http://127.0.0.1:9/fapi/v1",
    }
    with pytest.raises(OperationalError, match="absolute URL"):
        _with_base_url(urls, "127.0.0.1:9")


def test_market_limits_come_from_the_exchange_markets(broker: CcxtBroker) -> None:
    limits = broker.market_limits("BTC/USDT")
    assert limits.amount_step == pytest.approx(0.00001) and limits.min_amount == pytest.approx(0.00001)
    assert limits.max_amount == pytest.approx(9000) and limits.min_cost == pytest.approx(5)
    assert limits.price_tick == pytest.approx(0.01)
    amount, problem = limits.fit(0.0123456, 30000.0)
    assert amount == pytest.approx(0.01234) and problem is None
    assert "below the market minimum 5" in (limits.fit(0.0001, 30000.0)[1] or "")
