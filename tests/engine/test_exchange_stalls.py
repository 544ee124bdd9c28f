"""One slow market never holds back another, at the broker: real ccxt against the fake Binance,
whose answers are held per endpoint and symbol (``fake.stalls``). Each check is made while a
stalled request is still held (the fake counts them), so none depends on the machine's speed.
The whole gateway under the same stalls is tested in ``tests/e2e/test_exchange_stalls.py``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ccxt
import pytest
import requests

from engine.brokers.ccxt_broker import CcxtBroker
from engine.brokers.ccxt_pool import ExchangePool, SharedThrottle
from engine.brokers.readings import ReadPolicy
from engine.exceptions import ExchangeUnavailableError
from storage import Storage
from tests.conftest import make_settings, market_app, sample_alert, wait_until
from tests.fake_exchange import DEFAULT_API_KEY, DEFAULT_SECRET, FakeBinance
from webhook import get_gateway

KEYS = {"apiKey": DEFAULT_API_KEY, "secret": DEFAULT_SECRET}
TICKER = "/api/v3/ticker/24hr"  # what ccxt's binance.fetch_ticker asks


def broker(fake: FakeBinance, **options: object) -> CcxtBroker:
    """A broker whose requests outlast the fake's 10 s stalls (so a held one stays held)."""
    settings: dict[str, object] = {"timeout_ms": 20_000, "read_retries": 0, **options}
    return CcxtBroker("binance", credentials=KEYS, sandbox=False, api_url=fake.url, **settings)  # type: ignore[arg-type]


@pytest.fixture
def fake() -> Iterator[FakeBinance]:
    with FakeBinance() as running:
        yield running


def test_the_fake_holds_only_what_a_stall_names(fake: FakeBinance) -> None:
    fake.stalls.add(f"GET {TICKER}?symbol=BTCUSDT", 10)
    held = threading.Thread(target=requests.get, args=(f"{fake.url}{TICKER}?symbol=BTCUSDT",), daemon=True)
    held.start()
    wait_until(lambda: fake.stalls.holding == 1, 10, "the BTC ticker request is held")
    other = requests.get(f"{fake.url}{TICKER}?symbol=ETHUSDT", timeout=5)
    assert other.status_code == 200 and fake.stalls.holding == 1  # answered while BTC is held
    fake.stalls.remove(f"GET {TICKER}?symbol=BTCUSDT")  # releases the held request at once
    held.join(5)
    assert not held.is_alive() and fake.stalls.holding == 0
    assert [(m, p, s) for m, p, s, _ in fake.stalls.held] == [("GET", TICKER, "BTCUSDT")]
    fake.stalls.add(f"{TICKER}?symbol=ETHUSDT", 0.01, times=1)  # any method, once
    requests.get(f"{fake.url}{TICKER}?symbol=ETHUSDT", timeout=5)
    requests.get(f"{fake.url}{TICKER}?symbol=ETHUSDT", timeout=5)
    assert [s for _, _, s, _ in fake.stalls.held] == ["BTCUSDT", "ETHUSDT"]
    with pytest.raises(ValueError, match="path"):
        fake.stalls.add("ticker", 1)


def test_a_stalled_ticker_holds_no_other_symbols_read(fake: FakeBinance) -> None:
    """The account holds BTC: its equity, read again while BTC's ticker stalls, values the BTC
    at the price read before and says how old that is."""
    b = broker(fake, reads=ReadPolicy(fresh_s=0.01, max_age_s=60))
    before = b.equity_reading()
    fake.stalls.add(f"GET {TICKER}?symbol=BTCUSDT", 10)
    slow = threading.Thread(target=b.fetch_ticker, args=("BTC/USDT",), daemon=True)
    slow.start()
    wait_until(lambda: fake.stalls.holding == 1, 10, "the BTC ticker request is held")
    assert b.fetch_ticker("ETH/USDT")["last"] == 3000.0
    wait_until(lambda: before.age() > 0.01, 10, "the first equity reading went stale")
    after = b.equity_reading()
    assert after.taken_at > before.taken_at and after.value == pytest.approx(before.value)
    assert "BTC/USDT's" in after.source and "s old" in after.source
    assert fake.stalls.holding >= 1, "the other reads were answered only after BTC's stall ended"
    fake.stalls.remove()
    slow.join(10)


