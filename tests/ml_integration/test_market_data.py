"""History fetch through real ccxt against a loopback server speaking Binance's public REST
dialect (exchangeInfo + klines), into a real SQLite candle store."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from ml_integration.candles import find_gaps
from ml_integration.market_data import (
    MarketDataError,
    create_exchange,
    fetch_ohlcv_history,
    fill_candle_store,
)
from ml_integration.synthetic import synthetic_candles
from storage.candles import candle_sources, load_candles
from storage.database import Storage

_MARKET = {
    "symbol": "BTCUSDT",
    "status": "TRADING",
    "baseAsset": "BTC",
    "baseAssetPrecision": 8,
    "quoteAsset": "USDT",
    "quotePrecision": 8,
    "quoteAssetPrecision": 8,
    "orderTypes": ["LIMIT", "MARKET"],
    "isSpotTradingAllowed": True,
    "isMarginTradingAllowed": False,
    "permissions": ["SPOT"],
    "permissionSets": [["SPOT"]],
    "filters": [
        {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000", "tickSize": "0.01"},
        {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000", "stepSize": "0.00001"},
    ],
}


class _Klines:
    """The candles the fake exchange serves, and the requests it saw."""

    def __init__(self, rows: list[list[float]]):
        self.rows = rows
        self.requests: list[dict[str, str]] = []


def _handler(state: _Klines) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output clean
            return

        def _send(self, status: int, body: object) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path.endswith("/exchangeInfo"):
                self._send(200, {"timezone": "UTC", "serverTime": 0, "symbols": [_MARKET]})
            elif url.path.endswith("/klines"):
                state.requests.append(query)
                if query.get("symbol") != "BTCUSDT":
                    self._send(400, {"code": -1121, "msg": "Invalid symbol."})
                    return
                since, limit = int(query.get("startTime", 0)), int(query.get("limit", 500))
                picked = [r for r in state.rows if r[0] >= since][:limit]
                step = 3_600_000
                self._send(
                    200, [[r[0], *map(str, r[1:6]), r[0] + step - 1, "0", 1, "0", "0", "0"] for r in picked]
                )
            else:
                self._send(404, {"code": -1, "msg": f"no route {url.path}"})

    return Handler


@pytest.fixture
def fake_binance() -> Iterator[tuple[str, _Klines]]:
    frame = synthetic_candles(2600, seed=11, n_gaps=2, max_gap_bars=8)
    stamps = frame.index.as_unit("ms").asi8
    state = _Klines([[int(ms), *vals] for ms, vals in zip(stamps, frame.to_numpy().tolist(), strict=True)])
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()


def _exchange(url: str):
    exchange = create_exchange("binance", timeout_ms=5_000, api_url=url)
    exchange.options["fetchMarkets"] = {"types": ["spot"]}
    exchange.enableRateLimit = False
    return exchange


def test_paginated_fetch_returns_every_served_candle(fake_binance):
    url, state = fake_binance
    rows = fetch_ohlcv_history(_exchange(url), "BTC/USDT", "1h", state.rows[0][0], until_ms=state.rows[-1][0])
    assert [r[0] for r in rows] == [r[0] for r in state.rows]
    np.testing.assert_allclose(np.array(rows)[:, 1:], np.array(state.rows)[:, 1:])
    assert len(state.requests) >= 3  # 1000-bar pages


def test_fill_candle_store_keeps_the_gaps_and_resumes(fake_binance, tmp_path):
    url, state = fake_binance
    storage = Storage(tmp_path / "c.sqlite")
    storage.migrate()
    end = state.rows[-1][0]
    written = fill_candle_store(storage, _exchange(url), "BTC/USDT", "1h", days=100, now_ms=end)
    stored = load_candles(storage, "BTC/USDT", "1h")
    assert written == len(stored) > 2300
    assert len(find_gaps(stored.index, 3600)) == 2  # the outages are absent, not invented
    state.requests.clear()
    again = fill_candle_store(storage, _exchange(url), "BTC/USDT", "1h", days=100, now_ms=end)
    assert again == 1 and int(state.requests[0]["startTime"]) == end  # resumes at the newest bar


def test_exchange_errors_are_mapped(fake_binance):
    url, _ = fake_binance
    exchange = _exchange(url)
    with pytest.raises(MarketDataError, match="DOGE/USDT"):
        fetch_ohlcv_history(exchange, "DOGE/USDT", "1h", 0, until_ms=10)
    with pytest.raises(MarketDataError, match="unknown exchange"):
        create_exchange("no-such-exchange")


def test_real_candles_replace_a_synthetic_history_whole(fake_binance, tmp_path, caplog):
    """The offline quickstart's synthetic market meets real data: its generated candles go (every
    timeframe), the real ones come in, and the log says positions are now marked at real prices.
    A fetch that fails leaves the synthetic history as it was."""
    from ml_integration.training import store_synthetic_history
    from storage.candles import is_synthetic_market

    url, state = fake_binance
    storage = Storage(tmp_path / "c.sqlite")
    storage.migrate()
    store_synthetic_history(storage, "BTC/USDT", "1h", bars=200, seed=7, price=50_000.0)
    store_synthetic_history(storage, "BTC/USDT", "4h", bars=50, seed=7, price=50_000.0)
    unreachable = create_exchange("binance", timeout_ms=500, api_url="http://127.0.0.1:9")
    with pytest.raises(MarketDataError):
        fill_candle_store(storage, unreachable, "BTC/USDT", "1h", days=30, now_ms=state.rows[-1][0])
    assert is_synthetic_market(storage, "BTC/USDT")
    written = fill_candle_store(storage, _exchange(url), "BTC/USDT", "1h", days=30, now_ms=state.rows[-1][0])
    assert written > 600 and not is_synthetic_market(storage, "BTC/USDT")
    assert candle_sources(storage, "BTC/USDT", "1h") == {"ccxt:binance"}
    assert candle_sources(storage, "BTC/USDT", "4h") == set()
    assert "replaced 250 SYNTHETIC candles" in caplog.text
