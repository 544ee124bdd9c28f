"""Protective exits on an exchange, through the whole app and real ccxt against the fake Binance:
a perpetual's stop and take-profits rest on the exchange as reduce-only orders (they hold while
the gateway is down); the watcher learns what they did and records each fill once; break-even,
trailing and partial closes replace them; closing or reversing cancels them; an exchange that
cannot hold them is said at start-up and watched by the gateway; a lost placement answer is
looked up, never placed twice. Leverage and margin mode are set through ccxt before the entry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.lifecycle import PENDING_GRACE_S
from storage import exits as exit_store
from tests.conftest import db_rows, make_settings, sample_alert, seed_market, start_gateway, wait_until
from tests.fake_exchange import DEFAULT_API_KEY, DEFAULT_SECRET, FakeBinance
from webhook import create_app, get_gateway
from webhook.recovery import recover

PERP = "BTC/USDT:USDT"


@pytest.fixture
def exchange_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVGW_BINANCE_API_KEY", DEFAULT_API_KEY)
    monkeypatch.setenv("TVGW_BINANCE_SECRET", DEFAULT_SECRET)


def gateway(tmp_path: Path, fake: FakeBinance, **strategy: Any) -> tuple[Any, Any]:
    """The app on the fake exchange, its watcher thread off (the tests run it at the moments
    they choose), the market at 30000 on the exchange and in the candle store."""
    overrides: dict[str, Any] = {"strategies": {"default": {"passphrase": "test-secret", **strategy}}}
    settings = make_settings(
        tmp_path, overrides, TVGW_BROKER="binance", TVGW_EXCHANGE_API_URL=fake.url,
        TVGW_EXCHANGE_TIMEOUT_MS="600", TVGW_EXIT_WATCH_INTERVAL_S="0",
    )  # fmt: skip
    fake.set_price("BTCUSDT", 30000)
    seed_market(settings.database, {PERP: 30000.0, "BTC/USDT": 30000.0})
    app = create_app(settings)
    app.config["fake"] = fake
    return settings, app


def send(app: Any, status: int = 200, **fields: Any) -> dict[str, Any]:
    alert = sample_alert(ticker="BTCUSDT.P", **fields)
    response = app.test_client().post("/webhook", data=json.dumps(alert))
    assert response.status_code == status, response.json
    return dict(response.json)


def entry(app: Any, **fields: Any) -> dict[str, Any]:
    """A long of 0.04 with a stop at 29000 and two targets, half each, at 31000 and 32000."""
    fields = {"contracts": 0.04, "stop_loss": "29000", "take_profit": "31000@50, 32000@50", **fields}
    body = send(app, **fields)
    assert body["status"] == "executed", body
    if body["decision"]["details"]["exits"]["held_by"] == "exchange":
        rests(fake_of(app), STOP, *TARGETS)
    return body


def fake_of(app: Any) -> FakeBinance:
    return app.config["fake"]  # type: ignore[no-any-return]


def watch(app: Any) -> int:
    """What each worker's exit watcher runs."""
    return int(get_gateway(app).engine.watch_exits())


def resting(fake: FakeBinance) -> list[tuple[str, str, str, str, bool]]:
    """The exchange's open conditional orders: (type, side, quantity, trigger, reduce-only)."""
    return sorted(
        (o["orderType"], o["side"], o["quantity"], o["triggerPrice"], o["reduceOnly"])
        for o in fake.exit_orders()
    )


def rests(fake: FakeBinance, *expected: tuple[str, str, str, str, bool]) -> None:
    """Wait until the exchange holds exactly ``expected``: exits are placed (and replaced)
    right after the answer, by the engine's exit thread, so the answer never waits on them."""
    wanted = sorted(expected)
    wait_until(lambda: resting(fake) == wanted, 15, f"resting exits {wanted}", lambda: str(resting(fake)))


STOP = ("STOP_MARKET", "SELL", "0.04", "29000", True)
TARGETS = (
    ("TAKE_PROFIT_MARKET", "SELL", "0.02", "31000", True),
    ("TAKE_PROFIT_MARKET", "SELL", "0.02", "32000", True),
)


def exit_orders(settings: Any) -> list[Any]:
    return db_rows(settings.database, "SELECT * FROM orders WHERE reason IS NOT NULL ORDER BY id")


