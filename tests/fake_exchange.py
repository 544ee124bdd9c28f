"""A local fake Binance exchange that real ccxt talks to, over real HTTP on loopback.

Why: the ccxt path (precision, error mapping, retries, reconciliation after a timeout) can
only be tested honestly against something that speaks the exchange's REST dialect. A
MagicMock would test our assumptions about ccxt instead of ccxt. This server answers the
subset of Binance's spot REST API that ccxt's ``binance`` class calls for markets, tickers,
candles, orders and balances, with Binance-shaped JSON and Binance error codes, and keeps a
real order book of the account: orders debit and credit balances.

It also injects the failures a live exchange produces (``fail_next``): a request that times
out (with or without the order having been created), one whose answer never comes (``hang``),
HTTP 429, 5xx and insufficient balance; slow answers per endpoint and symbol (``stalls``: one
market's ticker answering after 10 s); and behaves as a loaded exchange does when told to:
market orders acknowledged ``NEW`` with nothing or part filled and filled later, when the test
says (``hold_fills``, ``complete_fills``), commissions in BNB (``commission_asset = "BNB"``,
valued at BNBUSDT, which it lists).

Use it three ways:

* the ``fake_exchange`` pytest fixture (this module is loaded as a plugin by ``tests/conftest.py``);
* ``with FakeBinance() as fake: ...`` in any Python code;
* standalone for end-to-end tests: ``python -m tests.fake_exchange --port 8765``. Failures can
  then be injected over HTTP: ``POST /__fake__/fail_next`` with ``{"endpoint": "POST /api/v3/order",
  "mode": "timeout", "times": 1}``; ``GET /__fake__/state`` returns orders, balances and requests.

Signatures are not verified (the HMAC secret is the client's business), but private endpoints
require the ``X-MBX-APIKEY`` header and a ``signature`` parameter, as Binance does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.fake_futures import FakeFutures, FuturesError, _crossed

__all__ = ["FAILURE_MODES", "FakeBinance", "FakeMarket", "Stalls", "fake_exchange"]

#: Spot order types every fake market lists (Binance's own list); ccxt checks a type against it.
SPOT_ORDER_TYPES: tuple[str, ...] = (
    "LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT",
)  # fmt: skip

#: Futures paths that need no API key (the rest of ``/fapi/`` is private).
_PUBLIC_FAPI = frozenset(
    {"/fapi/v1/exchangeInfo", "/fapi/v1/ticker/24hr", "/fapi/v1/ticker/price", "/fapi/v1/time"}
)

#: What ``fail_next`` can make an endpoint do.
FAILURE_MODES = ("timeout", "timeout_lost", "hang", "429", "500", "503", "insufficient_balance")

#: The API key the fake accepts unless told otherwise.
DEFAULT_API_KEY = "fake-api-key"
DEFAULT_SECRET = "fake-secret"

#: Taker fee, charged in the asset received (Binance's default without BNB discounts).
TAKER_FEE = Decimal("0.001")
#: Taker fee when it is paid in BNB (Binance's 25% discount), on the quote value of the fill.
BNB_TAKER_FEE = Decimal("0.00075")

_PRIVATE_PATHS = frozenset(
    {"/api/v3/order", "/api/v3/openOrders", "/api/v3/allOrders", "/api/v3/account", "/api/v3/myTrades"}
)

_INTERVAL_MS = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
    "1w": 604_800_000,
}


@dataclass(frozen=True)
class FakeMarket:
    """One spot symbol with the filters Binance publishes for it (values close to the real ones)."""

    symbol: str
    base: str
    quote: str
    step_size: str
    tick_size: str
    min_notional: str
    price: str
    min_qty: str | None = None  # defaults to step_size

    def filters(self) -> list[dict[str, Any]]:
        return [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": self.tick_size,
                "maxPrice": "1000000.00000000",
                "tickSize": self.tick_size,
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": self.min_qty or self.step_size,
                "maxQty": "9000.00000000",
                "stepSize": self.step_size,
            },
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": "0.00000000",
                "maxQty": "100.00000000",
                "stepSize": "0.00000000",
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": self.min_notional,
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
        ]


DEFAULT_MARKETS: tuple[FakeMarket, ...] = (
    FakeMarket("BTCUSDT", "BTC", "USDT", "0.00001000", "0.01000000", "5.00000000", "50000.00"),
    FakeMarket("ETHUSDT", "ETH", "USDT", "0.00010000", "0.01000000", "5.00000000", "3000.00"),
    FakeMarket("SOLUSDT", "SOL", "USDT", "0.00100000", "0.01000000", "5.00000000", "150.00"),
    FakeMarket("ETHBTC", "ETH", "BTC", "0.00010000", "0.00001000", "0.00010000", "0.06000"),
    FakeMarket("BNBUSDT", "BNB", "USDT", "0.00100000", "0.01000000", "5.00000000", "600.00"),
)

#: USDⓈ-M perpetuals listed on /fapi/v1/exchangeInfo (markets only: the fake trades spot).
DEFAULT_PERPETUALS: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")

DEFAULT_BALANCES: Mapping[str, str] = {"USDT": "10000", "BTC": "0.5", "ETH": "2", "SOL": "0", "BNB": "0"}


class _BinanceError(Exception):
    """An error answer: HTTP status plus Binance's ``{"code", "msg"}`` body."""

    def __init__(self, status: int, code: int, msg: str, headers: Mapping[str, str] | None = None):
        super().__init__(msg)
        self.status = status
        self.code = code
        self.msg = msg
        self.headers = dict(headers or {})


def _fmt(value: Decimal, places: int = 8) -> str:
    return f"{value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_DOWN):f}"


def _is_multiple(value: Decimal, step: Decimal) -> bool:
    return step == 0 or (value / step) == (value / step).to_integral_value()


