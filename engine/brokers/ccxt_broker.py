"""Live (or sandbox) trading on any ccxt exchange, behind the one Broker interface.

This module is the only place that touches ccxt for trading. It owns one ccxt instance and
turns every ccxt error into the project's exception tree (``engine.exceptions``) with
``raise ... from e``, naming pair, side, amount and price, so callers catch one tree.

Two rules shape it:

* Reads (markets, tickers, balances, orders, candles) are retried with exponential backoff on
  temporary errors, because reading twice is harmless.
* Reads that may be stale (the ticker, the equity) are cached with their age
  (``engine.brokers.readings``), and the markets are loaded at start-up and refreshed in the
  background (:meth:`CcxtBroker.start`): nothing on an alert's path waits on loading them.
* An order is sent once, with a client order id. When the answer is lost (timeout, connection
  drop, 5xx: Binance documents that a 5xx leaves the order's status unknown), the order is
  looked up by that id, retrying the lookup with backoff; if it cannot be found the broker raises
  :class:`OrderUncertainError` rather than sending it again, because a second order is worse than
  a missing one.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from decimal import ROUND_DOWN, Decimal
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

import ccxt

from engine.brokers.base import (
    Broker,
    ExitHolder,
    Fee,
    MarketLimits,
    OrderRequest,
    OrderResult,
    OrderStatus,
    ProtectiveOrder,
    Side,
)
from engine.brokers.ccxt_pool import ExchangePool
from engine.brokers.readings import ReadCache, Reading, ReadPolicy
from engine.exceptions import (
    BrokerError,
    ExchangeUnavailableError,
    InsufficientFundsError,
    InvalidOrderError,
    OperationalError,
    OrderUncertainError,
    TemporaryError,
    UnknownSymbolError,
)
from engine.symbols import to_ccxt_symbol

__all__ = ["CcxtBroker", "map_ccxt_error"]

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

#: Credential keys ccxt understands; anything else is a configuration mistake.
_CREDENTIAL_KEYS = frozenset({"apiKey", "secret", "password", "uid", "privateKey", "walletAddress"})

#: Per-exchange ccxt options (quirks are data, not ``if`` chains). For binance, ``load_markets``
#: would also fetch currencies and margin pairs (signed sapi calls) and coin-margined futures; the
#: gateway trades spot and USDⓈ-M perpetuals (TradingView's ``.P``), so it loads just those two.
_BINANCE_OPTIONS: Mapping[str, Any] = {
    "fetchCurrencies": False,
    "fetchMargins": False,
    "fetchMarkets": {"types": ["spot", "linear"], "loadAllOptions": False},
    # Asking for the margin mode a symbol already has is no error: the gateway sets it before
    # an order whenever it may have changed (after a restart, say).
    "setMarginMode": {"throwMarginModeAlreadySet": False},
}
_EXCHANGE_OPTIONS: Mapping[str, Mapping[str, Any]] = {
    "binance": _BINANCE_OPTIONS,
    "binanceus": {"fetchCurrencies": False, "fetchMargins": False},  # spot only already
}

#: Exchanges whose ``fetch_order`` can look an order up by client order id (the ccxt param name).
#: Others are reconciled by scanning recent orders for the id. (binanceus inherits binance's.)
_FETCH_BY_CLIENT_ID: Mapping[str, str] = {"binance": "clientOrderId", "binanceus": "clientOrderId"}

#: How an exchange's conditional (stop, take-profit) orders are looked up and cancelled on a
#: contract market when ccxt keeps them apart from plain orders (binance's USDⓈ-M algo orders):
#: extra params for fetch_order/cancel_order, and the field naming the order a fired one became.
_CONDITIONAL_LOOKUP: Mapping[str, tuple[Mapping[str, Any], str]] = {
    "binance": ({"trigger": True}, "actualOrderId"),
}

#: The order types a contract market must list (in ccxt's ``market["info"]["orderTypes"]``) to
#: hold a market stop and take-profit. Exchanges not named here are judged on ``has`` alone.
_EXIT_ORDER_TYPES: Mapping[str, tuple[str, ...]] = {"binance": ("STOP_MARKET", "TAKE_PROFIT_MARKET")}

#: Why spot exits are the gateway's to watch (said once at start-up).
SPOT_EXIT_REASON = (
    "a spot order locks the coins it sells, so a stop and its take-profits cannot rest together "
    "on one position (OCO lists are not unified by ccxt)"
)

_STATUS: Mapping[str, OrderStatus] = {
    "closed": "filled",
    "canceled": "canceled",
    "cancelled": "canceled",
    "rejected": "rejected",
    "expired": "rejected",
}


def map_ccxt_error(error: ccxt.BaseError, context: str) -> BrokerError:
    """The project error for a ccxt error, most specific class first; ``context`` names what was
    being done (pair, side, amount, price) and leads the message."""
    message = f"{context}: {type(error).__name__}: {error}"
    table: tuple[tuple[type[ccxt.BaseError], type[BrokerError]], ...] = (
        (ccxt.InsufficientFunds, InsufficientFundsError),
        (ccxt.InvalidOrder, InvalidOrderError),
        (ccxt.BadSymbol, UnknownSymbolError),
        (ccxt.AuthenticationError, OperationalError),  # includes PermissionDenied, AccountSuspended
        (ccxt.RateLimitExceeded, TemporaryError),
        (ccxt.DDoSProtection, TemporaryError),
        (ccxt.RequestTimeout, ExchangeUnavailableError),
        (ccxt.ExchangeNotAvailable, ExchangeUnavailableError),
        (ccxt.NetworkError, ExchangeUnavailableError),
        (ccxt.OperationFailed, TemporaryError),  # e.g. Binance -1000 "unknown error", bad response
        (ccxt.NotSupported, OperationalError),
    )
    for ccxt_class, ours in table:
        if isinstance(error, ccxt_class):
            return ours(message)
    return BrokerError(message)


def _retried_read(method: Callable[P, R]) -> Callable[P, R]:
    """Retry a read on :class:`TemporaryError` with exponential backoff (``self.read_retries``
    times after the first try, sleeping ``self.backoff_s * 2**n``). Other errors pass through."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        self = args[0]
        retries: int = self.read_retries  # type: ignore[attr-defined]
        for attempt in range(retries + 1):
            try:
                return method(*args, **kwargs)
            except TemporaryError as e:
                if attempt == retries:
                    raise
                delay = self.backoff_s * 2**attempt  # type: ignore[attr-defined]
                log.warning(
                    "%s failed (%s); retry %d/%d in %.2fs", method.__name__, e, attempt + 1, retries, delay
                )
                time.sleep(delay)
        raise AssertionError("unreachable")  # the loop either returns or raises

    return wrapper