def position(settings: Any) -> float:
    rows = db_rows(settings.database, "SELECT amount FROM positions WHERE symbol = ?", (PERP,))
    return 0.0 if not rows else float(rows[0]["amount"])


def test_entry_with_a_stop_and_two_targets_rests_three_orders_on_the_exchange(
    tmp_path: Path, fake_exchange: FakeBinance, exchange_env: None
) -> None:
    _, app = gateway(tmp_path, fake_exchange)
    body = entry(app)
    assert body["decision"]["details"]["exits"]["held_by"] == "exchange"
    assert fake_exchange.futures_position() == pytest.approx(0.04)
    assert watch(app) == 0  # nothing fired: nothing recorded, nothing replaced
    assert len(fake_exchange.futures.algo_orders) == 3


def test_first_target_closes_half_and_moves_the_exchange_stop_to_break_even(
    tmp_path: Path, fake_exchange: FakeBinance, exchange_env: None
) -> None:
    settings, app = gateway(tmp_path, fake_exchange, break_even=True)
    entry(app)
    fake_exchange.set_price("BTCUSDT", 31100)  # the exchange fires the first target
    assert watch(app) == 1
    (row,) = exit_orders(settings)
    assert (row["reason"], row["side"], row["status"], row["filled"]) == (
        "take_profit_1",
        "sell",
        "filled",
        0.02,
    )
    assert row["average"] == 31100.0
    assert position(settings) == pytest.approx(0.02)
    # The stop was cancelled and placed again at the entry, for what is left.
    assert resting(fake_exchange) == [
        ("STOP_MARKET", "SELL", "0.02", "30000", True),
        TARGETS[1],
    ]
    assert watch(app) == 0 and len(exit_orders(settings)) == 1  # recorded once
    fake_exchange.set_price("BTCUSDT", 29990)  # back through the entry: the break-even stop fires
    assert watch(app) == 1
    assert [r["reason"] for r in exit_orders(settings)] == ["take_profit_1", "stop"]
    assert position(settings) == pytest.approx(0.0) and fake_exchange.futures_position() == 0


def test_stop_closes_the_position_and_cancels_the_targets_on_the_exchange(
    tmp_path: Path, fake_exchange: FakeBinance, exchange_env: None
) -> None:
    settings, app = gateway(tmp_path, fake_exchange)
    entry(app)
    fake_exchange.set_price("BTCUSDT", 28900)
    assert watch(app) == 1
    (row,) = exit_orders(settings)
    assert (row["reason"], row["filled"], row["average"]) == ("stop", 0.04, 28900.0)
    assert resting(fake_exchange) == []
    assert sorted(o["algoStatus"] for o in fake_exchange.futures.algo_orders) == [
        "CANCELED", "CANCELED", "FINISHED",
    ]  # fmt: skip
    statuses = db_rows(settings.database, "SELECT kind, status FROM exits ORDER BY id")
    assert [(r["kind"], r["status"]) for r in statuses] == [
        ("stop", "filled"), ("take_profit_1", "canceled"), ("take_profit_2", "canceled"),
    ]  # fmt: skip
    assert position(settings) == 0.0
    fake_exchange.set_price("BTCUSDT", 33000)  # the cancelled targets stay cancelled
    assert watch(app) == 0 and len(exit_orders(settings)) == 1


def test_trailing_stop_follows_the_price_then_fires_on_the_exchange(
    tmp_path: Path, fake_exchange: FakeBinance, exchange_env: None
) -> None:
    settings, app = gateway(tmp_path, fake_exchange)
    body = send(app, contracts=0.04, trailing_stop="500")
    assert body["status"] == "executed", body
    rests(fake_exchange, ("STOP_MARKET", "SELL", "0.04", "29500", True))
    fake_exchange.set_price("BTCUSDT", 31000)
    watch(app)
    assert resting(fake_exchange) == [("STOP_MARKET", "SELL", "0.04", "30500", True)]
    fake_exchange.set_price("BTCUSDT", 30800)  # lower: a trailing stop never moves back
    watch(app)
    assert resting(fake_exchange) == [("STOP_MARKET", "SELL", "0.04", "30500", True)]
    fake_exchange.set_price("BTCUSDT", 30400)
    assert watch(app) == 1
    (row,) = exit_orders(settings)
    assert (row["reason"], row["filled"], row["average"]) == ("trailing", 0.04, 30400.0)
    assert position(settings) == 0.0 and resting(fake_exchange) == []


