"""The fake Binance itself: what it refuses, what it records, and running it standalone.

These speak raw HTTP (urllib), not ccxt, so they check the fake's Binance dialect directly."""

from __future__ import annotations

import json
import subprocess
import sys
import time
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
        deadline = time.monotonic() + 5
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
    assert process.returncode == 0
