"""One slow market never holds back another, through a real gunicorn (the shipped config: 2
workers x 4 threads) trading through real ccxt against the fake Binance, whose answers are held
per endpoint and symbol. Prices come from the exchange's tickers (no candle store); the account
holds BTC and ETH, so its equity needs their prices too.

Each latency bound is generous beside the stall it must not wait out (answered within
TradingView's 3 s while the stall lasts 10 s), is timed from just before the alert is sent,
and is checked while the stalled request is still held (the fake counts them)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from tests.conftest import PASSPHRASE, LiveGateway, start_gateway, wait_until
from tests.fake_exchange import DEFAULT_API_KEY, DEFAULT_SECRET, FakeBinance

pytestmark = pytest.mark.slow

#: TradingView's limit for an answer.
ANSWER_LIMIT_S = 3.0
STALL_S = 10.0
#: How long the balance endpoint fails while alerts keep coming.
FAILING_FOR_S = 6.0
TICKER = "/api/v3/ticker/24hr"  # what ccxt's binance.fetch_ticker asks
PRICES = {"BTCUSDT": 50000.0, "ETHUSDT": 3000.0, "SOLUSDT": 150.0}
CONTRACTS = {"BTCUSDT": 0.0006, "ETHUSDT": 0.01, "SOLUSDT": 0.2}  # about 30 USDT each


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeBinance, LiveGateway, int]]:
    """The fake, a gateway trading on it, and how many market loads the fake had seen when the
    gateway was up (before any alert)."""
    with FakeBinance() as fake:
        gateway = start_gateway(
            tmp_path_factory.mktemp("stalls"), prices=None,
            TVGW_BROKER="binance", TVGW_EXCHANGE_API_URL=fake.url,
            TVGW_BINANCE_API_KEY=DEFAULT_API_KEY, TVGW_BINANCE_SECRET=DEFAULT_SECRET,
            TVGW_EXCHANGE_FRESH_S="0.5", TVGW_EXCHANGE_MAX_AGE_S="300", TVGW_MARKETS_REFRESH_S="3",
            TVGW_EXIT_WATCH_INTERVAL_S="0", TVGW_RESOLVE_INTERVAL_S="0",
        )  # fmt: skip
        loads = fake.request_count("GET", "/api/v3/exchangeInfo")
        try:
            yield fake, gateway, loads
        finally:
            gateway.stop()


def body(ticker: str, n: int) -> dict[str, Any]:
    """A buy of about 30 USDT (sells of what a buy just received would meet its fee, which
    is another issue's: the fake's 10,000 USDT pays for every buy here)."""
    return {
        "passphrase": PASSPHRASE, "ticker": ticker, "exchange": "BINANCE", "interval": "60",
        "action": "buy", "contracts": CONTRACTS[ticker], "price": PRICES[ticker],
        "id": f"{ticker}-{n}-{time.time_ns()}",
    }  # fmt: skip


def timed(gateway: LiveGateway, alert: dict[str, Any]) -> tuple[float, requests.Response]:
    began = time.monotonic()
    answer = requests.post(gateway.url + "/webhook", data=json.dumps(alert), timeout=30)
    return time.monotonic() - began, answer


def burst(gateway: LiveGateway, count: int) -> list[tuple[float, requests.Response]]:
    """``count`` ETH and SOL alerts, four at a time."""
    alerts = [body(("ETHUSDT", "SOLUSDT")[i % 2], i) for i in range(count)]
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda a: timed(gateway, a), alerts))


def assert_answered_in_time(results: list[tuple[float, requests.Response]]) -> None:
    for elapsed, answer in results:
        assert answer.status_code == 200 and answer.json()["status"] == "executed", answer.text
        assert elapsed < ANSWER_LIMIT_S, f"answered after {elapsed:.1f} s: {answer.text}"


def test_a_stalled_ticker_delays_no_other_symbols_alerts(
    exchange: tuple[FakeBinance, LiveGateway, int],
) -> None:
    fake, gateway, _ = exchange
    assert_answered_in_time(burst(gateway, 4))  # every worker has its readings
    fake.stalls.add(f"GET {TICKER}?symbol=BTCUSDT", STALL_S)
    btc: list[tuple[float, requests.Response]] = []

    def btc_alert_then_held() -> bool:
        """A BTC alert; once its reading is stale, one of them sets off a read that stalls."""
        btc.append(timed(gateway, body("BTCUSDT", len(btc))))
        return fake.stalls.holding >= 1

    try:
        wait_until(btc_alert_then_held, 30, "a BTC ticker read by the gateway is held")
        results = burst(gateway, 8)
        assert fake.stalls.holding >= 1, "the stall ended before the other alerts were answered"
    finally:
        fake.stalls.remove()
    assert_answered_in_time(results)
    # BTC itself is decided on its last ticker reading, which says how old it is.
    assert_answered_in_time(btc)
    price = btc[-1][1].json()["decision"]["details"]["price"]
    assert price["source"] == "binance ticker" and price["age_s"] > 0


def test_a_failing_equity_read_backs_off_and_other_alerts_still_execute(
    exchange: tuple[FakeBinance, LiveGateway, int],
) -> None:
    fake, gateway, _ = exchange
    assert_answered_in_time(burst(gateway, 4))  # a recent equity reading in the workers
    asked = fake.request_count("GET", "/api/v3/account")
    fake.fail_next("/api/v3/account", "500", times=1_000_000)
    results: list[tuple[float, requests.Response]] = []
    began = time.monotonic()
    try:
        while time.monotonic() - began < FAILING_FOR_S:  # one after another: several back-off steps
            results.append(timed(gateway, body(("ETHUSDT", "SOLUSDT")[len(results) % 2], len(results))))
    finally:
        fake.clear_failures()
    window = time.monotonic() - began
    sent = fake.request_count("GET", "/api/v3/account") - asked
    assert_answered_in_time(results)  # decided on the recent reading, which they show
    equity = results[-1][1].json()["decision"]["details"]["equity"]
    assert equity["age_s"] > 0.5 and "binance balance" in equity["source"]
    # The readings went stale (fresh for 0.5 s here) and were asked for again, in vain. Without
    # back-off every alert that found them stale would ask again; with it, each worker asks at
    # 0, 1, 3, 7, ... s of failures (each time two requests: one retry); one try more is allowed
    # for a refresh that began just before the failures did.
    assert sent >= 2
    tries = math.floor(math.log2(2 + window)) + 1
    assert sent <= 2 * 2 * tries, f"{sent} balance requests for {len(results)} alerts in {window:.1f} s"


def test_a_worker_never_loads_markets_inside_a_request(
    exchange: tuple[FakeBinance, LiveGateway, int],
) -> None:
    fake, gateway, loads_at_start = exchange
    assert loads_at_start >= 3  # the master's start-up recovery, then each worker as it started
    fake.stalls.add("GET /api/v3/exchangeInfo", STALL_S)
    try:
        # The workers reload every 3 s: wait until a reload is held by the stall.
        wait_until(lambda: fake.stalls.holding >= 1, 15, "a background market reload is held")
        results = burst(gateway, 8)
        assert fake.stalls.holding >= 1, "the stall ended before the alerts were answered"
    finally:
        fake.stalls.remove()
    assert_answered_in_time(results)
    limits = results[-1][1].json()["decision"]["details"]["market_limits"]
    assert limits["source"] == "binance markets" and limits["age_s"] > 0  # the table loaded before