def test_partial_close_resizes_the_exchange_exits(
    tmp_path: Path, fake_exchange: FakeBinance, exchange_env: None
) -> None:
    settings, app = gateway(tmp_path, fake_exchange)
    entry(app)
    body = send(app, action="close 50%", contracts=None, order_id="half")
    assert body["status"] == "executed", body
    assert position(settings) == pytest.approx(0.02)
    rests(
        fake_exchange,
        ("STOP_MARKET", "SELL", "0.02", "29000", True),
        ("TAKE_PROFIT_MARKET", "SELL", "0.01", "31000", True),
        ("TAKE_PROFIT_MARKET", "SELL", "0.01", "32000", True),
    )


def test_reversal_cancels_the_open_exits(
    tmp_path: Path, fake_exchange: FakeBinance, exchange_env: None
) -> None:
    settings, app = gateway(tmp_path, fake_exchange)
    entry(app)
    body = send(app, action="reverse", contracts=None, order_id="flip")
    assert body["status"] == "executed", body
    assert position(settings) == pytest.approx(-0.04) and fake_exchange.futures_position() == -0.04
    rests(fake_exchange)
    rows = db_rows(settings.database, "SELECT status, reason FROM exits")
    assert {r["status"] for r in rows} == {"canceled"} and all("reversed" in r["reason"] for r in rows)


def test_close_cancels_the_open_exits(tmp_path: Path, fake_exchange: FakeBinance, exchange_env: None) -> None:
    settings, app = gateway(tmp_path, fake_exchange)
    entry(app)
    assert send(app, action="close_all", contracts=None, order_id="out")["status"] == "executed"
    assert position(settings) == 0.0
    rests(fake_exchange)


def test_perpetual_entry_at_3x_isolated_with_a_reduce_only_stop(
    tmp_path: Path, fake_exchange: FakeBinance, exchange_env: None
) -> None:
    settings, app = gateway(tmp_path, fake_exchange)
    body = send(app, contracts=0.04, stop_loss="29000", leverage=3, margin_mode="isolated")
    assert body["status"] == "executed", body
    rests(fake_exchange, STOP)
    assert (
        body["decision"]["order"]["leverage"] == 3 and body["decision"]["order"]["margin_mode"] == "isolated"
    )
    sent = {path: params for method, path, params in fake_exchange.requests if method == "POST"}
    assert sent["/fapi/v1/marginType"]["marginType"] == "ISOLATED"
    assert sent["/fapi/v1/leverage"]["leverage"] == "3"
    assert sent["/fapi/v1/algoOrder"]["reduceOnly"] == "true"
    assert sent["/fapi/v1/algoOrder"]["type"] == "STOP_MARKET"
    position_on_exchange = fake_exchange.futures.position("BTCUSDT")
    assert (position_on_exchange.leverage, position_on_exchange.margin_type) == (3, "ISOLATED")
    # Setting them again is skipped while they do not change (once per change of the symbol's).
    send(app, contracts=0.01, leverage=3, margin_mode="isolated", order_id="add")
    assert fake_exchange.request_count("POST", "/fapi/v1/leverage") == 1
    assert position(settings) == pytest.approx(0.05)


def test_leverage_above_the_strategy_limit_is_refused_and_recorded(
    tmp_path: Path, fake_exchange: FakeBinance, exchange_env: None
) -> None:
    settings, app = gateway(tmp_path, fake_exchange, max_leverage=2)
    body = send(app, status=422, contracts=0.04, leverage=3)
    assert body["error"]["code"] == "leverage_above_limit" and "2x" in body["error"]["message"]
    assert fake_exchange.request_count("POST", "/fapi/v1/order") == 0
    (alert,) = db_rows(settings.database, "SELECT status FROM alerts")
    assert alert["status"] == "refused"
    spot = app.test_client().post("/webhook", data=json.dumps(sample_alert(leverage=2, order_id="spot")))
    assert spot.status_code == 422 and spot.json["error"]["code"] == "leverage_on_spot"


def test_fixed_quote_sizing_on_a_perpetual_is_margin_times_leverage(
    tmp_path: Path, fake_exchange: FakeBinance, exchange_env: None
) -> None:
    settings, app = gateway(tmp_path, fake_exchange, sizing="fixed_quote", quote_amount=300, leverage=2)
    body = send(app, contracts=None)
    assert body["status"] == "executed", body
    assert position(settings) == pytest.approx(0.02)  # 300 margin x 2 / 30000


