"""The fake Binance itself: what it refuses, what it records, and running it standalone.

These speak raw HTTP (urllib), not ccxt, so they check the fake's Binance dialect directly."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.fake_exchange import DEFAULT_API_KEY, FakeBinance

REPO = Path(__file__).resolve().parents[2]


def _call(
    url: str, method: str = "GET", *, key: str | None = None, body: bytes | None = None
) -> tuple[int, Any]:
    request = urllib.request.Request(url, method=method, data=body)
    if key is not None:
        request.add_header("X-MBX-APIKEY", key)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


def test_private_endpoints_need_the_api_key_header(fake_exchange: FakeBinance) -> None:
    status, body = _call(f"{fake_exchange.url}/api/v3/account?timestamp=1&signature=x")
    assert (status, body["code"]) == (401, -2015)
    status, body = _call(f"{fake_exchange.url}/api/v3/account?timestamp=1&signature=x", key="wrong")
    assert (status, body["code"]) == (401, -2015)
    status, body = _call(f"{fake_exchange.url}/api/v3/account?timestamp=1", key=DEFAULT_API_KEY)
    assert (status, body["code"]) == (400, -1102) and "signature" in body["msg"]
    status, body = _call(f"{fake_exchange.url}/api/v3/account?timestamp=1&signature=x", key=DEFAULT_API_KEY)
    assert (
        status == 200
        and {"asset": "USDT", "free": "10000.00000000", "locked": "0.00000000"} in body["balances"]
    )


def test_unknown_paths_get_a_binance_error_and_are_logged(fake_exchange: FakeBinance) -> None:
    status, body = _call(f"{fake_exchange.url}/sapi/v1/capital/config/getall")
    assert (status, body["code"]) == (404, -1100)
    assert fake_exchange.unknown_paths == [("GET", "/sapi/v1/capital/config/getall")]


def test_orders_are_validated_against_the_filters(fake_exchange: FakeBinance) -> None:
    def post(query: str) -> tuple[int, Any]:
        body = f"{query}&timestamp=1&signature=x".encode()
        return _call(f"{fake_exchange.url}/api/v3/order", "POST", key=DEFAULT_API_KEY, body=body)

    assert (
        post("symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0.000015")[1]["msg"] == "Filter failure: LOT_SIZE"
    )
    assert (
        post("symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0.00001")[1]["msg"] == "Filter failure: NOTIONAL"
    )
    limit = "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=0.001&price=40000.001"
    assert post(limit)[1]["msg"] == "Filter failure: PRICE_FILTER"
    assert post("symbol=DOGEUSDT&side=BUY&type=MARKET&quantity=1")[1] == {
        "code": -1121,
        "msg": "Invalid symbol.",
    }
    status, body = post("symbol=BTCUSDT&side=BUY&type=MARKET&quoteOrderQty=100&newClientOrderId=q1")
    assert status == 200 and body["status"] == "FILLED" and body["executedQty"] == "0.00200000"
    status, body = post("symbol=BTCUSDT&side=BUY&type=MARKET&quoteOrderQty=100&newClientOrderId=q1")
    assert (status, body) == (400, {"code": -2010, "msg": "Duplicate order sent."})
    assert len(fake_exchange.orders) == 1


def test_fail_next_counts_down_and_checks_its_arguments(fake_exchange: FakeBinance) -> None:
    fake_exchange.fail_next("GET /api/v3/time", "503", times=2)
    assert [_call(f"{fake_exchange.url}/api/v3/time")[0] for _ in range(3)] == [503, 503, 200]
    with pytest.raises(ValueError, match="unknown failure mode"):
        fake_exchange.fail_next("/api/v3/time", "teapot")
    with pytest.raises(ValueError, match="METHOD /path"):
        fake_exchange.fail_next("api/v3/time", "500")


def test_429_carries_retry_after(fake_exchange: FakeBinance) -> None:
    fake_exchange.fail_next("/api/v3/ticker/price", "429")
    request = urllib.request.Request(f"{fake_exchange.url}/api/v3/ticker/price?symbol=BTCUSDT")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    with info.value as error:
        assert error.code == 429 and error.headers["Retry-After"] == "1"
        assert json.loads(error.read())["code"] == -1003


def test_generated_klines_are_aligned_and_stable(fake_exchange: FakeBinance) -> None:
    url = f"{fake_exchange.url}/api/v3/klines?symbol=ETHUSDT&interval=1h&startTime=1700000000000&limit=4"
    first = _call(url)[1]
    assert _call(url)[1] == first
    opens = [row[0] for row in first]
    assert len(opens) == 4 and all(t % 3_600_000 == 0 for t in opens) and opens[0] >= 1_700_000_000_000
    assert all(float(r[3]) <= min(float(r[1]), float(r[4])) <= float(r[2]) for r in first)


def test_standalone_server_with_http_controls() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_exchange", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("fake binance listening on http://127.0.0.1:"), line
        url = line.split(" on ")[1].strip()
        assert _call(f"{url}/api/v3/time")[0] == 200
        spec = json.dumps({"endpoint": "GET /api/v3/time", "mode": "500"}).encode()
        assert _call(f"{url}/__fake__/fail_next", "POST", body=spec) == (200, {"ok": True})
        assert _call(f"{url}/api/v3/time")[0] == 500
        bad = json.dumps({"endpoint": "/api/v3/time", "mode": "teapot"}).encode()
        assert _call(f"{url}/__fake__/fail_next", "POST", body=bad)[0] == 400
        state = _call(f"{url}/__fake__/state")[1]
        assert [r[:2] for r in state["requests"]] == [["GET", "/api/v3/time"], ["GET", "/api/v3/time"]]
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
    assert process.returncode == 0


def _signed(fake: FakeBinance, method: str, path: str, **params: Any) -> tuple[int, Any]:
    query = "&".join(f"{k}={v}" for k, v in {**params, "timestamp": 1, "signature": "x"}.items())
    return _call(f"{fake.url}{path}?{query}", method, key=DEFAULT_API_KEY)


def test_futures_reduce_only_exits_fire_on_price_and_never_flip(fake_exchange: FakeBinance) -> None:
    fake_exchange.set_price("BTCUSDT", 30000)
    status, _ = _signed(fake_exchange, "POST", "/fapi/v1/order", symbol="BTCUSDT", side="BUY", type="MARKET",
                        quantity="0.010")  # fmt: skip
    assert status == 200 and fake_exchange.futures_position() == 0.01
    algo = {"symbol": "BTCUSDT", "side": "SELL", "algoType": "CONDITIONAL", "reduceOnly": "true"}
    _signed(fake_exchange, "POST", "/fapi/v1/algoOrder", **algo, type="STOP_MARKET", quantity="0.040",
            triggerPrice="29000", clientAlgoId="stop")  # fmt: skip
    _signed(fake_exchange, "POST", "/fapi/v1/algoOrder", **algo, type="TAKE_PROFIT_MARKET", quantity="0.010",
            triggerPrice="31000", clientAlgoId="target")  # fmt: skip
    # Over HTTP, as an end-to-end test moves it: below the stop, which fires for what is held only.
    assert _call(f"{fake_exchange.url}/__fake__/price", "POST",
                 body=json.dumps({"symbol": "BTCUSDT", "price": "28900"}).encode())[0] == 200  # fmt: skip
    assert fake_exchange.futures_position() == 0.0  # 0.01 closed, never flipped to a 0.03 short
    fired = {o["clientAlgoId"]: o for o in fake_exchange.futures.algo_orders}
    assert fired["stop"]["algoStatus"] == "FINISHED" and fired["target"]["algoStatus"] == "NEW"
    (fill,) = [o for o in fake_exchange.futures.orders if str(o["orderId"]) == fired["stop"]["actualOrderId"]]
    assert (fill["executedQty"], fill["avgPrice"], fill["reduceOnly"]) == ("0.010", "28900", True)
    fake_exchange.set_price("BTCUSDT", 31500)  # nothing left to reduce: the target expires
    assert fired["target"]["algoStatus"] == "EXPIRED" and fake_exchange.futures_position() == 0.0
    status, body = _signed(fake_exchange, "POST", "/fapi/v1/order", symbol="BTCUSDT", side="SELL",
                           type="MARKET", quantity="0.010", reduceOnly="true")  # fmt: skip
    assert (status, body["code"]) == (400, -2022)


def test_futures_endpoints_take_fault_injection(fake_exchange: FakeBinance) -> None:
    fake_exchange.fail_next("POST /fapi/v1/leverage", "429")
    status, _ = _signed(fake_exchange, "POST", "/fapi/v1/leverage", symbol="BTCUSDT", leverage="3")
    assert status == 429 and fake_exchange.futures.position("BTCUSDT").leverage == 20
    status, body = _signed(fake_exchange, "POST", "/fapi/v1/leverage", symbol="BTCUSDT", leverage="3")
    assert status == 200 and body["leverage"] == 3


def test_spot_stop_loss_rests_then_fills_when_crossed(fake_exchange: FakeBinance) -> None:
    fake_exchange.set_price("BTCUSDT", 30000)
    status, order = _signed(fake_exchange, "POST", "/api/v3/order", symbol="BTCUSDT", side="SELL",
                            type="STOP_LOSS", quantity="0.01000", stopPrice="29000")  # fmt: skip
    assert status == 200 and order["status"] == "NEW" and order["stopPrice"] == "29000.00000000"
    fake_exchange.set_price("BTCUSDT", 29500)
    assert fake_exchange.orders[-1]["status"] == "NEW"
    fake_exchange.set_price("BTCUSDT", 28950)
    assert fake_exchange.orders[-1]["status"] == "FILLED"
    assert fake_exchange.orders[-1]["fills"][0]["price"] == "28950.00000000"