class FakeBinance:
    """A Binance spot REST server on 127.0.0.1 (port 0 picks a free port) in a background thread.

    State is in memory and guarded by one lock; every request is recorded in ``requests`` as
    ``(method, path, params)`` so tests can assert what ccxt actually sent.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        api_key: str = DEFAULT_API_KEY,
        markets: tuple[FakeMarket, ...] = DEFAULT_MARKETS,
        perpetuals: tuple[str, ...] = DEFAULT_PERPETUALS,
        balances: Mapping[str, str] = DEFAULT_BALANCES,
        timeout_delay_s: float = 1.0,
        spot_order_types: tuple[str, ...] = SPOT_ORDER_TYPES,
        futures_order_types: tuple[str, ...] | None = None,
    ):
        self.api_key = api_key
        #: How long a "timeout" failure holds the connection before answering (or dropping it).
        self.timeout_delay_s = timeout_delay_s
        self.markets: dict[str, FakeMarket] = {m.symbol: m for m in markets}
        self.perpetuals = perpetuals
        self.prices: dict[str, Decimal] = {m.symbol: Decimal(m.price) for m in markets}
        self.balances: dict[str, dict[str, Decimal]] = {
            asset: {"free": Decimal(amount), "locked": Decimal(0)} for asset, amount in balances.items()
        }
        self.orders: list[dict[str, Any]] = []
        #: The USDⓈ-M account (``tests.fake_futures``): positions, orders, conditional orders.
        self.futures = FakeFutures()
        #: What exchangeInfo lists per market; a fake "that cannot hold stops" lists fewer.
        self.spot_order_types = spot_order_types
        self.futures_order_types = futures_order_types or (
            "LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
        )  # fmt: skip
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.unknown_paths: list[tuple[str, str]] = []
        self._klines: dict[tuple[str, str], list[list[Any]]] = {}
        self._failures: list[list[Any]] = []  # [method or None, path, mode, remaining]
        #: Symbol -> the share of a market order filled at once (the rest waits for complete_fills).
        self._held_fills: dict[str, Decimal] = {}
        #: "BNB": commissions are paid in BNB (valued at BNBUSDT) while the account holds enough.
        self.commission_asset: str | None = None
        #: Released by release() (or stop()): a "hang" failure holds its answer until then.
        self._released = threading.Event()
        self._next_order_id = 1000
        self._lock = threading.RLock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None
        #: Answers held back per endpoint and symbol (see :class:`Stalls`).
        self.stalls = Stalls()

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL to hand to ``CcxtBroker(api_url=...)``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeBinance:
        self._thread = threading.Thread(target=self._serve, name="fake-binance", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        self._server.serve_forever(poll_interval=0.05)  # short poll: stop() returns quickly

    def stop(self) -> None:
        self._released.set()
        self.stalls.remove()  # release held requests: shutdown must not wait out a stall
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeBinance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- test controls -----------------------------------------------------------------

    def fail_next(self, endpoint: str, mode: str, times: int = 1) -> None:
        """Make the next ``times`` requests to ``endpoint`` fail with ``mode``.

        ``endpoint`` is a path (``/api/v3/account``, any method) or ``"METHOD /path"``
        (``"POST /api/v3/order"``). Modes: ``timeout`` (hold the connection for
        ``timeout_delay_s``; an order POST is still executed first, so reconciliation can find
        it), ``hang`` (execute, then hold the answer until :meth:`release`: a gateway killed
        meanwhile never records it), ``timeout_lost`` (hold, then drop; nothing executed),
        ``429`` (rate limit with ``Retry-After``), ``500``, ``503``, ``insufficient_balance``
        (Binance's -2010 refusal).
        """
        if mode not in FAILURE_MODES:
            raise ValueError(f"unknown failure mode {mode!r}; choose one of {', '.join(FAILURE_MODES)}")
        if times < 1:
            raise ValueError(f"times must be >= 1, got {times}")
        method, _, path = endpoint.rpartition(" ")
        if not path.startswith("/"):
            raise ValueError(f"endpoint must be '/path' or 'METHOD /path', got {endpoint!r}")
        with self._lock:
            self._failures.append([method.upper() or None, path, mode, times])

    def hold_fills(self, symbol: str = "BTCUSDT", fraction: str | float = 0) -> None:
        """Market orders on ``symbol`` are acknowledged with only ``fraction`` of them filled at
        once (0: ``NEW``, nothing filled; 0.4: ``PARTIALLY_FILLED``), as a live exchange under
        load does; the rest fills when the test calls :meth:`complete_fills`."""
        with self._lock:
            self._market(symbol)
            self._held_fills[symbol] = Decimal(str(fraction))

    def hold_futures_fills(self, symbol: str = "BTCUSDT") -> None:
        """Opening market orders on the perpetual ``symbol`` are acknowledged ``NEW`` with
        nothing filled; they fill when the test calls :meth:`complete_fills`."""
        with self._lock:
            self.futures.held.add(symbol)

    def complete_fills(self, client_order_id: str | None = None) -> int:
        """Fill the rest of every held market order (or of the one under ``client_order_id``) at
        the last price, spot and perpetual (the perpetuals' all at once); how many were
        completed. Later market orders fill at once again."""
        with self._lock:
            self._held_fills.clear()
            done = self.futures.complete_held(self.prices) if client_order_id is None else 0
            for order in self.orders:
                held = order.get("_held") and order["status"] in ("NEW", "PARTIALLY_FILLED")
                if held and client_order_id in (None, order["clientOrderId"]):
                    self._fill_part(order, Decimal(order["origQty"]) - Decimal(order["executedQty"]))
                    done += 1
            return done

    def set_balance(self, asset: str, amount: str | float) -> None:
        """Set the free balance of ``asset`` (nothing locked)."""
        with self._lock:
            self.balances[asset] = {"free": Decimal(str(amount)), "locked": Decimal(0)}

    def release(self) -> None:
        """Let the answers held by ``hang`` failures go (to a client long gone, usually)."""
        self._released.set()
    def clear_failures(self) -> None:
        """Forget every failure ``fail_next`` has not used up yet."""
        with self._lock:
            self._failures.clear()

    def set_price(self, symbol: str, price: str | float) -> None:
        """Move the last price of ``symbol`` (e.g. ``BTCUSDT``, spot and perpetual alike): resting
        limit orders that become marketable fill, and stop or take-profit orders (spot
        STOP_LOSS/TAKE_PROFIT, futures STOP_MARKET/TAKE_PROFIT_MARKET) that it crosses fire as
        market orders (a reduce-only one never flips a position)."""
        with self._lock:
            self._market(symbol)
            self.prices[symbol] = Decimal(str(price))
            for order in self.orders:
                if order["symbol"] == symbol and order["status"] == "NEW" and not order.get("_held"):
                    self._fill_if_marketable(order)
            self.futures.trigger(symbol, self.prices[symbol])

    def exit_orders(self, symbol: str = "BTCUSDT", status: str = "NEW") -> list[dict[str, Any]]:
        """The futures conditional orders of ``symbol`` in ``status`` (what protects a position)."""
        with self._lock:
            return [
                dict(a)
                for a in self.futures.algo_orders
                if a["symbol"] == symbol and a["algoStatus"] == status
            ]

    def futures_position(self, symbol: str = "BTCUSDT") -> float:
        """The signed futures position of ``symbol`` (one-way mode)."""
        with self._lock:
            return float(self.futures.position(symbol).amount)

    def set_klines(self, symbol: str, interval: str, rows: list[list[float]]) -> None:
        """Serve these candles (``[ms, o, h, l, c, v]``) for ``symbol``/``interval`` instead of
        generated ones."""
        if interval not in _INTERVAL_MS:
            raise ValueError(f"unknown interval {interval!r}")
        with self._lock:
            self._klines[(symbol, interval)] = [list(r) for r in rows]

    def orders_for(self, client_order_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [o for o in self.orders if o["clientOrderId"] == client_order_id]

    def balance(self, asset: str) -> Decimal:
        """Free plus locked balance of ``asset``."""
        with self._lock:
            entry = self.balances.get(asset, {"free": Decimal(0), "locked": Decimal(0)})
            return entry["free"] + entry["locked"]

    def request_count(self, method: str, path: str) -> int:
        return sum(1 for m, p, _ in self.requests if m == method and p == path)

    def state(self) -> dict[str, Any]:
        """Everything observable, as JSON-ready data (served at ``GET /__fake__/state``)."""
        with self._lock:
            return {
                "orders": [dict(o) for o in self.orders],
                "balances": {
                    a: {"free": _fmt(b["free"]), "locked": _fmt(b["locked"])}
                    for a, b in self.balances.items()
                },
                "prices": {s: str(p) for s, p in self.prices.items()},
                "requests": [list(r) for r in self.requests],
                "unknown_paths": [list(r) for r in self.unknown_paths],
                "futures": {
                    "wallet": str(self.futures.wallet),
                    "positions": {
                        s: {
                            "amount": str(p.amount),
                            "entry": str(p.entry),
                            "leverage": p.leverage,
                            "margin_type": p.margin_type,
                        }
                        for s, p in self.futures.positions.items()
                    },
                    "orders": [dict(o) for o in self.futures.orders],
                    "algo_orders": [dict(o) for o in self.futures.algo_orders],
                },
            }

    # --- request plumbing (called by the handler) --------------------------------------

    def _take_failure(self, method: str, path: str) -> str | None:
        with self._lock:
            for failure in self._failures:
                f_method, f_path, mode, _ = failure
                if f_path == path and (f_method is None or f_method == method):
                    failure[3] -= 1
                    if failure[3] == 0:
                        self._failures.remove(failure)
                    return str(mode)
        return None

    def _route(self, method: str, path: str, params: dict[str, str], headers: Message) -> Any:
        routes = {
            ("GET", "/api/v3/ping"): lambda p: {},
            ("GET", "/api/v3/time"): lambda p: {"serverTime": _now_ms()},
            ("GET", "/api/v3/exchangeInfo"): self._exchange_info,
            ("GET", "/fapi/v1/exchangeInfo"): self._futures_exchange_info,
            ("GET", "/dapi/v1/exchangeInfo"): lambda p: {
                "timezone": "UTC",
                "serverTime": _now_ms(),
                "symbols": [],
            },
            ("GET", "/api/v3/ticker/price"): self._ticker_price,
            ("GET", "/api/v3/ticker/24hr"): self._ticker_24hr,
            ("GET", "/api/v3/ticker/bookTicker"): self._book_ticker,
            ("GET", "/api/v3/klines"): self._get_klines,
            ("POST", "/api/v3/order"): self._create_order,
            ("GET", "/api/v3/order"): self._query_order,
            ("DELETE", "/api/v3/order"): self._cancel_order,
            ("GET", "/api/v3/openOrders"): self._open_orders,
            ("GET", "/api/v3/allOrders"): self._all_orders,
            ("GET", "/api/v3/account"): self._account,
            ("GET", "/api/v3/myTrades"): self._my_trades,
            **self._futures_routes(),
        }
        handler = routes.get((method, path))
        if handler is None:
            with self._lock:
                self.unknown_paths.append((method, path))
            raise _BinanceError(404, -1100, f"Fake Binance does not implement {method} {path}.")
        if path in _PRIVATE_PATHS or (path.startswith("/fapi/") and path not in _PUBLIC_FAPI):
            self._authenticate(params, headers)
        with self._lock:
            try:
                return handler(params)
            except FuturesError as e:
                raise _BinanceError(e.status, e.code, e.msg) from e

    def _futures_routes(self) -> dict[tuple[str, str], Any]:
        f = self.futures

        def last(p: Mapping[str, str]) -> Decimal:
            if p.get("symbol") not in self.perpetuals:
                raise _BinanceError(400, -1121, "Invalid symbol.")
            return self.prices[p["symbol"]]

        def ids() -> set[str]:
            return f.client_ids()

        return {
            ("GET", "/fapi/v1/time"): lambda p: {"serverTime": _now_ms()},
            ("GET", "/fapi/v1/ticker/24hr"): lambda p: self._one_ticker_24hr(
                self._market(p.get("symbol")).symbol
            ),
            ("GET", "/fapi/v1/ticker/price"): lambda p: {"symbol": p["symbol"], "price": _fmt(last(p))},
            ("POST", "/fapi/v1/leverage"): lambda p: (last(p), f.set_leverage(p))[1],
            ("POST", "/fapi/v1/marginType"): lambda p: (last(p), f.set_margin_type(p))[1],
            ("POST", "/fapi/v1/order"): lambda p: f.create_order(p, last(p), ids()),
            ("GET", "/fapi/v1/order"): f.query_order,
            ("DELETE", "/fapi/v1/order"): f.cancel_order,
            ("POST", "/fapi/v1/algoOrder"): lambda p: f.create_algo(p, last(p), ids()),
            ("GET", "/fapi/v1/algoOrder"): f.query_algo,
            ("DELETE", "/fapi/v1/algoOrder"): f.cancel_algo,
            ("GET", "/fapi/v1/openOrders"): f.open_orders,
            ("GET", "/fapi/v1/openAlgoOrders"): f.open_algo_orders,
            ("GET", "/fapi/v2/positionRisk"): lambda p: f.position_risk(p, self.prices),
            ("GET", "/fapi/v3/positionRisk"): lambda p: f.position_risk(p, self.prices),
            ("GET", "/fapi/v1/leverageBracket"): lambda p: [
                {
                    "symbol": s,
                    "brackets": [
                        {
                            "bracket": 1,
                            "initialLeverage": 125,
                            "notionalCap": 1000000,
                            "notionalFloor": 0,
                            "maintMarginRatio": 0.004,
                            "cum": 0,
                        }
                    ],
                }
                for s in self.perpetuals
            ],
            ("GET", "/fapi/v2/balance"): lambda p: f.balance(),
            ("GET", "/fapi/v3/balance"): lambda p: f.balance(),
        }

    def _authenticate(self, params: Mapping[str, str], headers: Message) -> None:
        if headers.get("X-MBX-APIKEY") != self.api_key:
            raise _BinanceError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        for name in ("timestamp", "signature"):
            if not params.get(name):
                raise _BinanceError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null.")

    # --- public endpoints ----------------------------------------------------------------

    def _market(self, symbol: str | None) -> FakeMarket:
        if not symbol:
            raise _BinanceError(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null.")
        market = self.markets.get(symbol)
        if market is None:
            raise _BinanceError(400, -1121, "Invalid symbol.")
        return market

    def _exchange_info(self, params: Mapping[str, str]) -> dict[str, Any]:
        symbols = [
            {
                "symbol": m.symbol,
                "status": "TRADING",
                "baseAsset": m.base,
                "baseAssetPrecision": 8,
                "quoteAsset": m.quote,
                "quotePrecision": 8,
                "quoteAssetPrecision": 8,
                "baseCommissionPrecision": 8,
                "quoteCommissionPrecision": 8,
                "orderTypes": list(self.spot_order_types),
                "icebergAllowed": True,
                "ocoAllowed": True,
                "quoteOrderQtyMarketAllowed": True,
                "allowTrailingStop": True,
                "cancelReplaceAllowed": True,
                "isSpotTradingAllowed": True,
                "isMarginTradingAllowed": False,
                "filters": m.filters(),
                "permissions": [],
                "permissionSets": [["SPOT"]],
                "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
            }
            for m in self.markets.values()
        ]
        return {
            "timezone": "UTC",
            "serverTime": _now_ms(),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            ],
            "exchangeFilters": [],
            "symbols": symbols,
        }

    def _futures_exchange_info(self, params: Mapping[str, str]) -> dict[str, Any]:
        symbols = []
        for name in self.perpetuals:
            m = self.markets[name]
            symbols.append(
                {
                    "symbol": m.symbol,
                    "pair": m.symbol,
                    "contractType": "PERPETUAL",
                    "deliveryDate": 4133404800000,
                    "onboardDate": 1569398400000,
                    "status": "TRADING",
                    "baseAsset": m.base,
                    "quoteAsset": m.quote,
                    "marginAsset": m.quote,
                    "pricePrecision": 2,
                    "quantityPrecision": 3,
                    "baseAssetPrecision": 8,
                    "quotePrecision": 8,
                    "underlyingType": "COIN",
                    "triggerProtect": "0.0500",
                    "orderTypes": list(self.futures_order_types),
                    "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": "0.10",
                            "maxPrice": "4529764",
                            "tickSize": "0.10",
                        },
                        {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "1000", "stepSize": "0.001"},
                        {"filterType": "MIN_NOTIONAL", "notional": "100"},
                    ],
                }
            )
        return {"timezone": "UTC", "serverTime": _now_ms(), "assets": [], "symbols": symbols}

    def _ticker_price(self, params: Mapping[str, str]) -> Any:
        if "symbol" not in params:
            return [{"symbol": s, "price": _fmt(p)} for s, p in self.prices.items()]
        market = self._market(params["symbol"])
        return {"symbol": market.symbol, "price": _fmt(self.prices[market.symbol])}

    def _ticker_24hr(self, params: Mapping[str, str]) -> Any:
        if "symbol" not in params:
            return [self._one_ticker_24hr(s) for s in self.markets]
        return self._one_ticker_24hr(self._market(params["symbol"]).symbol)

    def _one_ticker_24hr(self, symbol: str) -> dict[str, Any]:
        last = self.prices[symbol]
        tick = Decimal(self.markets[symbol].tick_size)
        now = _now_ms()
        open_ = last * Decimal("0.98")
        return {
            "symbol": symbol,
            "priceChange": _fmt(last - open_),
            "priceChangePercent": "2.041",
            "weightedAvgPrice": _fmt(last * Decimal("0.99")),
            "prevClosePrice": _fmt(open_),
            "lastPrice": _fmt(last),
            "lastQty": "0.01000000",
            "bidPrice": _fmt(last - tick),
            "bidQty": "1.00000000",
            "askPrice": _fmt(last + tick),
            "askQty": "1.00000000",
            "openPrice": _fmt(open_),
            "highPrice": _fmt(last * Decimal("1.01")),
            "lowPrice": _fmt(last * Decimal("0.97")),
            "volume": "1000.00000000",
            "quoteVolume": _fmt(last * 1000),
            "openTime": now - 86_400_000,
            "closeTime": now,
            "firstId": 1,
            "lastId": 1000,
            "count": 1000,
        }

    def _book_ticker(self, params: Mapping[str, str]) -> dict[str, Any]:
        market = self._market(params.get("symbol"))
        last = self.prices[market.symbol]
        tick = Decimal(market.tick_size)
        return {
            "symbol": market.symbol,
            "bidPrice": _fmt(last - tick),
            "bidQty": "1.00000000",
            "askPrice": _fmt(last + tick),
            "askQty": "1.00000000",
        }

    def _get_klines(self, params: Mapping[str, str]) -> list[list[Any]]:
        market = self._market(params.get("symbol"))
        interval = params.get("interval", "")
        step = _INTERVAL_MS.get(interval)
        if step is None:
            raise _BinanceError(400, -1120, "Invalid interval.")
        limit = min(int(params.get("limit", 500)), 1000)
        stored = self._klines.get((market.symbol, interval))
        if stored is not None:
            start = int(params.get("startTime", 0))
            end = int(params.get("endTime", 2**62))
            rows = [r for r in stored if start <= r[0] <= end][:limit]
            return [_kline_row(r, step) for r in rows]
        if "startTime" in params:
            first = int(params["startTime"]) // step * step + (step if int(params["startTime"]) % step else 0)
        else:
            first = (_now_ms() // step - limit + 1) * step
        last_open = _now_ms() // step * step
        if "endTime" in params:
            last_open = min(last_open, int(params["endTime"]) // step * step)
        opens = range(first, last_open + 1, step)[:limit]
        return [
            _kline_row(_generated_candle(market.symbol, float(self.prices[market.symbol]), t, step), step)
            for t in opens
        ]

    # --- private endpoints ---------------------------------------------------------------

    def _create_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        market = self._market(params.get("symbol"))
        side = params.get("side", "")
        order_type = params.get("type", "")
        if side not in ("BUY", "SELL"):
            raise _BinanceError(400, -1102, "Mandatory parameter 'side' was not sent, was empty/null.")
        if order_type not in ("MARKET", "LIMIT", "STOP_LOSS", "TAKE_PROFIT"):
            raise _BinanceError(400, -1116, "Invalid orderType.")
        if order_type in ("STOP_LOSS", "TAKE_PROFIT") and not params.get("stopPrice"):
            raise _BinanceError(400, -1102, "Mandatory parameter 'stopPrice' was not sent, was empty/null.")
        client_id = params.get("newClientOrderId") or f"fake-{self._next_order_id}"
        if any(o["clientOrderId"] == client_id for o in self.orders):
            raise _BinanceError(400, -2010, "Duplicate order sent.")
        last = self.prices[market.symbol]
        qty, price = self._validated_qty_price(market, params, order_type, last)
        if qty * price < Decimal(market.min_notional):
            raise _BinanceError(400, -1013, "Filter failure: NOTIONAL")
        pay_asset, pay_amount = (market.quote, qty * price) if side == "BUY" else (market.base, qty)
        self._debit(pay_asset, pay_amount)
        now = _now_ms()
        order: dict[str, Any] = {
            "symbol": market.symbol,
            "orderId": self._next_order_id,
            "orderListId": -1,
            "clientOrderId": client_id,
            "price": _fmt(price) if order_type == "LIMIT" else "0.00000000",
            "origQty": _fmt(qty),
            "executedQty": "0.00000000",
            "cummulativeQuoteQty": "0.00000000",
            "status": "NEW",
            "timeInForce": params.get("timeInForce", "GTC"),
            "type": order_type,
            "side": side,
            "stopPrice": _fmt(Decimal(params["stopPrice"])) if "stopPrice" in params else "0.00000000",
            "icebergQty": "0.00000000",
            "time": now,
            "updateTime": now,
            "isWorking": True,
            "workingTime": now,
            "origQuoteOrderQty": "0.00000000",
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "_limit": price,
            "_locked": pay_amount,
            "fills": [],
        }
        self._next_order_id += 1
        self.orders.append(order)
        self._fill_if_marketable(order)
        response = _public_order(order)
        response["transactTime"] = now
        response["fills"] = list(order["fills"])
        return response

    def _validated_qty_price(
        self, market: FakeMarket, params: Mapping[str, str], order_type: str, last: Decimal
    ) -> tuple[Decimal, Decimal]:
        step = Decimal(market.step_size)
        tick = Decimal(market.tick_size)
        try:
            if order_type == "MARKET" and "quoteOrderQty" in params and "quantity" not in params:
                qty = (Decimal(params["quoteOrderQty"]) / last).quantize(step, rounding=ROUND_DOWN)
            else:
                qty = Decimal(params["quantity"])
            price = Decimal(params["price"]) if order_type == "LIMIT" else last
        except KeyError as e:
            raise _BinanceError(400, -1102, f"Mandatory parameter '{e.args[0]}' was not sent.") from e
        except ArithmeticError as e:
            raise _BinanceError(400, -1100, "Illegal characters found in a parameter.") from e
        if qty < Decimal(market.min_qty or market.step_size) or not _is_multiple(qty, step):
            raise _BinanceError(400, -1013, "Filter failure: LOT_SIZE")
        if order_type == "LIMIT" and (price < tick or not _is_multiple(price, tick)):
            raise _BinanceError(400, -1013, "Filter failure: PRICE_FILTER")
        return qty, price

    def _debit(self, asset: str, amount: Decimal) -> None:
        entry = self.balances.setdefault(asset, {"free": Decimal(0), "locked": Decimal(0)})
        if entry["free"] < amount:
            raise _BinanceError(400, -2010, "Account has insufficient balance for requested action.")
        entry["free"] -= amount
        entry["locked"] += amount

    def _credit(self, asset: str, amount: Decimal) -> None:
        entry = self.balances.setdefault(asset, {"free": Decimal(0), "locked": Decimal(0)})
        entry["free"] += amount

    def _fill_if_marketable(self, order: dict[str, Any]) -> None:
        """Fill the whole order at the last price when it is a market order or a limit order
        that crosses it (a market order on a symbol under :meth:`hold_fills`: only its share)."""
        market = self.markets[order["symbol"]]
        last = self.prices[market.symbol]
        limit: Decimal = order["_limit"]
        buy = order["side"] == "BUY"
        if order["type"] == "LIMIT" and ((buy and limit < last) or (not buy and limit > last)):
            return
        if order["type"] in ("STOP_LOSS", "TAKE_PROFIT") and not _crossed(
            order["type"], order["side"], Decimal(order["stopPrice"]), last
        ):
            return  # a resting stop or take-profit: it fires when set_price crosses it
        qty = Decimal(order["origQty"])
        if order["type"] == "MARKET" and market.symbol in self._held_fills:
            order["_held"] = True
            qty = (qty * self._held_fills[market.symbol]).quantize(
                Decimal(market.step_size), rounding=ROUND_DOWN
            )
            if qty <= 0:
                return  # acknowledged NEW, nothing filled yet
        self._fill_part(order, qty)

    def _fill_part(self, order: dict[str, Any], qty: Decimal) -> None:
        """Fill ``qty`` more of ``order`` at the last price: the fee is taken from what the
        account receives, or paid in BNB (see ``commission_asset``); balances move, the order's
        executed amount, quote amount, status and fills grow."""
        market = self.markets[order["symbol"]]
        last = self.prices[market.symbol]
        buy = order["side"] == "BUY"
        cost = qty * last
        executed = Decimal(order["executedQty"]) + qty
        done = executed >= Decimal(order["origQty"])
        locked_total: Decimal = order.setdefault("_locked_total", order["_locked"])
        share = qty / Decimal(order["origQty"])
        release = order["_locked"] if done else min(locked_total * share, order["_locked"])
        fee, fee_asset = self._commission(market, qty, cost, buy)
        if buy:
            self.balances[market.quote]["locked"] -= release
            self._credit(market.quote, release - cost)  # a limit buy locked at its price, filled lower
            self._credit(market.base, qty - (fee if fee_asset == market.base else 0))
        else:
            self.balances[market.base]["locked"] -= release
            self._credit(market.quote, cost - (fee if fee_asset == market.quote else 0))
        order.update(
            status="FILLED" if done else "PARTIALLY_FILLED",
            executedQty=_fmt(executed),
            cummulativeQuoteQty=_fmt(Decimal(order["cummulativeQuoteQty"]) + cost),
            updateTime=_now_ms(),
            _locked=order["_locked"] - release,
        )
        order["fills"].append(
            {
                "price": _fmt(last),
                "qty": _fmt(qty),
                "commission": _fmt(fee),
                "commissionAsset": fee_asset,
                "tradeId": order["orderId"] * 10 + len(order["fills"]),
            }
        )

    def _commission(self, market: FakeMarket, qty: Decimal, cost: Decimal, buy: bool) -> tuple[Decimal, str]:
        """The fee of a fill and its asset: in BNB when so set and the account holds enough
        (debited here), else in the asset received."""
        if self.commission_asset == "BNB" and "BNBUSDT" in self.prices:
            quote_value = (
                cost if market.quote == "USDT" else cost * self.prices.get(f"{market.quote}USDT", Decimal(0))
            )
            fee = (quote_value * BNB_TAKER_FEE / self.prices["BNBUSDT"]).quantize(Decimal("0.00000001"))
            bnb = self.balances.get("BNB")
            if bnb is not None and bnb["free"] >= fee > 0:
                bnb["free"] -= fee
                return fee, "BNB"
        if buy:
            return qty * TAKER_FEE, market.base
        return cost * TAKER_FEE, market.quote

    def _find_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        market = self._market(params.get("symbol"))
        for order in self.orders:
            if order["symbol"] != market.symbol:
                continue
            if "orderId" in params and str(order["orderId"]) == params["orderId"]:
                return order
            if "origClientOrderId" in params and order["clientOrderId"] == params["origClientOrderId"]:
                return order
        if "orderId" not in params and "origClientOrderId" not in params:
            raise _BinanceError(
                400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
            )
        raise _BinanceError(400, -2013, "Order does not exist.")

    def _query_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        return _public_order(self._find_order(params))

    def _cancel_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        order = self._find_order(params)
        if order["status"] not in ("NEW", "PARTIALLY_FILLED"):
            raise _BinanceError(400, -2011, "Unknown order sent.")
        market = self.markets[order["symbol"]]
        asset = market.quote if order["side"] == "BUY" else market.base
        self.balances[asset]["locked"] -= order["_locked"]
        self._credit(asset, order["_locked"])
        order.update(status="CANCELED", updateTime=_now_ms(), _locked=Decimal(0))
        answer = _public_order(order)
        answer["origClientOrderId"] = order["clientOrderId"]
        return answer

    def _open_orders(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        symbol = self._market(params["symbol"]).symbol if "symbol" in params else None
        return [
            _public_order(o)
            for o in self.orders
            if o["status"] in ("NEW", "PARTIALLY_FILLED") and (symbol is None or o["symbol"] == symbol)
        ]

    def _all_orders(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        symbol = self._market(params.get("symbol")).symbol
        return [_public_order(o) for o in self.orders if o["symbol"] == symbol]

    def _my_trades(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        symbol = self._market(params.get("symbol")).symbol
        trades = []
        for o in self.orders:
            if o["symbol"] != symbol or ("orderId" in params and str(o["orderId"]) != params["orderId"]):
                continue
            for fill in o["fills"]:
                trades.append(
                    {
                        "symbol": symbol,
                        "id": fill["tradeId"],
                        "orderId": o["orderId"],
                        "orderListId": -1,
                        "price": fill["price"],
                        "qty": fill["qty"],
                        "quoteQty": _fmt(Decimal(fill["price"]) * Decimal(fill["qty"])),
                        "commission": fill["commission"],
                        "commissionAsset": fill["commissionAsset"],
                        "time": o["updateTime"],
                        "isBuyer": o["side"] == "BUY",
                        "isMaker": False,
                        "isBestMatch": True,
                    }
                )
        return trades

    def _account(self, params: Mapping[str, str]) -> dict[str, Any]:
        return {
            "makerCommission": 10,
            "takerCommission": 10,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {"maker": "0.00100000", "taker": "0.00100000", "buyer": "0", "seller": "0"},
            "canTrade": True,
            "canWithdraw": True,
            "canDeposit": True,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": _now_ms(),
            "accountType": "SPOT",
            "balances": [
                {"asset": a, "free": _fmt(b["free"]), "locked": _fmt(b["locked"])}
                for a, b in self.balances.items()
            ],
            "permissions": ["SPOT"],
            "uid": 1,
        }


def _now_ms() -> int:
    return int(time.time() * 1000)


def _public_order(order: dict[str, Any]) -> dict[str, Any]:
    """The order as Binance's query endpoints show it (no fills, no private bookkeeping)."""
    return {k: v for k, v in order.items() if not k.startswith("_") and k != "fills"}


def _generated_candle(symbol: str, price: float, open_ms: int, step: int) -> list[float]:
    """A deterministic candle around ``price`` for ``open_ms``: the same request always gets
    the same answer, so tests that fetch twice see consistent data."""
    rng = random.Random(f"{symbol}:{step}:{open_ms}")
    drift = math.sin(open_ms / step / 24.0) * 0.02
    open_ = price * (1 + drift + rng.uniform(-0.002, 0.002))
    close = price * (1 + drift + rng.uniform(-0.002, 0.002))
    high = max(open_, close) * (1 + rng.uniform(0, 0.003))
    low = min(open_, close) * (1 - rng.uniform(0, 0.003))
    return [
        open_ms,
        round(open_, 2),
        round(high, 2),
        round(low, 2),
        round(close, 2),
        round(rng.uniform(5, 50), 4),
    ]


def _kline_row(candle: list[Any], step: int) -> list[Any]:
    open_ms, o, h, low, c, v = candle[:6]
    return [
        int(open_ms),
        f"{o:.8f}",
        f"{h:.8f}",
        f"{low:.8f}",
        f"{c:.8f}",
        f"{v:.8f}",
        int(open_ms) + step - 1,
        f"{float(v) * float(c):.8f}",
        100,
        f"{float(v) / 2:.8f}",
        f"{float(v) * float(c) / 2:.8f}",
        "0",
    ]


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeBinance/1.0"
    protocol_version = "HTTP/1.1"
    #: Headers and body go out in two writes; without this, Nagle's algorithm meets the client's
    #: delayed ACK and every answer takes ~40 ms.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: requests are recorded in ``fake.requests`` instead of printed."""

    @property
    def fake(self) -> FakeBinance:
        return self.server.fake  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def _handle(self, method: str) -> None:
        split = urlsplit(self.path)
        path = split.path
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        if path.startswith("/__fake__/"):
            self._control(method, path, body)
            return
        if body and "json" not in (self.headers.get("Content-Type") or ""):
            params.update(parse_qsl(body, keep_blank_values=True))
        with self.fake._lock:
            self.fake.requests.append((method, path, params))
        self.fake.stalls.hold(method, path, params)
        mode = self.fake._take_failure(method, path)
        if mode is not None and self._inject(mode, method, path, params):
            return
        try:
            payload = self.fake._route(method, path, params, self.headers)
        except _BinanceError as e:
            self._send(e.status, {"code": e.code, "msg": e.msg}, e.headers)
            return
        self._send(200, payload)

    def _inject(self, mode: str, method: str, path: str, params: dict[str, str]) -> bool:
        """Apply a failure; True when the request has been fully answered (or dropped)."""
        if mode == "timeout":
            try:  # the exchange did the work; only the answer is late
                payload: Any = self.fake._route(method, path, params, self.headers)
                status = 200
            except _BinanceError as e:
                payload, status = {"code": e.code, "msg": e.msg}, e.status
            # Not a wait: the simulated exchange answering late, past the client's socket timeout
            # (ccxt's timer is the real clock, so the lateness is real time too).
            time.sleep(self.fake.timeout_delay_s)
            self._send(status, payload)
            return True
        if mode == "hang":  # the exchange did the work; the answer waits until release()
            with contextlib.suppress(_BinanceError):  # a refusal is held all the same
                self.fake._route(method, path, params, self.headers)
            self.fake._released.wait(120)
            self.close_connection = True
            return True
        if mode == "timeout_lost":
            time.sleep(self.fake.timeout_delay_s)  # as above: late past the client's timeout, then no answer
            self.close_connection = True
            return True
        if mode == "429":
            self._send(
                429,
                {"code": -1003, "msg": "Too many requests; current limit of IP is 6000 requests per minute."},
                {"Retry-After": "1"},
            )
            return True
        if mode in ("500", "503"):
            msg = (
                "An unknown error occurred while processing the request."
                if mode == "500"
                else "Service unavailable from a restricted location according to 'b. Eligibility'."
            )
            self._send(int(mode), {"code": -1000 if mode == "500" else 0, "msg": msg})
            return True
        if mode == "insufficient_balance":
            self._send(400, {"code": -2010, "msg": "Account has insufficient balance for requested action."})
            return True
        raise AssertionError(f"unhandled failure mode {mode}")

    def _control(self, method: str, path: str, body: str) -> None:
        """Test controls over HTTP, for the standalone server used by end-to-end tests."""
        try:
            if method == "GET" and path == "/__fake__/state":
                self._send(200, self.fake.state())
            elif method == "POST" and path == "/__fake__/fail_next":
                spec = json.loads(body or "{}")
                self.fake.fail_next(spec["endpoint"], str(spec["mode"]), int(spec.get("times", 1)))
                self._send(200, {"ok": True})
            elif method == "POST" and path == "/__fake__/hold_fills":
                spec = json.loads(body or "{}")
                self.fake.hold_fills(spec.get("symbol", "BTCUSDT"), spec.get("fraction", 0))
                self._send(200, {"ok": True})
            elif method == "POST" and path == "/__fake__/complete_fills":
                spec = json.loads(body or "{}")
                self._send(200, {"completed": self.fake.complete_fills(spec.get("client_order_id"))})
            elif path == "/__fake__/stall" and method in ("POST", "DELETE"):
                spec = json.loads(body or "{}")
                if method == "POST":
                    self.fake.stalls.add(spec["endpoint"], float(spec["seconds"]), times=spec.get("times"))
                else:
                    self.fake.stalls.remove(spec.get("endpoint"))
                self._send(200, {"ok": True})
            elif method == "POST" and path == "/__fake__/price":
                spec = json.loads(body or "{}")
                self.fake.set_price(spec["symbol"], spec["price"])
                self._send(200, {"ok": True})
            else:
                self._send(404, {"error": f"no control endpoint {method} {path}"})
        except (KeyError, ValueError, _BinanceError) as e:
            self._send(400, {"error": f"bad control request: {e!r}"})

    def _send(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (its timeout was shorter than our delay): that is the point.
            self.close_connection = True


# --- stalls: slow answers per endpoint and symbol ---------------------------------------------


@dataclass
class _Stall:
    endpoint: str
    method: str | None
    path: str
    params: dict[str, str]
    seconds: float
    times: int | None
    released: threading.Event


class Stalls:
    """Answers held back per endpoint, and per symbol (or any other parameter): what a live
    exchange does when one market's data is slow while the rest answer at once.

    ``fake.stalls.add("/api/v3/ticker/24hr?symbol=BTCUSDT", 10)`` holds every request that
    matches (the method is optional: ``"GET /path"``; each ``name=value`` after ``?`` must be among
    the request's parameters) for 10 s before the fake handles it, so the answer reflects the
    state when it is sent. Other requests are answered meanwhile (each has its own thread). A stall
    lasts until :meth:`remove` (which releases the requests it holds at once) or for ``times``
    requests. ``holding`` counts the requests held right now; ``held`` lists ``(method, path,
    symbol, seconds held)`` of every request held and since answered.
    Over HTTP: ``POST /__fake__/stall`` ``{"endpoint": ..., "seconds": 10}``, ``DELETE`` to remove.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: list[_Stall] = []
        self.holding = 0
        self.held: list[tuple[str, str, str | None, float]] = []

    def add(self, endpoint: str, seconds: float, *, times: int | None = None) -> None:
        method, _, target = endpoint.rpartition(" ")
        split = urlsplit(target)
        if not split.path.startswith("/") or not seconds > 0 or (times is not None and times < 1):
            raise ValueError(
                f"stall needs '[METHOD ]/path[?name=value]', seconds > 0, times >= 1: {endpoint!r}"
            )
        stall = _Stall(endpoint, method.upper() or None, split.path, dict(parse_qsl(split.query)), seconds,
                       times, threading.Event())  # fmt: skip
        with self._lock:
            self._active.append(stall)

    def remove(self, endpoint: str | None = None) -> None:
        """Remove the stalls of ``endpoint`` (as given to :meth:`add`; None: every stall)."""
        with self._lock:
            for stall in list(self._active):
                if endpoint is None or endpoint == stall.endpoint:
                    self._active.remove(stall)
                    stall.released.set()

    def hold(self, method: str, path: str, params: Mapping[str, str]) -> None:
        """Called by the handler before it answers: wait out the first stall that matches."""
        with self._lock:
            stall = next((s for s in self._active if _stall_matches(s, method, path, params)), None)
            if stall is None:
                return
            if stall.times is not None:
                stall.times -= 1
                if stall.times == 0:
                    self._active.remove(stall)
            self.holding += 1
        started = time.monotonic()
        stall.released.wait(stall.seconds)
        with self._lock:
            self.holding -= 1
            self.held.append((method, path, params.get("symbol"), time.monotonic() - started))


def _stall_matches(stall: _Stall, method: str, path: str, params: Mapping[str, str]) -> bool:
    if stall.path != path or (stall.method is not None and stall.method != method):
        return False
    return all(params.get(name) == value for name, value in stall.params.items())


@pytest.fixture
def fake_exchange() -> Iterator[FakeBinance]:
    """A running FakeBinance with default markets and balances, stopped after the test."""
    fake = FakeBinance(timeout_delay_s=1.0)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def main(argv: list[str] | None = None) -> None:
    """Run the fake exchange in the foreground until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m tests.fake_exchange", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="the X-MBX-APIKEY value to accept")
    parser.add_argument("--timeout-delay", type=float, default=5.0, help="seconds a 'timeout' failure holds")
    args = parser.parse_args(argv)
    fake = FakeBinance(port=args.port, api_key=args.api_key, timeout_delay_s=args.timeout_delay)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with fake:
        print(f"fake binance listening on {fake.url}", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
