"""The USDⓈ-M futures half of the fake Binance (``tests.fake_exchange.FakeBinance`` routes to it).

It answers what ccxt's ``binance`` class calls to trade a linear perpetual (``BTC/USDT:USDT``):
leverage (``POST /fapi/v1/leverage``), margin type (``POST /fapi/v1/marginType``), positions
(``GET /fapi/v3/positionRisk``, and the v2 spelling), balance (``GET /fapi/v2/balance``), market
orders with ``reduceOnly`` (``/fapi/v1/order``) and the conditional orders ccxt sends for
``stopLossPrice``/``takeProfitPrice`` on a contract market: ``STOP_MARKET`` and
``TAKE_PROFIT_MARKET`` through the algo endpoint (``/fapi/v1/algoOrder``, ``clientAlgoId``), with
cancel and the open-order lists. A conditional order that the price crosses (see
``FakeBinance.set_price``) fills as a market order; a reduce-only one never flips or grows a
position: it fills at most what is held and expires when nothing is left.

One-way position mode, one wallet in USDT; margin is checked as notional / leverage against
the wallet's free part; fees are the taker rate on notional. Values follow Binance's documented
shapes closely enough for ccxt's parsers, not its every field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any

__all__ = ["FUTURES_TAKER_FEE", "FakeFutures", "FuturesError"]

#: Binance USDⓈ-M's default taker fee (VIP 0).
FUTURES_TAKER_FEE = Decimal("0.0004")
STEP = Decimal("0.001")
TICK = Decimal("0.10")
MIN_NOTIONAL = Decimal("100")


class FuturesError(Exception):
    """An error answer, as ``_BinanceError`` (status plus Binance's code and message)."""

    def __init__(self, status: int, code: int, msg: str):
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


@dataclass
class Position:
    amount: Decimal = Decimal(0)  # signed: one-way mode
    entry: Decimal = Decimal(0)
    leverage: int = 20
    margin_type: str = "CROSSED"
    margin: Decimal = Decimal(0)  # isolated margin locked


@dataclass
class FakeFutures:
    """The futures account: wallet, positions, orders and conditional (algo) orders."""

    wallet: Decimal = Decimal("10000")
    positions: dict[str, Position] = field(default_factory=dict)
    orders: list[dict[str, Any]] = field(default_factory=list)
    algo_orders: list[dict[str, Any]] = field(default_factory=list)
    next_id: int = 5000
    #: Symbols whose opening market orders are acknowledged ``NEW`` with nothing filled, as a
    #: loaded live exchange does; they fill at :meth:`complete_held` (``FakeBinance.complete_fills``).
    held: set[str] = field(default_factory=set)
    #: What a filled market order's answer leaves out (the order as later queried is whole):
    #: "average" (``avgPrice`` "0", the quote amount still there) or "price" (both left out).
    answer_without: str | None = None

    def position(self, symbol: str) -> Position:
        return self.positions.setdefault(symbol, Position())

    # --- settings -------------------------------------------------------------------------

    def set_leverage(self, p: Mapping[str, str]) -> dict[str, Any]:
        leverage = int(p.get("leverage", "0"))
        if not 1 <= leverage <= 125:
            raise FuturesError(400, -4028, f"Leverage {leverage} is not valid")
        pos = self.position(p["symbol"])
        pos.leverage = leverage
        return {"leverage": leverage, "maxNotionalValue": "1000000", "symbol": p["symbol"]}

    def set_margin_type(self, p: Mapping[str, str]) -> dict[str, Any]:
        wanted = p.get("marginType", "")
        if wanted not in ("ISOLATED", "CROSSED"):
            raise FuturesError(400, -1116, "Invalid marginType.")
        pos = self.position(p["symbol"])
        if pos.margin_type == wanted:
            raise FuturesError(400, -4046, "No need to change margin type.")
        if pos.amount != 0 or self._open_for(p["symbol"]):
            raise FuturesError(400, -4048, "Margin type cannot be changed if there exists position.")
        pos.margin_type = wanted
        return {"code": 200, "msg": "success"}

    def _open_for(self, symbol: str) -> bool:
        return any(o["symbol"] == symbol and o["algoStatus"] == "NEW" for o in self.algo_orders)

    # --- orders ---------------------------------------------------------------------------

    def create_order(self, p: Mapping[str, str], last: Decimal, client_ids: set[str]) -> dict[str, Any]:
        """A MARKET order (LIMIT is not needed by the gateway), filled at ``last``."""
        if p.get("type") != "MARKET":
            raise FuturesError(400, -1116, "Invalid orderType.")
        cid = p.get("newClientOrderId") or f"fake-f-{self.next_id}"
        if cid in client_ids:
            raise FuturesError(400, -4116, "ClientOrderId is duplicated.")
        qty = _qty(p)
        reduce_only = p.get("reduceOnly", "false").lower() == "true"
        order = self._new_order(p["symbol"], p.get("side", ""), qty, cid, reduce_only, "MARKET")
        if p["symbol"] in self.held and not reduce_only:
            order["_held"] = True
            return public(order)  # acknowledged NEW, nothing filled yet
        self._fill(order, last)
        answer = public(order)
        if self.answer_without in ("average", "price"):
            answer["avgPrice"] = "0.00"
        if self.answer_without == "price":
            answer["cumQuote"] = "0.00000"
        return answer

    def complete_held(self, prices: Mapping[str, Decimal]) -> int:
        """Fill every held market order at its symbol's last price; how many were filled.
        Later market orders fill at once again."""
        self.held.clear()
        waiting = [o for o in self.orders if o.get("_held") and o["status"] == "NEW"]
        for order in waiting:
            self._fill(order, prices[order["symbol"]])
        return len(waiting)

    def _new_order(
        self, symbol: str, side: str, qty: Decimal, cid: str, reduce_only: bool, kind: str
    ) -> dict[str, Any]:
        if side not in ("BUY", "SELL"):
            raise FuturesError(400, -1102, "Mandatory parameter 'side' was not sent, was empty/null.")
        order = {
            "orderId": self.next_id, "symbol": symbol, "status": "NEW", "clientOrderId": cid,
            "price": "0", "avgPrice": "0", "origQty": str(qty), "executedQty": "0", "cumQuote": "0",
            "timeInForce": "GTC", "type": kind, "reduceOnly": reduce_only, "closePosition": False,
            "side": side, "positionSide": "BOTH", "stopPrice": "0", "workingType": "CONTRACT_PRICE",
            "priceProtect": False, "origType": kind, "updateTime": _now_ms(),
        }  # fmt: skip
        self.next_id += 1
        self.orders.append(order)
        return order

    def _fill(self, order: dict[str, Any], last: Decimal) -> None:
        """Fill at ``last``: reduce-only orders shrink towards zero and never past it; others
        need the initial margin (notional / leverage) free in the wallet."""
        pos = self.position(order["symbol"])
        qty = Decimal(order["origQty"])
        signed = qty if order["side"] == "BUY" else -qty
        if order["reduceOnly"]:
            if pos.amount == 0 or (pos.amount > 0) == (signed > 0):
                order["status"] = "EXPIRED"
                raise FuturesError(400, -2022, "ReduceOnly Order is rejected.")
            qty = min(qty, abs(pos.amount))
            signed = qty if signed > 0 else -qty
        else:
            opening = abs(pos.amount + signed) > abs(pos.amount)
            if opening and qty * last / pos.leverage > self.available():
                order["status"] = "REJECTED"
                raise FuturesError(400, -2019, "Margin is insufficient.")
        fee = qty * last * FUTURES_TAKER_FEE
        self.wallet -= fee + self._apply(pos, signed, last)
        order.update(
            status="FILLED", executedQty=str(qty), avgPrice=str(last), cumQuote=str(qty * last),
            updateTime=_now_ms(),
        )  # fmt: skip

    def _apply(self, pos: Position, signed: Decimal, price: Decimal) -> Decimal:
        """Move the position by ``signed`` at ``price``; returns the realised loss (negative for
        a profit) the wallet pays."""
        loss = Decimal(0)
        if pos.amount != 0 and (pos.amount > 0) != (signed > 0):
            closed = min(abs(signed), abs(pos.amount))
            direction = 1 if pos.amount > 0 else -1
            loss = -(price - pos.entry) * closed * direction
        new = pos.amount + signed
        if new == 0:
            pos.entry = Decimal(0)
        elif pos.amount == 0 or (new > 0) != (pos.amount > 0):
            pos.entry = price
        elif abs(new) > abs(pos.amount):
            pos.entry = (pos.entry * abs(pos.amount) + price * abs(signed)) / abs(new)
        pos.amount = new
        pos.margin = abs(new) * pos.entry / pos.leverage if pos.margin_type == "ISOLATED" else Decimal(0)
        return loss

    def available(self) -> Decimal:
        used = sum(abs(p.amount) * p.entry / p.leverage for p in self.positions.values())
        return self.wallet - used

    def query_order(self, p: Mapping[str, str]) -> dict[str, Any]:
        return public(self._find(self.orders, p, "orderId", "origClientOrderId", "clientOrderId"))

    def create_algo(self, p: Mapping[str, str], last: Decimal, client_ids: set[str]) -> dict[str, Any]:
        """A conditional order (``algoType=CONDITIONAL``): STOP_MARKET or TAKE_PROFIT_MARKET."""
        kind = p.get("type", "")
        if p.get("algoType") != "CONDITIONAL" or kind not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
            raise FuturesError(400, -1116, "Invalid orderType.")
        cid = p.get("clientAlgoId") or f"fake-a-{self.next_id}"
        if cid in client_ids:
            raise FuturesError(400, -4116, "ClientOrderId is duplicated.")
        side = p.get("side", "")
        trigger = _price(p, "triggerPrice")
        if _crossed(kind, side, trigger, last):
            raise FuturesError(400, -2021, "Order would immediately trigger.")
        now = _now_ms()
        algo = {
            "algoId": self.next_id, "clientAlgoId": cid, "algoType": "CONDITIONAL", "orderType": kind,
            "symbol": p["symbol"], "side": side, "positionSide": "BOTH", "timeInForce": "GTC",
            "quantity": str(_qty(p)), "algoStatus": "NEW", "triggerPrice": str(trigger), "price": "0",
            "workingType": "CONTRACT_PRICE", "closePosition": False, "priceProtect": False,
            "reduceOnly": p.get("reduceOnly", "false").lower() == "true", "createTime": now,
            "updateTime": now, "triggerTime": 0, "goodTillDate": 0,
        }  # fmt: skip
        self.next_id += 1
        self.algo_orders.append(algo)
        return dict(algo)

    def query_algo(self, p: Mapping[str, str]) -> dict[str, Any]:
        return dict(self._find(self.algo_orders, p, "algoId", "clientAlgoId", "clientAlgoId"))

    def cancel_algo(self, p: Mapping[str, str]) -> dict[str, Any]:
        algo = self._find(self.algo_orders, p, "algoId", "clientAlgoId", "clientAlgoId")
        if algo["algoStatus"] != "NEW":
            raise FuturesError(400, -2011, "Unknown order sent.")
        algo.update(algoStatus="CANCELED", updateTime=_now_ms())
        return {
            "algoId": algo["algoId"],
            "clientAlgoId": algo["clientAlgoId"],
            "code": "200",
            "msg": "success",
        }

    def cancel_order(self, p: Mapping[str, str]) -> dict[str, Any]:
        order = self._find(self.orders, p, "orderId", "origClientOrderId", "clientOrderId")
        if order["status"] != "NEW":
            raise FuturesError(400, -2011, "Unknown order sent.")
        order["status"] = "CANCELED"
        return public(order)

    def trigger(self, symbol: str, last: Decimal) -> None:
        """Fire the open conditional orders of ``symbol`` that ``last`` crosses, oldest first;
        a reduce-only one fills at most the position left, and expires when none is."""
        for algo in self.algo_orders:
            if algo["symbol"] != symbol or algo["algoStatus"] != "NEW":
                continue
            if not _crossed(algo["orderType"], algo["side"], Decimal(algo["triggerPrice"]), last):
                continue
            qty = Decimal(algo["quantity"])
            pos = self.position(symbol)
            if algo["reduceOnly"]:
                qty = min(qty, abs(pos.amount))
            algo.update(triggerTime=_now_ms(), updateTime=_now_ms())
            if qty <= 0:
                algo["algoStatus"] = "EXPIRED"
                continue
            order = self._new_order(
                symbol, algo["side"], qty, f"{algo['clientAlgoId']}-fill", algo["reduceOnly"], "MARKET"
            )
            order["origType"] = algo["orderType"]
            try:
                self._fill(order, last)
            except FuturesError:
                algo["algoStatus"] = "EXPIRED"
                continue
            algo.update(algoStatus="FINISHED", actualOrderId=str(order["orderId"]), actualPrice=str(last))

    # --- reads ----------------------------------------------------------------------------

    def open_orders(self, p: Mapping[str, str]) -> list[dict[str, Any]]:
        return [public(o) for o in self.orders if o["status"] == "NEW" and _for(o, p)]

    def open_algo_orders(self, p: Mapping[str, str]) -> list[dict[str, Any]]:
        return [dict(o) for o in self.algo_orders if o["algoStatus"] == "NEW" and _for(o, p)]

    def position_risk(self, p: Mapping[str, str], prices: Mapping[str, Decimal]) -> list[dict[str, Any]]:
        rows = []
        for symbol, pos in self.positions.items():
            if not _for({"symbol": symbol}, p):
                continue
            mark = prices.get(symbol, pos.entry)
            pnl = (mark - pos.entry) * pos.amount
            rows.append({
                "symbol": symbol, "positionSide": "BOTH", "positionAmt": str(pos.amount),
                "entryPrice": str(pos.entry), "breakEvenPrice": str(pos.entry), "markPrice": str(mark),
                "unRealizedProfit": str(pnl), "liquidationPrice": "0", "isolatedMargin": str(pos.margin),
                "notional": str(mark * pos.amount), "marginAsset": "USDT", "isolatedWallet": str(pos.margin),
                "initialMargin": str(abs(mark * pos.amount) / pos.leverage), "maintMargin": "0",
                "positionInitialMargin": str(abs(mark * pos.amount) / pos.leverage),
                "openOrderInitialMargin": "0", "adl": 0, "bidNotional": "0", "askNotional": "0",
                "leverage": str(pos.leverage),
                "marginType": "isolated" if pos.margin_type == "ISOLATED" else "cross",
                "updateTime": _now_ms(),
            })  # fmt: skip
        return rows

    def balance(self) -> list[dict[str, Any]]:
        free = self.available()
        return [{
            "accountAlias": "fake", "asset": "USDT", "balance": str(self.wallet),
            "crossWalletBalance": str(self.wallet), "crossUnPnl": "0", "availableBalance": str(free),
            "maxWithdrawAmount": str(free), "marginAvailable": True, "updateTime": _now_ms(),
        }]  # fmt: skip

    def client_ids(self) -> set[str]:
        return {o["clientOrderId"] for o in self.orders} | {a["clientAlgoId"] for a in self.algo_orders}

    @staticmethod
    def _find(
        rows: list[dict[str, Any]], p: Mapping[str, str], id_key: str, *cid_keys: str
    ) -> dict[str, Any]:
        cid = next((p[k] for k in cid_keys if p.get(k)), None)
        row_cid = "clientAlgoId" if id_key == "algoId" else "clientOrderId"
        for row in rows:
            if row["symbol"] != p.get("symbol"):
                continue
            if (id_key in p and str(row[id_key]) == p[id_key]) or (cid is not None and row[row_cid] == cid):
                return row
        raise FuturesError(400, -2013, "Order does not exist.")


def _for(row: Mapping[str, Any], p: Mapping[str, str]) -> bool:
    return "symbol" not in p or row["symbol"] == p["symbol"]


def _crossed(kind: str, side: str, trigger: Decimal, last: Decimal) -> bool:
    """Whether ``last`` fires a conditional order: a sell stop at or below its trigger, a sell
    take-profit at or above it (mirrored for buys). Spot's STOP_LOSS/TAKE_PROFIT read alike."""
    stop = kind in ("STOP_MARKET", "STOP_LOSS")
    sell = side == "SELL"
    return (last <= trigger) if stop == sell else (last >= trigger)


def _qty(p: Mapping[str, str]) -> Decimal:
    try:
        qty = Decimal(p["quantity"])
    except KeyError as e:
        raise FuturesError(400, -1102, "Mandatory parameter 'quantity' was not sent.") from e
    if qty < STEP or qty != qty.quantize(STEP, rounding=ROUND_DOWN):
        raise FuturesError(400, -1111, "Precision is over the maximum defined for this asset.")
    return qty


def _price(p: Mapping[str, str], key: str) -> Decimal:
    try:
        price = Decimal(p[key])
    except KeyError as e:
        raise FuturesError(400, -1102, f"Mandatory parameter '{key}' was not sent.") from e
    if price <= 0 or price != price.quantize(TICK, rounding=ROUND_DOWN):
        raise FuturesError(400, -4014, "Price not increased by tick size.")
    return price


def public(order: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in order.items() if not k.startswith("_")}


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