def test_an_exchange_that_cannot_hold_stops_is_said_at_start_and_watched_by_the_gateway(
    tmp_path: Path, exchange_env: None
) -> None:
    with FakeBinance(futures_order_types=("LIMIT", "MARKET")) as fake:
        settings, app = gateway(tmp_path, fake)
        lines = recover(settings)
        notice = [line for line in lines if "exits on perpetuals" in line]
        assert len(notice) == 1 and "watched by the gateway" in notice[0], lines
        body = entry(app)
        assert body["decision"]["details"]["exits"]["held_by"] == "gateway"
        assert fake.futures.algo_orders == []  # nothing rests on the exchange
        fake.set_price("BTCUSDT", 28900)
        assert watch(app) == 1
        (row,) = exit_orders(settings)
        assert (row["reason"], row["filled"], row["status"]) == ("stop", 0.04, "filled")
        closing = [p for m, path, p in fake.requests if (m, path) == ("POST", "/fapi/v1/order")][-1]
        assert closing["reduceOnly"] == "true" and closing["side"] == "SELL"
        assert fake.futures_position() == 0 and watch(app) == 0


def test_timeout_on_exit_placement_is_reconciled_never_a_duplicate_stop(
    tmp_path: Path, fake_exchange: FakeBinance, exchange_env: None
) -> None:
    _, app = gateway(tmp_path, fake_exchange)
    fake_exchange.fail_next("POST /fapi/v1/algoOrder", "timeout")  # placed, the answer comes late
    send(app, contracts=0.04, stop_loss="29000")
    rests(fake_exchange, STOP)
    assert fake_exchange.request_count("POST", "/fapi/v1/algoOrder") == 1
    watch(app)
    assert len(fake_exchange.futures.algo_orders) == 1


def test_lost_exit_placement_is_looked_up_then_placed_once(
    tmp_path: Path, fake_exchange: FakeBinance, exchange_env: None
) -> None:
    settings, app = gateway(tmp_path, fake_exchange)
    fake_exchange.fail_next("POST /fapi/v1/algoOrder", "timeout_lost")  # never reached the book
    send(app, contracts=0.04, stop_loss="29000")
    lookups = 2  # the broker's reconciliation: read_retries + 1 lookups by client id, then it gives up
    wait_until(lambda: fake_exchange.request_count("GET", "/fapi/v1/algoOrder") >= lookups, 15, "lookups")
    assert fake_exchange.futures.algo_orders == []
    sql = "SELECT exchange_status, placements FROM exits"
    wait_until(lambda: db_rows(settings.database, sql)[0]["exchange_status"] == "unknown", 15, "given up")
    (row,) = db_rows(settings.database, sql)
    assert row["placements"] == 1  # its sender gave up: unknown, not placed again
    watch(app)  # the lookup finds none: placed again, under a fresh client id
    watch(app)
    assert resting(fake_exchange) == [STOP]
    (placed,) = [o["clientAlgoId"] for o in fake_exchange.futures.algo_orders]
    assert placed.startswith("tvgw-") and placed.endswith("-x1-2")


def test_a_placement_in_flight_is_left_to_its_sender_until_the_grace_runs_out(
    tmp_path: Path, fake_exchange: FakeBinance, exchange_env: None
) -> None:
    """Another worker's placement has been claimed but has not reached the exchange yet: a
    watcher pass must not look it up (it would find nothing, call it gone and place a second
    stop beside the first). Past PENDING_GRACE_S its sender is taken for dead: looked up, placed."""
    settings, app = gateway(tmp_path, fake_exchange)
    storage = get_gateway(app).storage
    fake_exchange.fail_next("POST /fapi/v1/algoOrder", "429")  # the entry's own placement: not placed
    send(app, contracts=0.04, stop_loss="29000")
    placing = lambda: exit_store.open_exits(storage, "binance", PERP)[0].exchange_status  # noqa: E731
    wait_until(lambda: placing() == "failed", 15, "the refused placement")
    (armed,) = exit_store.open_exits(storage, "binance", PERP)
    assert fake_exchange.futures.algo_orders == []
    # The other worker's claim; its request is still on the way to the exchange.
    assert exit_store.begin_placement(storage, armed, "tvgw-other-x1-9", 29000.0, 0.04)
    lookups = fake_exchange.request_count("GET", "/fapi/v1/algoOrder")
    watch(app)
    assert fake_exchange.request_count("GET", "/fapi/v1/algoOrder") == lookups  # not asked about
    assert fake_exchange.futures.algo_orders == []  # and not placed again
    stale = get_gateway(app).engine.clock.now() - PENDING_GRACE_S - 1  # the sender never came back
    with storage.transaction() as conn:
        conn.execute("UPDATE exits SET updated_at = ?", (stale,))
    watch(app)  # looked up, found nowhere: gone
    watch(app)  # placed under a fresh client id
    assert fake_exchange.request_count("GET", "/fapi/v1/algoOrder") > lookups
    assert resting(fake_exchange) == [STOP]
    assert len(fake_exchange.futures.algo_orders) == 1  # one stop rests, however many passes looked
    assert fake_exchange.futures_position() == 0.04 and position(settings) == 0.04