def test_the_pool_keeps_one_rate_limit(fake: FakeBinance, monkeypatch: pytest.MonkeyPatch) -> None:
    """Six threads read at once through six instances; the exchange still sees requests spaced
    as one client's: each start ccxt's ``rateLimit x cost`` after the one before (a lower
    bound on the time they take, which a slow machine only lengthens)."""
    costs: list[float] = []
    spaced = SharedThrottle.__call__

    def recording(self: SharedThrottle, cost: float | None = None) -> None:
        costs.append(1.0 if cost is None else float(cost))
        spaced(self, cost)

    monkeypatch.setattr(SharedThrottle, "__call__", recording)
    b = broker(fake, rate_limit_ms=250)
    b.load_markets()
    costs.clear()
    symbols = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "ETH/BTC", "BTC/USDT", "ETH/USDT"]
    start = threading.Barrier(len(symbols) + 1)

    def read(symbol: str) -> None:
        start.wait()
        b.fetch_ticker(symbol)

    threads = [threading.Thread(target=read, args=(s,)) for s in symbols]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.monotonic()
    for thread in threads:
        thread.join(30)
    assert len(costs) == len(symbols)
    assert time.monotonic() - began >= 0.25 * min(costs) * (len(symbols) - 1)
    assert b._pool._made >= 2  # they did run on separate instances


def test_a_started_broker_never_loads_markets_for_a_caller(fake: FakeBinance) -> None:
    fake.stalls.add("GET /api/v3/exchangeInfo", 10)
    b = broker(fake, reads=ReadPolicy())
    b.start(refresh_s=3600)
    wait_until(lambda: fake.stalls.holding == 1, 10, "the background market load is held")
    with pytest.raises(ExchangeUnavailableError, match="not loaded yet"):
        b.resolve_symbol("BTCUSDT")
    assert not b.ready(0) and fake.stalls.holding == 1  # refused at once, not after the stall
    fake.stalls.remove()
    assert b.ready(10)
    assert b.resolve_symbol("BTCUSDT") == "BTC/USDT"
    b.close()


@pytest.mark.slow  # a whole app on the fake, two entries and the watcher: several seconds
def test_no_exchange_call_inside_a_write_transaction(
    tmp_path: Path, fake: FakeBinance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every write transaction of a spot entry with gateway-held exits, a perpetual entry with
    exchange-held exits, and the watcher firing the spot stop: not one ccxt request, nor a wait
    for a ccxt client, while the transaction holds the database's write lock."""
    inside = threading.local()
    violations: list[str] = []
    transaction = Storage.transaction

    @contextmanager
    def watched(self: Storage) -> Iterator[Any]:
        with transaction(self) as conn:
            inside.now = True
            try:
                yield conn
            finally:
                inside.now = False

    def spy(name: str, original: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if getattr(inside, "now", False):
                violations.append(f"{name} {args[1:3]}")
            return original(*args, **kwargs)

        return call

    monkeypatch.setattr(Storage, "transaction", watched)
    monkeypatch.setattr(ccxt.Exchange, "fetch", spy("ccxt fetch", ccxt.Exchange.fetch))
    monkeypatch.setattr(ExchangePool, "lease", spy("pool lease", ExchangePool.lease))
    monkeypatch.setenv("TVGW_BINANCE_API_KEY", DEFAULT_API_KEY)
    monkeypatch.setenv("TVGW_BINANCE_SECRET", DEFAULT_SECRET)
    settings = make_settings(
        tmp_path, TVGW_BROKER="binance", TVGW_EXCHANGE_API_URL=fake.url, TVGW_EXIT_WATCH_INTERVAL_S="0"
    )
    fake.set_price("BTCUSDT", 30000)
    app = market_app(settings, {"BTC/USDT": 30000.0, "BTC/USDT:USDT": 30000.0})
    client = app.test_client()
    for ticker in ("BTCUSDT", "BTCUSDT.P"):
        alert = sample_alert(ticker=ticker, contracts=0.01, stop_loss="29000", take_profit="31000")
        answer = client.post("/webhook", data=json.dumps(alert))
        assert answer.json["status"] == "executed", answer.json
    fake.set_price("BTCUSDT", 28500)  # below the spot stop the gateway holds
    wait_until(lambda: get_gateway(app).engine.watch_exits() >= 1, 30, "the gateway fired the spot stop")
    assert violations == []