class CcxtBroker(Broker):
    """Trades on ``exchange_id`` (any ccxt id) with one reused, rate-limited ccxt instance.

    ``credentials`` come from the caller (the command package reads ``TVGW_<EXCHANGE>_API_KEY``
    etc. at start-up and hands them to ``create_broker``), never from an alert. ``sandbox`` switches
    to the exchange's test network unless ``api_url`` is given: ``api_url`` replaces the scheme and
    host of every REST URL ccxt knows for the exchange (a local fake exchange, or a proxy).
    ``quote_currency`` is the currency :meth:`equity` is counted in. ``storage`` is accepted so every
    broker is built the same way; this broker keeps no book of its own (the exchange is the truth).

    Budget: a lost answer costs up to ``timeout_ms`` for the order plus ``read_retries + 1``
    lookups with backoff; callers on the webhook's 3-second path should size ``timeout_ms``,
    ``read_retries`` and ``backoff_s`` for that.

    Concurrency: ccxt's sync client is not made for concurrent calls on one instance, and one
    instance behind one lock made every symbol wait behind the slowest. Calls lease an instance
    from a small pool (``engine.brokers.ccxt_pool``: up to ``pool_size``, one rate limit and one
    market table shared by all), so a stalled answer holds one instance and nothing else.
    """

    def __init__(
        self,
        exchange_id: str,
        *,
        name: str | None = None,
        credentials: Mapping[str, str],
        sandbox: bool,
        api_url: str | None = None,
        timeout_ms: int = 2000,
        read_retries: int = 3,
        backoff_s: float = 0.5,
        rate_limit_ms: int | None = None,
        quote_currency: str = "USDT",
        storage: object | None = None,
        pool_size: int = 8,
        reads: ReadPolicy | None = None,
    ):
        if exchange_id not in ccxt.exchanges:
            raise OperationalError(f"unknown ccxt exchange id {exchange_id!r}{_did_you_mean(exchange_id)}")
        unknown = set(credentials) - _CREDENTIAL_KEYS
        if unknown:
            raise OperationalError(
                f"unknown credential keys {sorted(unknown)} for {exchange_id}; use {sorted(_CREDENTIAL_KEYS)}"
            )
        if timeout_ms <= 0 or read_retries < 0 or backoff_s < 0:
            raise ValueError(
                f"timeout_ms must be > 0, read_retries and backoff_s >= 0; got {timeout_ms}, "
                f"{read_retries}, {backoff_s}"
            )
        #: The account it records under (the exchange id unless an account names it).
        self.name = name or exchange_id
        self.exchange_id = exchange_id
        self.read_retries = read_retries
        self.backoff_s = backoff_s
        self.quote_currency = quote_currency.upper()
        self.storage = storage
        #: (leverage, margin mode) last set per contract symbol: set again only when they change.
        self._margin: dict[str, tuple[int | None, str | None]] = {}
        #: One lock per contract symbol around "set its margin, then place": two threads never
        #: interleave those on one symbol (other symbols go on meanwhile).
        self._symbol_locks: dict[str, threading.Lock] = {}
        self._symbol_locks_guard = threading.Lock()
        config: dict[str, Any] = {"enableRateLimit": True, "timeout": timeout_ms, **credentials}
        if rate_limit_ms is not None:
            config["rateLimit"] = rate_limit_ms

        def make() -> ccxt.Exchange:
            exchange: ccxt.Exchange = getattr(ccxt, exchange_id)(dict(config))
            exchange.options.update(_EXCHANGE_OPTIONS.get(exchange_id, {}))
            if api_url:
                exchange.urls["api"] = _with_base_url(exchange.urls["api"], api_url)
            elif sandbox:
                try:
                    exchange.set_sandbox_mode(True)
                except ccxt.NotSupported as e:
                    raise OperationalError(
                        f"{exchange_id} has no sandbox in ccxt; set sandbox off or use another exchange"
                    ) from e
            return exchange

        # A caller waits for a free instance no longer than one request may take.
        self._pool = ExchangePool(self.name, make, size=pool_size, wait_s=timeout_ms / 1000)
        self._readings = ReadCache(self.name, reads or ReadPolicy())
        #: The background market loader (:meth:`start`); once it runs, no caller loads markets.
        self._loader: threading.Thread | None = None
        self._loaded = threading.Event()
        self._closed = threading.Event()
        self._markets_error: BrokerError | None = None

    def _ccxt(self, call: Callable[[ccxt.Exchange], R]) -> R:
        """``call`` on a ccxt instance leased for this thread alone (see the class docstring)."""
        with self._pool.lease() as exchange:
            return call(exchange)

    # --- markets and symbols ------------------------------------------------------------

    def start(self, *, refresh_s: float) -> None:
        """Load the markets in the background now and again every ``refresh_s`` seconds (a
        failed load is tried again with back-off), then read the equity once so the first alert
        finds a reading. From then on nothing that serves a request loads the markets: until
        the first load succeeds, what needs them fails at once, saying so. A gunicorn worker
        calls this as it starts (``webhook.create_app``), then :meth:`ready`."""
        if self._loader is not None:
            return
        self._loader = threading.Thread(
            target=self._keep_markets, args=(refresh_s,), name=f"tvgw-markets-{self.name}", daemon=True
        )
        self._loader.start()

    def ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the first market load; True once loaded."""
        return self._pool.markets is not None or self._loaded.wait(timeout)

    def _keep_markets(self, refresh_s: float) -> None:
        failures = 0
        while not self._closed.is_set():
            try:
                self._load_markets()
            except BrokerError as exc:
                failures += 1
                self._markets_error = exc
                delay = min(self.backoff_s * 2**failures + 1.0, refresh_s)
                log.warning("%s: cannot load the markets (%s); trying again in %.0f s", self.name, exc, delay)
            else:
                first, failures, self._markets_error = not self._loaded.is_set(), 0, None
                self._loaded.set()
                delay = refresh_s
                if first:
                    self._prime_equity()
            if self._closed.wait(delay):
                return

    def _prime_equity(self) -> None:
        try:
            self.equity_reading()
        except BrokerError as exc:  # said by the read cache; the first alert asks again
            log.debug("%s: no equity at start-up: %s", self.name, exc)

    def load_markets(self, reload: bool = False) -> Mapping[str, Mapping[str, Any]]:
        """The exchange's markets: the table loaded by :meth:`start` and kept fresh in the
        background. A process that never started the loader (a command-line tool, start-up
        recovery) loads them here on first use, or when ``reload`` asks."""
        markets = self._pool.markets
        if markets is not None and not reload:
            return markets
        if self._loader is not None and not reload:
            why = f" (last attempt: {self._markets_error})" if self._markets_error else ""
            raise ExchangeUnavailableError(
                f"{self.name}: the markets are not loaded yet; the gateway is loading them in the "
                f"background{why}"
            )
        return self._load_markets()

    @_retried_read
    def _load_markets(self) -> Mapping[str, Mapping[str, Any]]:
        with self._pool.lease() as exchange:
            try:
                exchange.load_markets(True)
            except ccxt.BaseError as e:
                raise map_ccxt_error(e, f"{self.name} load_markets") from e
            self._pool.install_markets(exchange)
            return exchange.markets

    def resolve_symbol(self, ticker: str, exchange: str | None = None) -> str:
        """Map a TradingView ticker onto one of this exchange's markets (see ``engine.symbols``).

        The ticker's exchange prefix is not required to name this exchange: a strategy drawn on
        one venue's chart may trade on another."""
        return to_ccxt_symbol(ticker, self.load_markets(), exchange)

    def _market(self, symbol: str) -> Mapping[str, Any]:
        markets = self.load_markets()
        if symbol not in markets:
            raise UnknownSymbolError(f"{self.name} has no market {symbol!r}")
        return markets[symbol]

    def market_limits(self, symbol: str) -> MarketLimits:
        """ccxt's ``limits`` and ``precision`` of the market, in the engine's table shape. The
        precision is a step (ccxt's TICK_SIZE mode) or a number of decimals (DECIMAL_PLACES)."""
        market = self._market(symbol)
        limits = market.get("limits") or {}
        precision = market.get("precision") or {}

        def limit(kind: str, bound: str) -> float | None:
            value = (limits.get(kind) or {}).get(bound)
            return float(value) if value else None

        return MarketLimits(
            min_amount=limit("amount", "min"),
            max_amount=limit("amount", "max"),
            amount_step=self._step(precision.get("amount")),
            min_cost=limit("cost", "min"),
            max_cost=limit("cost", "max"),
            price_tick=self._step(precision.get("price")),
        )

    def limits_reading(self, symbol: str) -> Reading[MarketLimits]:
        """:meth:`market_limits` with the time the market table was loaded."""
        limits = self.market_limits(symbol)
        return Reading(limits, self._pool.loaded_at or time.time(), f"{self.name} markets")

    def _step(self, precision: Any) -> float | None:
        if precision is None:
            return None
        mode = getattr(self._pool.first, "precisionMode", ccxt.TICK_SIZE)
        if mode == ccxt.TICK_SIZE:
            return float(precision)
        if mode == ccxt.DECIMAL_PLACES:
            return 10.0 ** -int(precision)
        return None  # significant digits: no fixed step

    # --- reads ----------------------------------------------------------------------------

    @_retried_read
    def fetch_ticker(self, symbol: str) -> dict[str, Any]:
        try:
            return self._ccxt(lambda exchange: exchange.fetch_ticker(symbol))
        except ccxt.BaseError as e:
            raise map_ccxt_error(e, f"{self.name} fetch_ticker {symbol}") from e

    def price_reading(self, symbol: str, *, wait_s: float | None = None) -> Reading[float | None]:
        """The last traded price of ``symbol``, cached with its age (``engine.brokers.readings``:
        fresh for a few seconds, refreshed by one thread, a failing ticker backed off).
        ``wait_s`` bounds the wait for a refresh while an older reading is still usable."""
        return self._readings.get(f"ticker {symbol}", lambda: self._read_price(symbol), wait_s=wait_s)

    def _read_price(self, symbol: str) -> Reading[float | None]:
        taken = time.time()
        ticker = self.fetch_ticker(symbol)
        price = ticker.get("last") or ticker.get("close")
        return Reading(float(price) if price is not None else None, taken, f"{self.name} ticker")

    def last_price(self, symbol: str) -> float | None:
        return self.price_reading(symbol).value

    @_retried_read
    def fetch_balance(self) -> dict[str, float]:
        """Total (free + used) balance per currency, zero balances left out."""
        try:
            balance = self._ccxt(lambda exchange: exchange.fetch_balance())
        except ccxt.BaseError as e:
            raise map_ccxt_error(e, f"{self.name} fetch_balance") from e
        return {c: float(v) for c, v in (balance.get("total") or {}).items() if v}

    def balances(self) -> dict[str, float]:
        return self.fetch_balance()

    @_retried_read
    def contract_positions(self, symbols: list[str]) -> dict[str, float]:
        """Signed contracts per symbol (long positive), from ccxt's unified positions."""
        if not symbols:
            return {}
        try:
            raw = self._ccxt(lambda exchange: exchange.fetch_positions(symbols))
        except ccxt.BaseError as e:
            raise map_ccxt_error(e, f"{self.name} fetch_positions {symbols}") from e
        held = {symbol: 0.0 for symbol in symbols}
        for p in raw:
            amount = float(p.get("contracts") or 0.0) * float(p.get("contractSize") or 1.0)
            if p.get("symbol") in held:
                held[p["symbol"]] += -amount if p.get("side") == "short" else amount
        return held

    @_retried_read
    def open_client_ids(self, symbol: str) -> set[str]:
        try:
            raw = self._ccxt(lambda exchange: exchange.fetch_open_orders(symbol))
        except ccxt.BaseError as e:
            raise map_ccxt_error(e, f"{self.name} fetch_open_orders {symbol}") from e
        return {str(o["clientOrderId"]) for o in raw if o.get("clientOrderId")}

    def equity_reading(self) -> Reading[float]:
        """The account's value (see :meth:`equity`), cached with its age: a failed read is
        backed off, not repeated by every alert, and the last reading serves while recent."""
        return self._readings.get("equity", self._read_equity)

    def equity(self) -> float:
        """Quote-currency balance plus every other holding marked at its last price on the
        ``<asset>/<quote>`` spot market. Holdings without such a market are left out (they
        cannot be valued without a second conversion; keep the account in one quote currency).
        The value of :meth:`equity_reading`: it may be a few seconds old."""
        return self.equity_reading().value

    def _read_equity(self) -> Reading[float]:
        """A balance read now, its holdings valued at their cached prices without waiting for
        a slow ticker: one stalled market must not hold the equity (and every alert) back. A
        holding whose ticker keeps failing is valued at its last price, however old; its age is
        said in the reading's source. Raises when a holding has never had a price."""
        taken = time.time()
        balances = self.fetch_balance()
        markets = self.load_markets()
        total = balances.get(self.quote_currency, 0.0)
        oldest: tuple[float, str] | None = None
        for currency, amount in balances.items():
            symbol = f"{currency}/{self.quote_currency}"
            if currency == self.quote_currency or symbol not in markets:
                continue
            price = self._holding_price(symbol)
            if price.value is None:
                continue
            total += amount * price.value
            if oldest is None or price.taken_at < oldest[0]:
                oldest = (price.taken_at, symbol)
        source = f"{self.name} balance"
        if oldest is not None:
            source += f", holdings at cached prices ({oldest[1]}'s {taken - oldest[0]:.0f} s old)"
        return Reading(total, taken, source)

    def _holding_price(self, symbol: str) -> Reading[float | None]:
        try:
            return self.price_reading(symbol, wait_s=0.0)
        except BrokerError:
            last = self._readings.peek(f"ticker {symbol}")
            if last is None:
                raise
            return last

    @_retried_read
    def fetch_ohlcv(
        self, symbol: str, timeframe: str, since_ms: int | None = None, limit: int = 500
    ) -> list[list[float]]:
        """Candles ``[ms, open, high, low, close, volume]``, oldest first."""
        try:
            rows = self._ccxt(lambda exchange: exchange.fetch_ohlcv(symbol, timeframe, since_ms, limit))
        except ccxt.BaseError as e:
            raise map_ccxt_error(e, f"{self.name} fetch_ohlcv {symbol} {timeframe}") from e
        return [[float(x) for x in row[:6]] for row in rows]

    @_retried_read
    def fetch_order(self, client_order_id: str, symbol: str) -> OrderResult | None:
        """The order placed with ``client_order_id`` on ``symbol``, or None if the exchange has none."""
        raw = self._find_order_raw(client_order_id, symbol)
        return None if raw is None else self._as_booked(_to_result(raw, client_order_id), symbol)

    def _as_booked(self, result: OrderResult, symbol: str) -> OrderResult:
        """``result`` as the account books it: its fees from the order's trades when the order
        itself carries none (Binance's order query has no fills), each fee valued in the market's
        quote currency (a fee in the base coin at the fill's average, one in a third currency
        through that currency's own market to the quote, else left unvalued and said so), and
        ``net``, what the base holding moved by when a fee was taken in the base coin."""
        if result.filled <= 0:
            return result
        market = self._market(symbol)
        if not result.fees and result.exchange_order_id and market.get("spot"):
            result = self._with_trade_fees(result, symbol)
        base, quote = str(market.get("base")), str(market.get("quote"))
        fees = tuple(self._valued(fee, base, quote, result.average) for fee in result.fees)
        net = None
        base_fee = sum(f.cost for f in fees if f.currency == base)
        if base_fee and not market.get("contract"):
            exact = result.filled - base_fee if _buys(result) else result.filled + base_fee
            step = self._step((market.get("precision") or {}).get("amount"))
            net = _floor_to(exact, step) if _buys(result) else exact
        return dataclasses.replace(result, fees=fees, net=net)

    def _with_trade_fees(self, result: OrderResult, symbol: str) -> OrderResult:
        """The order's fees (and cost) from its trades, when the exchange lists them."""
        if not self._pool.first.has.get("fetchOrderTrades"):
            return result
        order_id = result.exchange_order_id
        try:
            trades = self._ccxt(lambda exchange: exchange.fetch_order_trades(order_id, symbol))
        except ccxt.NotSupported:
            return result
        except ccxt.BaseError as e:
            raise map_ccxt_error(e, f"{self.name} fetch the trades of order {result.client_order_id}") from e
        fees = _fees_by_currency([t["fee"] for t in trades if t.get("fee")])
        cost = sum(float(t.get("cost") or 0.0) for t in trades) or result.cost
        return dataclasses.replace(result, fees=fees, cost=cost)

    def _valued(self, fee: Fee, base: str, quote: str, average: float | None) -> Fee:
        """``fee`` with its value in ``quote``."""
        if fee.currency == quote:
            return dataclasses.replace(fee, value=fee.cost)
        if fee.currency == base:
            if average is None:
                return dataclasses.replace(fee, note=f"{fee.currency} fee not valued: the fill has no price")
            return dataclasses.replace(fee, value=fee.cost * average)
        market = f"{fee.currency}/{quote}"
        try:
            price = self.last_price(market) if market in self.load_markets() else None
        except BrokerError as e:
            return dataclasses.replace(fee, note=f"{fee.currency} fee not valued: no {market} price ({e})")
        if price is None:
            note = f"{fee.currency} fee not valued: {self.name} lists no {market}"
            return dataclasses.replace(fee, note=note)
        return dataclasses.replace(fee, value=fee.cost * price)

    def _find_order_raw(self, client_order_id: str, symbol: str) -> dict[str, Any] | None:
        context = f"{self.name} fetch_order {symbol} client id {client_order_id}"
        param = _FETCH_BY_CLIENT_ID.get(self.exchange_id)
        try:
            with self._pool.lease() as exchange:
                if param is not None:
                    return exchange.fetch_order(None, symbol, {param: client_order_id})
                if exchange.has.get("fetchOrders"):
                    candidates = exchange.fetch_orders(symbol)
                else:
                    candidates = exchange.fetch_open_orders(symbol) + exchange.fetch_closed_orders(symbol)
        except ccxt.OrderNotFound:
            return None
        except ccxt.BaseError as e:
            raise map_ccxt_error(e, context) from e
        return next((o for o in candidates if o.get("clientOrderId") == client_order_id), None)

    # --- orders ---------------------------------------------------------------------------

    def execute(self, order: OrderRequest) -> OrderResult:
        """Check ``order`` against the market's precision and minimums, send it once, and
        reconcile by client order id if the answer is lost; the result as the account books it
        (:meth:`_as_booked`). On a contract market the margin is set first, under the symbol's
        own lock (other symbols' orders go on meanwhile)."""
        return self._as_booked(self._send(order), order.symbol)

    def _send(self, order: OrderRequest) -> OrderResult:
        market = self._market(order.symbol)
        if not market.get("contract"):
            return self._execute(order, market)
        with self._symbol_lock(order.symbol):
            return self._execute(order, market)

    def _symbol_lock(self, symbol: str) -> threading.Lock:
        with self._symbol_locks_guard:
            return self._symbol_locks.setdefault(symbol, threading.Lock())

    def _execute(self, order: OrderRequest, market: Mapping[str, Any]) -> OrderResult:
        amount, price = self._checked_amount_price(order, market)
        context = _describe(self.name, order, amount, price)
        if market.get("contract") and not order.reduce_only:
            self._set_margin(order, context)
        params: dict[str, Any] = {"clientOrderId": order.client_order_id}
        if order.reduce_only and market.get("contract"):
            params["reduceOnly"] = True
        limit_price = price if order.order_type == "limit" else None
        return self._create_once(
            order.symbol, order.order_type, order.side, amount, limit_price, params,
            context=context, find_raw=self._find_order_raw,
        )  # fmt: skip

    def _create_once(
        self,
        symbol: str,
        order_type: str,
        side: Side,
        amount: float,
        price: float | None,
        params: dict[str, Any],
        *,
        context: str,
        find_raw: Callable[[str, str], dict[str, Any] | None],
    ) -> OrderResult:
        """``create_order`` sent once (entries and protective orders alike). Refused before
        processing (rate limit): raised, nothing was placed. A lost answer (network, 5xx): looked
        up by client id through ``find_raw``, never re-sent. A client id the exchange already
        holds: that order is the answer."""
        client_order_id = params["clientOrderId"]
        try:
            raw = self._ccxt(
                lambda exchange: exchange.create_order(symbol, order_type, side, amount, price, params)
            )
        except (ccxt.RateLimitExceeded, ccxt.DDoSProtection) as e:
            raise map_ccxt_error(e, context) from e
        except (ccxt.NetworkError, ccxt.OperationFailed) as e:
            return self._reconcile(client_order_id, symbol, context, e, find_raw)
        except ccxt.InvalidOrder as e:
            if "duplicate" in str(e).lower():
                existing = find_raw(client_order_id, symbol)
                if existing is not None:
                    log.warning("%s: client order id already used; returning the existing order", context)
                    return _to_result(existing, client_order_id)
            raise map_ccxt_error(e, context) from e
        except ccxt.BaseError as e:
            raise map_ccxt_error(e, context) from e
        return _to_result(raw, client_order_id)

    def _checked_amount_price(
        self, order: OrderRequest, market: Mapping[str, Any]
    ) -> tuple[float, float | None]:
        """Amount and price rounded to the market's precision, refused with a clear
        :class:`InvalidOrderError` below the market's minimum amount or cost."""
        described = _describe(self.name, order, order.amount, order.price)
        if not (math.isfinite(order.amount) and order.amount > 0):
            raise InvalidOrderError(f"{described}: amount must be a positive number")
        if order.order_type == "limit" and (order.price is None or not order.price > 0):
            raise InvalidOrderError(f"{described}: a limit order needs a positive price")
        try:
            with self._pool.lease() as exchange:
                amount = float(exchange.amount_to_precision(order.symbol, order.amount))
                price = float(exchange.price_to_precision(order.symbol, order.price)) if order.price else None
        except ccxt.BaseError as e:
            raise map_ccxt_error(e, described) from e
        limits = market.get("limits") or {}
        min_amount = (limits.get("amount") or {}).get("min")
        if min_amount and amount < min_amount:
            raise InvalidOrderError(f"{described}: amount {amount} is below the market minimum {min_amount}")
        min_cost = (limits.get("cost") or {}).get("min")
        if min_cost:
            reference = price if price is not None else self.last_price(order.symbol)
            if reference is not None and amount * reference < min_cost:
                raise InvalidOrderError(
                    f"{described}: order value {amount * reference:.8g} {market.get('quote')} is below the "
                    f"market minimum {min_cost}; increase the amount"
                )
        return amount, price

    def _reconcile(
        self,
        client_order_id: str,
        symbol: str,
        context: str,
        cause: ccxt.BaseError,
        find: Callable[[str, str], Mapping[str, Any] | None],
    ) -> OrderResult:
        """Settle an order whose answer was lost: look it up by client id with ``find``, with
        backoff.

        Lookups that fail temporarily, or that do not find the order yet (exchanges can take a
        moment to show it), are retried ``read_retries`` times; the order is never re-sent."""
        mapped = map_ccxt_error(cause, context)
        log.warning("%s: answer lost (%s); reconciling by client order id", context, mapped)
        for attempt in range(self.read_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                raw = find(client_order_id, symbol)
            except TemporaryError as e:
                log.warning("%s: reconciliation lookup %d failed: %s", context, attempt + 1, e)
                continue
            if raw is not None:
                result = _to_result(raw, client_order_id)
                return dataclasses.replace(result, info={**result.info, "reconciled": True})
        raise OrderUncertainError(
            f"{context}: sent, but the answer was lost ({type(mapped).__name__}) and no order with client "
            f"id {client_order_id} was found after {self.read_retries + 1} lookups; it was not "
            "re-sent. Check the exchange before acting.",
            client_order_id=client_order_id,
        ) from mapped

    # --- leverage and margin (contract markets) -------------------------------------------

    def _set_margin(self, order: OrderRequest, context: str) -> None:
        """Set the margin mode, then the leverage, of ``order.symbol`` before an order that adds
        exposure, when they differ from what this process last set (once per change)."""
        leverage = None if order.leverage is None else _whole_leverage(order.leverage, context)
        wanted = (leverage, order.margin_mode)
        if wanted == (None, None) or self._margin.get(order.symbol) == wanted:
            return
        try:
            with self._pool.lease() as exchange:
                if order.margin_mode is not None:
                    exchange.set_margin_mode(order.margin_mode, order.symbol)
                if leverage is not None:
                    exchange.set_leverage(leverage, order.symbol)
        except ccxt.BaseError as e:
            self._margin.pop(order.symbol, None)
            raise map_ccxt_error(e, f"{context}: setting {order.margin_mode} margin at {leverage}x") from e
        self._margin[order.symbol] = wanted
        log.info("%s: %s margin, leverage %sx", order.symbol, order.margin_mode or "unchanged", leverage)

    # --- protective exits held by the exchange ----------------------------------------------

    def can_short(self, symbol: str) -> bool:
        """A contract market can be short; on a spot market the gateway trades no margin, so a
        sale can only sell coins the account holds."""
        return bool(self._market(symbol).get("contract"))

    def exit_holder(self, symbol: str) -> ExitHolder:
        """Contract markets hold reduce-only stop and take-profit market orders where ccxt can
        create them and the market lists the types; spot exits are the gateway's (see
        :data:`SPOT_EXIT_REASON`)."""
        market = self._market(symbol)
        if not market.get("contract"):
            return ExitHolder(False, SPOT_EXIT_REASON)
        has = self._pool.first.has
        if not (has.get("createStopLossOrder") and has.get("createTakeProfitOrder")):
            return ExitHolder(False, f"ccxt cannot create stop-loss and take-profit orders on {self.name}")
        listed = (market.get("info") or {}).get("orderTypes")
        missing = [t for t in _EXIT_ORDER_TYPES.get(self.name, ()) if listed is not None and t not in listed]
        if missing:
            return ExitHolder(False, f"{self.name} lists no {'/'.join(missing)} orders for {symbol}")
        return ExitHolder(True, f"reduce-only stop and take-profit orders rest on {self.name}")

    def exit_notice(self) -> str:
        """Where exits are held, per kind of market this gateway trades (one start-up line)."""
        try:
            markets = self.load_markets()
        except BrokerError as e:
            return f"{self.name}: cannot read the markets to see where exits can rest ({e})"
        parts = []
        for kind, test in (("perpetuals", lambda m: m.get("swap") and m.get("linear")), ("spot", _spot)):
            sample = next((s for s, m in markets.items() if test(m) and m.get("active") is not False), None)
            if sample is None:
                continue
            holder = self.exit_holder(sample)
            where = (
                "rest on the exchange and hold while the gateway is down"
                if holder.on_exchange
                else "are watched by the gateway itself and act only while it runs"
            )
            parts.append(f"exits on {kind} {where} ({holder.reason})")
        return f"{self.name}: " + "; ".join(parts or ["no spot or perpetual markets loaded"])

    def place_exit(self, order: ProtectiveOrder) -> OrderResult:
        """One stop or take-profit through ccxt's unified ``stopLossPrice``/``takeProfitPrice``
        (reduce-only on a contract), sent once: a lost answer is looked up by client id."""
        market = self._market(order.symbol)
        what = f"{order.kind} {order.side} {order.amount:.10g} {order.symbol} at {order.trigger:.10g}"
        context = f"{self.name} {what} (client id {order.client_order_id})"
        try:
            with self._pool.lease() as exchange:
                amount = float(exchange.amount_to_precision(order.symbol, order.amount))
                trigger = float(exchange.price_to_precision(order.symbol, order.trigger))
        except ccxt.BaseError as e:
            raise map_ccxt_error(e, context) from e
        key = "stopLossPrice" if order.kind == "stop" else "takeProfitPrice"
        params: dict[str, Any] = {"clientOrderId": order.client_order_id, key: trigger}
        if market.get("contract"):
            params["reduceOnly"] = True
        return self._create_once(
            order.symbol, "market", order.side, amount, None, params,
            context=context, find_raw=self._find_exit_raw,
        )  # fmt: skip

    @_retried_read
    def fetch_exit(self, client_order_id: str, symbol: str) -> OrderResult | None:
        """A placed exit; once it fired on a contract market, the fill of the order it became
        (the conditional order itself carries no fill), under the exit's client id."""
        raw = self._find_exit_raw(client_order_id, symbol)
        if raw is None:
            return None
        result = _to_result(raw, client_order_id)
        lookup = self._conditional(symbol)
        fired_as = (raw.get("info") or {}).get(lookup[1]) if lookup else None
        if result.status != "filled" or result.filled > 0 or not fired_as:
            return self._as_booked(result, symbol)
        try:
            fill = self._ccxt(lambda exchange: exchange.fetch_order(str(fired_as), symbol))
        except ccxt.BaseError as e:
            raise map_ccxt_error(e, f"{self.name} fetch the fill of exit {client_order_id}") from e
        result = dataclasses.replace(_to_result(fill, client_order_id), client_order_id=client_order_id)
        return self._as_booked(result, symbol)

    def _conditional(self, symbol: str) -> tuple[Mapping[str, Any], str] | None:
        if not self._market(symbol).get("contract"):
            return None
        return _CONDITIONAL_LOOKUP.get(self.name)

    def _find_exit_raw(self, client_order_id: str, symbol: str) -> dict[str, Any] | None:
        lookup = self._conditional(symbol)
        if lookup is None:
            return self._find_order_raw(client_order_id, symbol)
        params = {"clientOrderId": client_order_id, **lookup[0]}
        try:
            return self._ccxt(lambda exchange: exchange.fetch_order(None, symbol, params))
        except ccxt.OrderNotFound:
            return None
        except ccxt.BaseError as e:
            raise map_ccxt_error(e, f"{self.name} fetch exit {symbol} client id {client_order_id}") from e

    def cancel_exit(self, client_order_id: str, symbol: str) -> OrderResult | None:
        lookup = self._conditional(symbol)
        if lookup is None:
            found = self.fetch_order(client_order_id, symbol)
            if found is None:
                return None
            if found.status in ("open", "partially_filled"):
                return self.cancel_order(client_order_id, symbol)
            return found
        context = f"{self.name} cancel exit {symbol} client id {client_order_id}"
        params = {"clientOrderId": client_order_id, **lookup[0]}
        try:
            self._ccxt(lambda exchange: exchange.cancel_order(None, symbol, params))
        except ccxt.OrderNotFound:
            pass  # fired or gone meanwhile: its state below says which
        except ccxt.BaseError as e:
            raise map_ccxt_error(e, context) from e
        return self.fetch_exit(client_order_id, symbol)

    def cancel_order(self, client_order_id: str, symbol: str) -> OrderResult:
        """Cancel an open order by client order id and return its final state."""
        context = f"{self.name} cancel {symbol} client id {client_order_id}"
        found = self.fetch_order(client_order_id, symbol)
        if found is None or found.exchange_order_id is None:
            raise InvalidOrderError(f"{context}: no such order on the exchange")
        order_id = found.exchange_order_id
        try:
            self._ccxt(lambda exchange: exchange.cancel_order(order_id, symbol))
        except ccxt.BaseError as e:
            raise map_ccxt_error(e, context) from e
        after = self.fetch_order(client_order_id, symbol)
        if after is None:
            raise OrderUncertainError(
                f"{context}: order vanished after cancel", client_order_id=client_order_id
            )
        return after

    def close(self) -> None:
        self._closed.set()
        self._readings.close()
        self._pool.close()


def _buys(result: OrderResult) -> bool:
    return result.info.get("side") != "sell"


def _floor_to(amount: float, step: float | None) -> float:
    """``amount`` rounded down to a multiple of ``step`` (exactly, in decimal)."""
    if not step:
        return amount
    steps = (Decimal(repr(amount)) / Decimal(repr(step))).to_integral_value(ROUND_DOWN)
    return float(steps * Decimal(repr(step)))


def _spot(market: Mapping[str, Any]) -> bool:
    return bool(market.get("spot"))


def _whole_leverage(leverage: float, context: str) -> int:
    """Exchanges take whole leverage: 3, not 2.5."""
    if not (math.isfinite(leverage) and leverage >= 1 and float(leverage).is_integer()):
        raise InvalidOrderError(f"{context}: leverage {leverage:g} must be a whole number of 1 or more")
    return int(leverage)


def _describe(exchange: str, order: OrderRequest, amount: float, price: float | None) -> str:
    at = f" @ {price}" if price is not None else ""
    what = f"{exchange} {order.order_type} {order.side} {amount} {order.symbol}{at}"
    return f"{what} (client id {order.client_order_id})"


def _to_result(raw: Mapping[str, Any], client_order_id: str) -> OrderResult:
    """ccxt's unified order structure as an :class:`OrderResult`: fees summed per currency
    (never across currencies), unvalued; an average the exchange left out is ``cost / filled``."""
    filled = float(raw.get("filled") or 0.0)
    status: OrderStatus = _STATUS.get(str(raw.get("status")), "unknown")
    if raw.get("status") == "open":
        status = "partially_filled" if filled > 0 else "open"
    fee = raw.get("fee") or {}
    cost = float(raw["cost"]) if raw.get("cost") else None
    average = float(raw["average"]) if raw.get("average") else None
    if average is None and cost and filled > 0:
        average = cost / filled
    return OrderResult(
        client_order_id=str(raw.get("clientOrderId") or client_order_id),
        status=status,
        filled=filled,
        average=average,
        fees=_fees_by_currency(raw.get("fees") or ([fee] if fee else [])),
        cost=cost,
        exchange_order_id=str(raw["id"]) if raw.get("id") is not None else None,
        info={
            "exchange_status": raw.get("status"),
            "amount": raw.get("amount"),
            "symbol": raw.get("symbol"),
            "side": raw.get("side"),
        },
    )


def _fees_by_currency(fees: list[Mapping[str, Any]]) -> tuple[Fee, ...]:
    """ccxt's fee entries (one per fill, or already reduced) as one :class:`Fee` per currency."""
    totals: dict[str, float] = {}
    for f in fees:
        currency, cost = f.get("currency"), f.get("cost")
        if currency and cost:
            totals[str(currency)] = totals.get(str(currency), 0.0) + float(cost)
    return tuple(Fee(currency, cost) for currency, cost in sorted(totals.items()))


def _with_base_url(urls: Any, base_url: str) -> Any:
    """``urls`` (a string or nested dict of strings) with scheme and host replaced by ``base_url``'s,
    keeping each path: ``https://api.binance.com/api/v3`` -> ``http://127.0.0.1:8765/api/v3``."""
    if isinstance(urls, dict):
        return {key: _with_base_url(value, base_url) for key, value in urls.items()}
    if not isinstance(urls, str):
        return urls
    base = urlsplit(base_url)
    if not base.scheme or not base.netloc:
        raise OperationalError(f"api_url {base_url!r} must be an absolute URL such as http://127.0.0.1:8765")
    original = urlsplit(urls)
    path = base.path.rstrip("/") + original.path
    return urlunsplit((base.scheme, base.netloc, path, original.query, original.fragment))


def _did_you_mean(exchange_id: str) -> str:
    close = difflib.get_close_matches(exchange_id.lower(), ccxt.exchanges, n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""