def test_an_exit_the_exchange_refuses_to_hold_is_fired_by_the_gateway(
    tmp_path: Path, fake_exchange: FakeBinance, exchange_env: None
) -> None:
    settings, app = gateway(tmp_path, fake_exchange)
    fake_exchange.set_price("BTCUSDT", 28900)  # the market fell past the stop before it was placed
    send(app, contracts=0.04, stop_loss="29000")
    sql = "SELECT held_by, exchange_status FROM exits"
    wait_until(lambda: db_rows(settings.database, sql)[0]["held_by"] == "gateway", 15, "the stop handed over")
    assert fake_exchange.request_count("POST", "/fapi/v1/algoOrder") == 1  # refused once, not retried
    assert watch(app) == 1
    (row,) = exit_orders(settings)
    assert (row["reason"], row["filled"], row["status"]) == ("stop", 0.04, "filled")
    assert fake_exchange.futures_position() == 0 and position(settings) == 0.0


@pytest.mark.slow
def test_gunicorn_watcher_records_an_exchange_stop_once(tmp_path: Path, fake_exchange: FakeBinance) -> None:
    """Two workers, each with its watcher thread, and one stop that fires on the exchange."""
    fake_exchange.set_price("BTCUSDT", 30000)
    live = start_gateway(
        tmp_path, prices={PERP: 30000.0}, TVGW_BROKER="binance", TVGW_EXCHANGE_API_URL=fake_exchange.url,
        TVGW_EXIT_WATCH_INTERVAL_S="0.2", TVGW_BINANCE_API_KEY=DEFAULT_API_KEY,
        TVGW_BINANCE_SECRET=DEFAULT_SECRET,
    )  # fmt: skip
    try:
        assert "exits on perpetuals rest on the exchange" in live.log()
        answer = live.post(sample_alert(ticker="BTCUSDT.P", contracts=0.04, stop_loss="29000"))
        assert answer.status_code == 200 and answer.json()["status"] == "executed", answer.text
        rests(fake_exchange, STOP)
        fake_exchange.set_price("BTCUSDT", 28900)
        sql = "SELECT * FROM orders WHERE reason = 'stop'"
        wait_until(lambda: db_rows(live.database, sql), 30, "the stop's fill recorded", live.log)
        live.await_exit_watcher_passes(3)  # more passes of both workers' watchers
        rows = db_rows(live.database, sql)
        assert len(rows) == 1, [dict(r) for r in rows]  # booked once, though both workers watch
        assert rows[0]["filled"] == 0.04
        assert len(fake_exchange.futures.algo_orders) == 1  # placed once, by one of the two workers
        assert fake_exchange.futures_position() == 0 and position(live) == 0.0  # both books flat
        assert DEFAULT_SECRET not in live.log() and DEFAULT_API_KEY not in live.log()
    finally:
        live.stop()


