"""Exchange truth, end to end: a real ``gunicorn wsgi:app`` (two workers) trading through real
ccxt on the local fake Binance, which behaves as a loaded live exchange does when told to:
market orders acknowledged NEW with nothing or part filled and filled later, commissions taken
in the coin bought or paid in BNB, answers lost or never coming, a rate limit on a stop, coins
moved by someone else. After every scenario the gateway's booked positions equal what the
exchange holds (within one step) and no order was placed twice (:func:`books_agree`).

One fake exchange and one gateway serve the whole module (a gateway takes seconds to start);
each scenario trades its own coin, so the books of all of them are checked after each one.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from engine.lifecycle import PENDING_GRACE_S
from tests.conftest import ROOT, LiveGateway, db_rows, sample_alert, start_gateway, wait_until
from tests.fake_exchange import DEFAULT_API_KEY, DEFAULT_SECRET, FakeBinance
from tests.operator.fake_chat import FakeChat

pytestmark = pytest.mark.slow

#: The candle store's prices (tests.conftest.MARKET), and the exchange's: the same market.
PRICES = {"BTCUSDT": "30000", "ETHUSDT": "1800", "SOLUSDT": "20.5", "BNBUSDT": "600"}
COINS = {"BTC": "BTC/USDT", "ETH": "ETH/USDT", "SOL": "SOL/USDT", "BNB": "BNB/USDT"}
STEP = {"BTC": 0.00001, "ETH": 0.0001, "SOL": 0.001, "BNB": 0.001}


@dataclass
class Desk:
    """The module's shared exchange, gateway (replaced when a scenario restarts it), and what
    the exchange held before the gateway traded."""

    fake: FakeBinance
    gateway: LiveGateway
    folder: Path
    env: dict[str, str]
    start: dict[str, Decimal]
    notified: FakeChat

    def post(self, status: int | None = 200, **fields: Any) -> dict[str, Any]:
        response = self.gateway.post(sample_alert(**fields))
        if status is not None:
            assert response.status_code == status, response.text
        return dict(response.json())

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        return db_rows(self.gateway.database, sql, params)

    def position(self, symbol: str) -> float:
        rows = self.rows("SELECT amount FROM positions WHERE symbol = ?", (symbol,))
        return float(rows[0]["amount"]) if rows else 0.0

    def order(self, cid: str) -> Any:
        (row,) = self.rows("SELECT * FROM orders WHERE client_order_id = ?", (cid,))
        return row

    def restart(self) -> None:
        self.gateway.kill()
        port = int(self.gateway.url.rsplit(":", 1)[1])
        self.gateway = start_gateway(self.folder, port=port, prices=None, **self.env)


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Desk]:
    folder = tmp_path_factory.mktemp("exchange-truth")
    # One store for the module's gateway and its restarts (a module fixture runs before the
    # per-test choice of store is made): a schema of its own with --store=postgresql.
    on_postgres = request.config.getoption("--store") == "postgresql"
    store = request.getfixturevalue("postgres_schemas").new() if on_postgres else str(folder / "tvgw.sqlite")
    (folder / "tvgw.toml").write_text('[strategies.default]\npassphrase = "test-secret"\nstop_loss = "2%"\n')
    fake = FakeBinance(timeout_delay_s=3.0).start()
    for symbol, price in PRICES.items():
        fake.set_price(symbol, price)
    chat = FakeChat()
    env = {
        "TVGW_DATABASE": store, "TVGW_CONFIG": str(folder / "tvgw.toml"), "TVGW_BROKER": "binance",
        "TVGW_EXCHANGE_API_URL": fake.url,
        "TVGW_BINANCE_API_KEY": DEFAULT_API_KEY, "TVGW_BINANCE_SECRET": DEFAULT_SECRET,
        "TVGW_EXCHANGE_TIMEOUT_MS": "1000", "TVGW_ORDER_POLL_INTERVAL_S": "0.2",
        "TVGW_ORDER_NOT_FOUND_GRACE_S": "2", "TVGW_RECONCILE_INTERVAL_S": "0.5",
        "TVGW_EXIT_WATCH_INTERVAL_S": "0.3", "TVGW_NOTIFY_WEBHOOK_URL": chat.url,
        "TVGW_API_TOKEN": "operator-token",
    }  # fmt: skip
    start = {coin: fake.balance(coin) for coin in COINS}
    gateway = start_gateway(folder, **env)
    shared = Desk(fake, gateway, folder, env, start, chat)
    try:
        yield shared
    finally:
        shared.gateway.kill()  # nothing to clean up: the files are the test's
        fake.stop()
        chat.close()


def settled(desk: Desk) -> bool:
    return not desk.rows(
        "SELECT 1 FROM orders WHERE status IN ('pending', 'open', 'partially_filled', 'unknown')"
    ) and not desk.rows("SELECT 1 FROM exits WHERE firing_cid IS NOT NULL AND status = 'open'")


def books_agree(desk: Desk) -> None:
    """The invariant every scenario ends on: once no order is in flight, each coin's booked
    position equals what the exchange gained of it since the module began, within one step;
    and no client order id was ever sent twice (the fake exchange records every request)."""
    wait_until(lambda: settled(desk), 30, "every order settled", desk.gateway.log)
    for coin, symbol in COINS.items():
        gained = float(desk.fake.balance(coin) - desk.start[coin])
        booked = desk.position(symbol)
        assert abs(gained - booked) <= STEP[coin] * (1 + 1e-6), f"{coin}: exchange +{gained}, book {booked}"
    sent = Counter(
        p.get("newClientOrderId")
        for m, path, p in desk.fake.requests
        if (m, path) == ("POST", "/api/v3/order")
    )
    assert all(n == 1 for n in sent.values()), [cid for cid, n in sent.items() if n > 1]


def test_an_entry_acknowledged_new_is_followed_until_filled_and_protected(desk: Desk) -> None:
    desk.fake.hold_fills("BTCUSDT", 0)
    body = desk.post(order_id="new-0", contracts=0.01)
    assert body["status"] == "placed", body  # 200: the exchange holds it; no 502, no resend
    cid = body["decision"]["order"]["client_order_id"]
    assert desk.order(cid)["status"] == "open" and desk.position("BTC/USDT") == 0.0
    # A close while nothing filled sells nothing (it used to book a -0.01 short on a flat account).
    close = desk.post(action="close_long", order_id="new-close", contracts=None)
    assert close["status"] == "rejected" and "nothing filled to close" in close["decision"]["reason"]
    desk.fake.complete_fills()
    wait_until(lambda: desk.order(cid)["status"] == "filled", 15, "the fill booked", desk.gateway.log)
    assert desk.position("BTC/USDT") == pytest.approx(0.00999)  # net of the 0.1% fee taken in BTC
    (stop,) = desk.rows("SELECT * FROM exits WHERE alert_id = ? AND status = 'open'", (body["alert_id"],))
    assert stop["kind"] == "stop" and stop["entry_amount"] == pytest.approx(0.00999)
    assert desk.rows("SELECT status FROM alerts WHERE id = ?", (body["alert_id"],))[0]["status"] == "executed"
    books_agree(desk)
    # The close sells what the account received, never the 0.01 it asked for: it fills.
    close = desk.post(action="close_long", order_id="new-close-2", contracts=None)
    assert close["status"] == "executed" and close["decision"]["order"]["amount"] == pytest.approx(0.00999)
    assert desk.position("BTC/USDT") == 0.0
    books_agree(desk)


def test_a_partial_fill_is_booked_as_it_grows_and_its_exits_follow(desk: Desk) -> None:
    desk.fake.hold_fills("SOLUSDT", "0.4")
    target = {"ticker": "SOLUSDT", "price": 20.5, "contracts": None, "market_position": "long"}
    body = desk.post(order_id="part-1", position_size=10, **target)
    assert body["status"] == "executed" and body["decision"]["fill"]["filled"] == pytest.approx(4.0)
    cid = body["decision"]["order"]["client_order_id"]
    assert desk.position("SOL/USDT") == pytest.approx(3.996)
    stop = desk.rows("SELECT * FROM exits WHERE alert_id = ? AND kind = 'stop'", (body["alert_id"],))[0]
    assert stop["entry_amount"] == pytest.approx(3.996)
    # The same target again: the open rest counts, so nothing is bought twice (what is left to
    # buy is the fee's 0.004 SOL, below the market's minimum order).
    again = desk.post(order_id="part-2", position_size=10, **target)
    assert again["status"] == "rejected" and "below the market minimum" in again["decision"]["reason"]
    assert sum(1 for o in desk.fake.orders if o["symbol"] == "SOLUSDT") == 1
    desk.fake.complete_fills()
    wait_until(lambda: desk.order(cid)["status"] == "filled", 15, "the rest booked", desk.gateway.log)
    assert desk.position("SOL/USDT") == pytest.approx(9.99)
    stop = desk.rows("SELECT * FROM exits WHERE id = ?", (stop["id"],))[0]
    assert stop["status"] == "open" and stop["entry_amount"] == pytest.approx(9.99)  # resized as it grew
    (row,) = desk.rows("SELECT booked, booked_net, fees FROM orders WHERE client_order_id = ?", (cid,))
    assert (row["booked"], row["booked_net"], json.loads(row["fees"])) == (
        10.0,
        pytest.approx(9.99),
        {"SOL": 0.01},
    )
    books_agree(desk)


def test_an_order_whose_answer_was_lost_is_settled_either_way(desk: Desk) -> None:
    # Never reached the exchange: unknown, then closed as such; it stops counting as held.
    desk.fake.fail_next("POST /api/v3/order", "timeout_lost")
    lost = desk.post(502, ticker="ETHUSDT", price=1800.0, order_id="lost-1", contracts=0.1)
    cid = lost["decision"]["order"]["client_order_id"]
    assert desk.order(cid)["status"] == "unknown"
    wait_until(
        lambda: desk.order(cid)["status"] == "not_placed", 20, "closed as not placed", desk.gateway.log
    )
    # Placed, but the answer and both look-ups were lost: unknown, then found filled and booked.
    desk.fake.fail_next("POST /api/v3/order", "timeout")
    desk.fake.fail_next("GET /api/v3/order", "500", times=2)
    body = desk.post(502, ticker="ETHUSDT", price=1800.0, order_id="lost-2", contracts=0.1)
    cid = body["decision"]["order"]["client_order_id"]
    wait_until(
        lambda: desk.order(cid)["status"] == "filled", 20, "the lost order found filled", desk.gateway.log
    )
    assert desk.position("ETH/USDT") == pytest.approx(0.0999)
    assert desk.rows("SELECT * FROM exits WHERE alert_id = ? AND kind = 'stop'", (body["alert_id"],))
    assert desk.rows("SELECT status FROM alerts WHERE id = ?", (body["alert_id"],))[0]["status"] == "executed"
    books_agree(desk)


def test_a_fee_paid_in_bnb_is_valued_through_bnbusdt(desk: Desk) -> None:
    desk.fake.set_balance("BNB", "1")
    desk.start["BNB"] = Decimal("1")
    desk.fake.commission_asset = "BNB"
    try:
        body = desk.post(ticker="ETHUSDT", price=1800.0, order_id="bnb-1", contracts=0.1)
    finally:
        desk.fake.commission_asset = None
    row = desk.order(body["decision"]["order"]["client_order_id"])
    fee_bnb = 0.1 * 1800 * 0.00075 / 600
    assert json.loads(row["fees"]) == {"BNB": pytest.approx(fee_bnb)}
    assert row["fee_value"] == pytest.approx(fee_bnb * 600)  # at BNBUSDT, not at the ETH price
    assert desk.position("ETH/USDT") == pytest.approx(0.1999)  # all of the ETH bought: no fee in ETH
    desk.start["BNB"] -= Decimal(str(fee_bnb))  # the fee left the account; it is no position
    books_agree(desk)


def test_a_spot_sell_from_flat_is_refused_naming_the_field(desk: Desk) -> None:
    orders_before = len(desk.fake.orders)
    response = desk.gateway.post(
        sample_alert(ticker="BNBUSDT", price=600.0, action="sell", order_id="short-1")
    )
    assert response.status_code == 422
    body = response.json()
    assert body["error"]["code"] == "spot_short" and body["error"]["where"] == "action"
    assert "close_long" in body["error"]["message"] and "BNBUSDT.P" in body["error"]["message"]
    assert len(desk.fake.orders) == orders_before and desk.position("BNB/USDT") == 0.0
    books_agree(desk)


def test_a_gateway_fired_stop_is_spent_only_when_its_order_fills(desk: Desk) -> None:
    body = desk.post(order_id="stop-1", contracts=0.02)
    assert body["status"] == "executed" and desk.position("BTC/USDT") == pytest.approx(0.01998)
    (stop,) = desk.rows("SELECT * FROM exits WHERE alert_id = ? AND kind = 'stop'", (body["alert_id"],))
    assert stop["held_by"] == "gateway"  # spot: the gateway fires it itself
    desk.fake.fail_next("POST /api/v3/order", "429")
    desk.fake.fail_next("POST /api/v3/order", "503")
    desk.fake.set_price("BTCUSDT", "29000")  # through the stop at 29400

    def spent() -> bool:
        return bool(
            desk.rows("SELECT status FROM exits WHERE id = ?", (stop["id"],))[0]["status"] == "filled"
        )

    try:
        wait_until(spent, 30, "the stop filled after a 429 and a 503", desk.gateway.log)
    finally:
        desk.fake.set_price("BTCUSDT", PRICES["BTCUSDT"])
    fired = desk.rows("SELECT status FROM orders WHERE reason = 'stop' ORDER BY id")
    assert [r["status"] for r in fired][-1] == "filled" and {"failed", "not_placed"} <= {
        r["status"] for r in fired
    }
    assert desk.position("BTC/USDT") == 0.0
    books_agree(desk)


def test_a_fill_the_gateway_never_recorded_is_booked_and_protected_after_a_kill(desk: Desk) -> None:
    desk.fake.fail_next("POST /api/v3/order", "hang")  # the exchange fills; the answer never comes
    desk.fake.fail_next("GET /api/v3/order", "hang", times=2)  # nor do the look-ups
    alert = sample_alert(ticker="ETHUSDT", price=1800.0, order_id="kill-1", contracts=0.5)
    sent = threading.Thread(target=_quietly, args=(desk.gateway.post, alert), daemon=True)
    before = len(desk.fake.orders)
    sent.start()
    wait_until(lambda: len(desk.fake.orders) > before and desk.fake.orders[-1]["status"] == "FILLED", 10,
               "the exchange filled the order")  # fmt: skip
    cid = desk.fake.orders[-1]["clientOrderId"]
    assert desk.order(cid)["status"] == "pending"  # the intent is on file; its fill is not
    desk.restart()  # SIGKILL between the exchange's fill and the gateway's record, then start again
    desk.fake.release()
    # SQLite: start-up recovery books it (no other host can be sending it). A store hosts share
    # leaves a young pending order to whoever may be sending it: the lifecycle asks about it once
    # its sender's grace (PENDING_GRACE_S) has passed.
    patience = 20 + (PENDING_GRACE_S if desk.env["TVGW_DATABASE"].startswith("postgresql") else 0)
    wait_until(lambda: desk.order(cid)["status"] == "filled", patience, "the fill booked after the restart",
               desk.gateway.log)  # fmt: skip
    row = desk.order(cid)
    assert row["booked"] == row["amount"] == row["filled"]  # all of what the exchange filled
    held = desk.position("ETH/USDT")
    assert held == pytest.approx(0.1999 + row["booked_net"]) and row["booked_net"] < row["booked"]
    (stop,) = desk.rows("SELECT * FROM exits WHERE alert_id = ? AND status = 'open'", (row["alert_id"],))
    assert stop["kind"] == "stop" and stop["entry_amount"] == pytest.approx(held)  # on the whole position
    books_agree(desk)


def test_the_reconciler_says_when_the_books_disagree_and_can_adopt_the_exchange(desk: Desk) -> None:
    holding = desk.fake.balance("SOL")
    desk.fake.set_balance("SOL", str(holding - 1))  # someone sold 1 SOL outside the gateway

    def problem() -> list[str]:
        answer = requests.get(desk.gateway.url + "/healthz", timeout=5).json()
        return [p for p in answer["problems"] if "SOL/USDT" in p]

    (line,) = wait_until(problem, 20, "a /healthz problem for SOL/USDT", desk.gateway.log)
    assert "disagree with the exchange" in line
    (off,) = requests.get(desk.gateway.url + "/healthz", timeout=5).json()["books"]["off"]
    assert off["symbol"] == "SOL/USDT" and off["difference"] == pytest.approx(-1.0)

    def books_told() -> list[dict[str, Any]]:
        return [m for _, m in desk.notified.received if m.get("event") == "books_off"]

    told = wait_until(books_told, 20, "a books_off notification")  # trades are told too: wait for this one
    assert told[0]["symbol"] == "SOL/USDT" and told[0]["difference"] == pytest.approx(-1.0)
    session = requests.Session()
    page = session.get(desk.gateway.url + "/", timeout=5).text
    csrf = page.split('name="csrf" value="')[1].split('"')[0]
    session.post(desk.gateway.url + "/login", data={"token": "operator-token", "csrf": csrf}, timeout=5)
    flag = session.get(desk.gateway.url + "/dashboard/data", timeout=5).json()["books"]["off"]
    assert [f["symbol"] for f in flag] == ["SOL/USDT"]
    adopted = subprocess.run([sys.executable, "-m", "tvgw.cli", "reconcile", "--adopt", "--yes"], cwd=ROOT,
                             env=desk.gateway.env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert adopted.returncode == 0, adopted.stdout + adopted.stderr
    assert "SOL/USDT" in adopted.stdout and "-1" in adopted.stdout and "the exchange's view" in adopted.stdout
    assert desk.position("SOL/USDT") == pytest.approx(8.99)
    wait_until(lambda: not problem(), 20, "/healthz without the SOL/USDT problem", desk.gateway.log)

    books_agree(desk)


def _quietly(post: Any, body: dict[str, Any]) -> None:
    """Send an alert whose answer never comes (the gateway is killed meanwhile)."""
    with contextlib.suppress(requests.RequestException):
        post(body)