@pytest.mark.slow
def test_gunicorn_books_a_perpetual_fill_that_comes_late_or_without_its_price(
    tmp_path: Path, fake_exchange: FakeBinance
) -> None:
    """Two workers and their order follower (issue 18): a perpetual entry acknowledged NEW with
    nothing filled is protected by nothing until it fills, then booked and its stop armed on
    what filled; a fill answered without its average (Binance's ACK-like answers) is booked at
    the exchange's price: cost / filled when the quote amount came, asked again when not."""
    fake_exchange.set_price("BTCUSDT", 30000)
    fake_exchange.set_price("ETHUSDT", 1800)
    eth = "ETH/USDT:USDT"
    live = start_gateway(
        tmp_path, prices={PERP: 30000.0, eth: 1800.0}, TVGW_BROKER="binance",
        TVGW_EXCHANGE_API_URL=fake_exchange.url, TVGW_EXIT_WATCH_INTERVAL_S="0.2",
        TVGW_ORDER_POLL_INTERVAL_S="0.2", TVGW_BINANCE_API_KEY=DEFAULT_API_KEY,
        TVGW_BINANCE_SECRET=DEFAULT_SECRET,
    )  # fmt: skip

    def booked(symbol: str) -> tuple[float, float]:
        rows = db_rows(live.database, "SELECT amount, avg_price FROM positions WHERE symbol = ?", (symbol,))
        return (float(rows[0]["amount"]), float(rows[0]["avg_price"])) if rows else (0.0, 0.0)

    try:
        fake_exchange.hold_futures_fills("BTCUSDT")
        answer = live.post(sample_alert(ticker="BTCUSDT.P", contracts=0.04, stop_loss="29000"))
        assert answer.status_code == 200 and answer.json()["status"] == "placed", answer.text
        cid = answer.json()["decision"]["order"]["client_order_id"]
        live.await_exit_watcher_passes(2)  # both workers looked at the market: nothing to protect
        assert resting(fake_exchange) == [] and booked(PERP) == (0.0, 0.0)
        assert fake_exchange.complete_fills() == 1
        rests(fake_exchange, STOP)  # armed on the 0.04 that filled, once
        sql = "SELECT status FROM orders WHERE client_order_id = ?"
        filled = lambda: db_rows(live.database, sql, (cid,))[0]["status"] == "filled"  # noqa: E731
        wait_until(filled, 15, "the late fill booked", live.log)
        assert booked(PERP) == (pytest.approx(0.04), pytest.approx(30000.0))
        (stop,) = db_rows(live.database, "SELECT * FROM exits WHERE status = 'open'")
        assert stop["entry_amount"] == pytest.approx(0.04)
        assert float(fake_exchange.futures_position()) == pytest.approx(0.04)

        for leaves_out, alert_id in (("average", "eth-1"), ("price", "eth-2")):
            fake_exchange.futures.answer_without = leaves_out
            answer = live.post(
                sample_alert(ticker="ETHUSDT.P", contracts=0.5, price=1800.0, order_id=alert_id)
            )
            assert answer.status_code == 200, answer.text
        fake_exchange.futures.answer_without = None
        sql = "SELECT COUNT(*) AS n FROM orders WHERE symbol = ? AND status = 'filled'"
        wait_until(lambda: db_rows(live.database, sql, (eth,))[0]["n"] == 2, 15, "both ETH fills", live.log)
        assert booked(eth) == (pytest.approx(1.0), pytest.approx(1800.0))
        assert float(fake_exchange.futures_position("ETHUSDT")) == pytest.approx(1.0)
        sent = [
            p["newClientOrderId"]
            for m, path, p in fake_exchange.requests
            if (m, path) == ("POST", "/fapi/v1/order")
        ]
        assert len(sent) == len(set(sent)) == 3  # nothing placed twice
    finally:
        live.stop()


def test_paper_book_honours_a_perpetuals_leverage(tmp_path: Path) -> None:
    """The paper book checks a perpetual's margin (notional / leverage) against its equity."""
    overrides = {
        "risk": {"max_position_fraction": 5.0, "risk_per_trade": 1.0, "max_portfolio_risk": 1.0},
    }
    settings = make_settings(tmp_path, overrides, TVGW_EXIT_WATCH_INTERVAL_S="0")
    seed_market(settings.database, {PERP: 30000.0})
    app = create_app(settings)
    at_1x = send(app, contracts=0.5, leverage=1, order_id="one")  # 15000 of notional, 10000 equity
    assert at_1x["status"] == "rejected" and "at 1x" in at_1x["decision"]["reason"], at_1x
    at_2x = send(app, contracts=0.5, leverage=2, order_id="two")
    assert at_2x["status"] == "executed", at_2x
    assert at_2x["decision"]["details"]["margin"] == {"leverage": 2, "margin_mode": None}
    assert position(settings) == pytest.approx(0.5)
