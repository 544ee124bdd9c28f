"""Protective exits on the paper book, through the whole intake path: an entry carries its stop,
take-profit levels and trailing stop (from the alert, the ML signal or the strategy), and a
later bar that crosses one fills it through the engine, once, recorded with its reason."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine.alert import Alert
from engine.brokers.paper import PaperBroker
from engine.decision import Receipt
from engine.engine import TradingEngine
from storage import Storage
from storage.candles import upsert_candles
from tests.conftest import (
    EngineClock,
    db_rows,
    make_settings,
    sample_alert,
    seed_market,
    start_gateway,
    store_target,
    wait_until,
)
from webhook import create_app, get_gateway

HOUR_MS = 3_600_000

#: The time the in-process tests' gateway and engine go by (never the machine's): the current
#: hour's bar is the one opened at CLOCK.hour_ms(), the bar before it holds the entries.
CLOCK = EngineClock()


@pytest.fixture
def book(tmp_path: Path) -> tuple[Any, Any]:
    """A paper book whose newest stored bar is the previous hour's (the entries fill in it),
    so the current hour's bar is a *later* bar that the exits watch."""
    return gateway(tmp_path)


def gateway(tmp_path: Path, **strategy: Any) -> tuple[Any, Any]:
    overrides: dict[str, Any] = {"risk": {"max_position_fraction": 5.0, "max_leverage": 5.0}}
    if strategy:
        overrides["strategies"] = {"default": {"passphrase": "test-secret", **strategy}}
    # The watcher thread is off: these tests run the check themselves, at the moments they choose.
    settings = make_settings(tmp_path, overrides, TVGW_EXIT_WATCH_INTERVAL_S="0")
    seed_market(settings.database, at=CLOCK.t - 3600)
    app = create_app(settings, clock=CLOCK)
    return settings, app


def send(app: Any, **fields: Any) -> dict[str, Any]:
    alert = sample_alert(**{"timenow": CLOCK.iso(), **fields})
    response = app.test_client().post("/webhook", data=json.dumps(alert))
    assert response.status_code == 200, response.json
    return dict(response.json)


def bar(settings: Any, high: float, low: float, open_: float = 30_000.0, *, ms: int | None = None) -> None:
    """A bar (the current hour's unless ``ms`` says which), as the market-data top-up or `tvgw
    data fetch` would store it (stored again as the bar grows)."""
    storage = Storage(settings.database)
    try:
        row = [CLOCK.hour_ms() if ms is None else ms, open_, high, low, (high + low) / 2, 1.0]
        upsert_candles(storage, "BTC/USDT", "1h", [row], "test")
    finally:
        storage.close()


def watch(app: Any) -> int:
    """What each worker's exit watcher runs."""
    return int(get_gateway(app).engine.watch_exits())


def position(settings: Any) -> float:
    rows = db_rows(settings.database, "SELECT amount FROM positions WHERE symbol = 'BTC/USDT'")
    return 0.0 if not rows else float(rows[0]["amount"])


def exits(settings: Any) -> dict[str, tuple[str, float]]:
    rows = db_rows(settings.database, "SELECT kind, status, trigger FROM exits ORDER BY id")
    return {r["kind"]: (r["status"], r["trigger"]) for r in rows}


def exit_orders(settings: Any) -> list[tuple[str, str, float, float]]:
    rows = db_rows(
        settings.database,
        "SELECT reason, side, filled, average FROM orders WHERE reason IS NOT NULL ORDER BY id",
    )
    return [(r["reason"], r["side"], r["filled"], r["average"]) for r in rows]


def test_entry_carries_a_stop_and_two_targets_from_the_alert(book: tuple[Any, Any]) -> None:
    settings, app = book
    body = send(app, contracts=0.02, stop_loss="2%", take_profit="1%@50, 2%@50")
    planned = body["decision"]["details"]["exits"]
    assert planned["stop_loss"] == pytest.approx(29_400.0)
    assert planned["take_profit"] == [
        {"price": pytest.approx(30_300.0), "share": 0.5},
        {"price": pytest.approx(30_600.0), "share": 0.5},
    ]
    assert planned["source"] == {"stop_loss": "alert", "take_profit": "alert"}
    assert exits(settings) == {
        "stop": ("open", pytest.approx(29_400.0)),
        "take_profit_1": ("open", pytest.approx(30_300.0)),
        "take_profit_2": ("open", pytest.approx(30_600.0)),
    }
    assert watch(app) == 0  # no bar after the entry's yet: nothing acts


def test_first_target_closes_half_and_moves_the_stop_to_break_even_then_the_stop_closes(
    tmp_path: Path,
) -> None:
    settings, app = gateway(tmp_path, break_even=True)
    send(app, contracts=0.02, stop_loss="2%", take_profit="1%@50, 2%@50")
    entry = db_rows(settings.database, "SELECT avg_price FROM positions")[0]["avg_price"]
    bar(settings, high=30_350.0, low=entry + 20)
    assert watch(app) == 1
    assert position(settings) == pytest.approx(0.01)
    reason, side, filled, average = exit_orders(settings)[0]
    # Filled at the target with the paper book's slippage (5 bps against the trader).
    assert (reason, side, filled) == ("take_profit_1", "sell", pytest.approx(0.01))
    assert average == pytest.approx(30_300.0 * (1 - 5 / 10_000))
    assert exits(settings)["stop"] == ("open", pytest.approx(entry))  # break-even
    assert watch(app) == 0  # the same bar again: nothing twice
    bar(settings, high=30_350.0, low=entry + 10)  # grows, still above the moved stop
    assert watch(app) == 0

    bar(settings, high=30_350.0, low=entry - 50)  # the bar grows down through the entry
    assert watch(app) == 1
    assert position(settings) == pytest.approx(0.0)
    assert [o[0] for o in exit_orders(settings)] == ["take_profit_1", "stop"]
    assert exits(settings)["take_profit_2"][0] == "canceled"
    assert exits(settings)["stop"][0] == "filled"


def test_without_break_even_the_stop_stays(book: tuple[Any, Any]) -> None:
    settings, app = book
    send(app, contracts=0.02, stop_loss="2%", take_profit="1%@50, 2%@50")
    bar(settings, high=30_350.0, low=29_950.0)
    watch(app)
    assert exits(settings)["stop"] == ("open", pytest.approx(29_400.0))


def test_a_trailing_stop_follows_the_price_then_fires(book: tuple[Any, Any]) -> None:
    settings, app = book
    send(app, contracts=0.01, trailing_stop=300)
    first = exits(settings)["trailing"][1]
    assert first == pytest.approx(30_000.0 * (1 + 5 / 10_000) - 300)  # below the fill
    bar(settings, high=31_000.0, low=30_100.0)
    assert watch(app) == 0
    assert exits(settings)["trailing"] == ("open", pytest.approx(30_700.0))
    # The same bar again: its low (30 100) came before the high that moved the stop, so it
    # must not fire the moved stop.
    assert watch(app) == 0
    bar(settings, high=31_000.0, low=30_050.0)  # the bar's new low: back down through it
    assert watch(app) == 1
    assert position(settings) == pytest.approx(0.0)
    assert exit_orders(settings)[0][:3] == ("trailing", "sell", pytest.approx(0.01))
    assert exit_orders(settings)[0][3] == pytest.approx(30_700.0 * (1 - 5 / 10_000))


def test_a_short_entry_has_its_exits_mirrored(book: tuple[Any, Any]) -> None:
    settings, app = book
    body = send(app, action="sell", contracts=0.01, stop_loss="1%", take_profit="500")
    planned = body["decision"]["details"]["exits"]
    assert planned["stop_loss"] == pytest.approx(30_300.0)
    assert planned["take_profit"] == [{"price": 500.0, "share": 1.0}]
    bar(settings, high=30_310.0, low=29_900.0)
    assert watch(app) == 1
    assert position(settings) == pytest.approx(0.0)
    assert exit_orders(settings)[0][:2] == ("stop", "buy")


def test_a_shorts_trailing_stop_follows_the_bars_low_then_fires(book: tuple[Any, Any]) -> None:
    settings, app = book
    send(app, action="sell", contracts=0.01, trailing_stop=300)
    assert exits(settings)["trailing"][1] == pytest.approx(
        30_000.0 * (1 - 5 / 10_000) + 300
    )  # above the fill
    bar(settings, high=30_200.0, low=29_000.0)  # high and low far apart: the low is the short's best
    assert watch(app) == 0
    assert exits(settings)["trailing"] == ("open", pytest.approx(29_300.0))
    # The same bar again: its high (30 200) came before the low that moved the stop.
    assert watch(app) == 0
    bar(settings, high=30_250.0, low=29_000.0)  # the bar's new high: back up through it
    assert watch(app) == 1
    assert position(settings) == pytest.approx(0.0)
    assert exit_orders(settings)[0][:3] == ("trailing", "buy", pytest.approx(0.01))
    assert exit_orders(settings)[0][3] == pytest.approx(29_300.0 * (1 + 5 / 10_000))


@pytest.mark.parametrize(
    ("side", "exit_", "kind", "missed", "touched"),
    [
        ("buy", {"stop_loss": "29500"}, "stop", (30_100.0, 29_500.01), (30_100.0, 29_500.0)),
        ("sell", {"stop_loss": "30500"}, "stop", (30_499.99, 29_900.0), (30_500.0, 29_900.0)),
        ("buy", {"take_profit": "30500"}, "take_profit_1", (30_499.99, 29_900.0), (30_500.0, 29_900.0)),
        ("sell", {"take_profit": "29500"}, "take_profit_1", (30_100.0, 29_500.01), (30_100.0, 29_500.0)),
    ],
)
def test_an_exit_whose_trigger_the_bar_just_touches_fills_at_the_trigger(
    book: tuple[Any, Any], side: str, exit_: dict[str, str], kind: str,
    missed: tuple[float, float], touched: tuple[float, float],
) -> None:  # fmt: skip
    """A bar whose high or low equals the trigger crosses it (a cent short does not), here and
    in the backtest's replay, which fills by the same rule (engine.exits.check_level)."""
    settings, app = book
    send(app, action=side, contracts=0.01, **exit_)
    trigger = float(next(iter(exit_.values())))
    bar(settings, high=missed[0], low=missed[1])
    assert watch(app) == 0 and exits(settings)[kind][0] == "open"
    bar(settings, high=touched[0], low=touched[1])
    assert watch(app) == 1 and position(settings) == 0.0
    slip = 5 / 10_000 if side == "sell" else -5 / 10_000  # the paper slippage, against the trader
    assert exit_orders(settings)[0][0] == kind
    assert exit_orders(settings)[0][3] == pytest.approx(trigger * (1 + slip))


def test_a_shorts_first_target_moves_its_stop_down_to_break_even(tmp_path: Path) -> None:
    settings, app = gateway(tmp_path, break_even=True)
    send(app, action="sell", contracts=0.02, stop_loss="2%", take_profit="1%@50, 2%@50")
    entry = db_rows(settings.database, "SELECT avg_price FROM positions")[0]["avg_price"]
    assert exits(settings)["stop"][1] > entry
    bar(settings, high=entry - 20, low=29_650.0)  # the first target (1% under), not the second
    assert watch(app) == 1
    assert position(settings) == pytest.approx(-0.01)
    assert exit_orders(settings)[0][:3] == ("take_profit_1", "buy", pytest.approx(0.01))
    assert exits(settings)["stop"] == ("open", pytest.approx(entry))  # down to break-even
    bar(settings, high=entry - 10, low=29_650.0)  # grows, still under the moved stop
    assert watch(app) == 0
    bar(settings, high=entry + 50, low=29_650.0)  # the bar grows up through the entry
    assert watch(app) == 1
    assert position(settings) == pytest.approx(0.0)
    assert [o[0] for o in exit_orders(settings)] == ["take_profit_1", "stop"]
    assert exits(settings)["take_profit_2"][0] == "canceled"


def test_a_gap_through_the_stop_fills_at_the_open(book: tuple[Any, Any]) -> None:
    settings, app = book
    send(app, contracts=0.01, stop_loss="29500")
    bar(settings, open_=29_000.0, high=29_100.0, low=28_900.0)
    watch(app)
    assert exit_orders(settings)[0][3] == pytest.approx(29_000.0 * (1 - 5 / 10_000))


def test_the_alerts_own_bar_fills_an_exit_before_the_alert_is_decided(book: tuple[Any, Any]) -> None:
    settings, app = book
    send(app, contracts=0.01, stop_loss="2%", order_id="entry")
    now = CLOCK.hour_ms()
    body = send(
        app, action="buy", contracts=0.01, order_id="next", time=now,
        open=29_500.0, high=29_600.0, low=29_300.0, close=29_400.0, price=29_400.0,
    )  # fmt: skip
    assert body["decision"]["details"]["exit_fills"][0]["exit"] == "stop"
    assert [o[0] for o in exit_orders(settings)] == ["stop"]
    assert position(settings) == pytest.approx(0.01)  # stopped out, then the new buy


def test_closing_the_position_cancels_its_exits(book: tuple[Any, Any]) -> None:
    settings, app = book
    send(app, contracts=0.01, stop_loss="2%", take_profit="2%", order_id="1")
    send(app, action="close_all", order_id="2")
    assert {status for status, _ in exits(settings).values()} == {"canceled"}
    bar(settings, high=31_000.0, low=29_000.0)
    assert watch(app) == 0 and exit_orders(settings) == []


def test_a_reversal_cancels_the_open_exits_and_arms_its_own(book: tuple[Any, Any]) -> None:
    settings, app = book
    send(app, contracts=0.01, stop_loss="2%", take_profit="2%", order_id="1")
    send(app, action="reverse", order_id="2")
    assert position(settings) == pytest.approx(-0.01)
    rows = db_rows(settings.database, "SELECT kind, status, reason FROM exits ORDER BY id")
    assert [(r["kind"], r["status"]) for r in rows] == [("stop", "canceled"), ("take_profit_1", "canceled")]
    assert "reversed" in rows[0]["reason"]
    bar(settings, high=30_700.0, low=29_300.0)  # would cross both old exits
    assert watch(app) == 0 and position(settings) == pytest.approx(-0.01)


def test_a_partial_close_by_alert_keeps_the_exits_on_what_is_left(book: tuple[Any, Any]) -> None:
    settings, app = book
    send(app, contracts=0.02, stop_loss="2%", order_id="1")
    send(app, action="sell", contracts=0.005, order_id="2")
    assert exits(settings)["stop"][0] == "open"
    bar(settings, high=30_000.0, low=29_000.0)
    assert watch(app) == 1
    assert exit_orders(settings)[0][2] == pytest.approx(0.015)  # the whole remainder
    assert position(settings) == pytest.approx(0.0)


def test_strategy_settings_give_exits_the_alert_did_not(tmp_path: Path) -> None:
    _, app = gateway(tmp_path, stop_loss="3%", take_profit="4%", trailing_stop="1%")
    body = send(app, contracts=0.01, stop_loss="1%")
    planned = body["decision"]["details"]["exits"]
    assert planned["source"] == {"stop_loss": "alert", "take_profit": "strategy", "trailing_stop": "strategy"}
    assert planned["stop_loss"] == pytest.approx(29_700.0)
    assert planned["take_profit"][0]["price"] == pytest.approx(31_200.0)
    assert planned["trailing_stop"] == pytest.approx(300.0)


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"stop_loss": "31000"}, "must be below the buy entry"),
        ({"take_profit": "29000"}, "must be above the buy entry"),
        ({"stop_loss": "1.5atr"}, "needs the market's ATR"),
    ],
)
def test_an_exit_on_the_wrong_side_is_refused_with_the_reason(
    book: tuple[Any, Any], fields: dict[str, Any], says: str
) -> None:
    settings, app = book
    body = send(app, contracts=0.01, **fields)
    assert body["status"] == "rejected" and says in body["decision"]["reason"]
    assert position(settings) == 0.0 and exits(settings) == {}


@pytest.mark.parametrize(
    ("field", "value"),
    [("stop_loss", "2 pct"), ("take_profit", "1%@70, 2%@70"), ("trailing_stop", "-1%"), ("stop_loss", True)],
)
def test_a_misspelt_exit_is_a_clear_400_and_recorded(book: tuple[Any, Any], field: str, value: Any) -> None:
    settings, app = book
    response = app.test_client().post(
        "/webhook", data=json.dumps(sample_alert(timenow=CLOCK.iso(), **{field: value}))
    )
    assert response.status_code == 400
    assert field in json.dumps(response.json)
    assert db_rows(settings.database, "SELECT status FROM alerts")[-1]["status"] != "executed"
    assert position(settings) == 0.0


def test_an_atr_stop_is_measured_on_the_stored_bars(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        {"risk": {"max_position_fraction": 5.0, "max_leverage": 5.0}},
        TVGW_EXIT_WATCH_INTERVAL_S="0",
    )
    storage = Storage(settings.database)
    storage.migrate()
    start = CLOCK.hour_ms() - 80 * HOUR_MS
    rows = [[start + i * HOUR_MS, 30_000.0, 30_100.0, 29_900.0, 30_000.0, 1.0] for i in range(80)]
    upsert_candles(storage, "BTC/USDT", "1h", rows, "test")
    storage.close()
    app = create_app(settings, clock=CLOCK)
    body = send(app, contracts=0.01, stop_loss="1.5atr")
    assert body["decision"]["details"]["exits"]["stop_loss"] == pytest.approx(30_000.0 - 1.5 * 200.0)


@pytest.mark.slow
def test_two_workers_fill_each_exit_once(tmp_path: Path) -> None:
    """A real 2-worker gunicorn whose exit watchers both run every 50 ms on the same bars. It
    runs on the machine's clock (another process): the bars are the machine's hours."""
    database = store_target(tmp_path)
    seed_market(database, at=time.time() - 3600)
    gateway_ = start_gateway(tmp_path, prices=None, TVGW_EXIT_WATCH_INTERVAL_S="0.05")
    try:
        entry = gateway_.post(sample_alert(contracts=0.02, stop_loss="2%", take_profit="1%@50, 2%@50"))
        assert entry.status_code == 200 and entry.json()["status"] == "executed", entry.text
        settings = SimpleNamespace(database=database)
        hour = int(time.time() // 3600 * 3600 * 1000)  # the gateway's own clock: the machine's
        bar(settings, high=30_350.0, low=30_100.0, ms=hour)
        wait_until(lambda: position(settings) == pytest.approx(0.01), 30, "the entry was not filled")
        bar(settings, high=30_350.0, low=29_000.0, ms=hour)
        wait_until(lambda: position(settings) == 0.0, 30, "the exit did not close the position")
        gateway_.await_exit_watcher_passes(5)  # more passes of both watchers on the same bar
        assert [o[0] for o in exit_orders(settings)] == ["take_profit_1", "stop"]
        assert position(settings) == 0.0
    finally:
        gateway_.stop()


@dataclass(frozen=True)
class ModelSignal:
    """A signal of the shape the ML layer hands the engine (``engine.decision.SignalPort``), as
    a backtest would: the model saw a close of 30 000 and set its ATR stop and target there."""

    direction_probability: float | None = 0.7
    combined_probability: float | None = 0.7
    confidence: float = 0.9
    kelly_fraction: float = 0.1
    stop_loss: float | None = 29_100.0  # 3% below its close
    take_profit: float | None = 31_500.0  # 5% above
    entry_price: float | None = 30_000.0
    leverage: float = 1.0

    def technical_score(self, side: str) -> float | None:
        return None


def decide(tmp_path: Path, signal: ModelSignal | None, **fields: Any) -> dict[str, Any]:
    """One alert through the engine's door with ``signal``; the answer's exits."""
    settings = make_settings(
        tmp_path,
        {
            "risk": {"max_position_fraction": 5.0, "max_leverage": 5.0},
            "strategies": {"default": {"passphrase": "test-secret", "stop_loss": "4%", "take_profit": "8%"}},
        },
        TVGW_EXIT_WATCH_INTERVAL_S="0",
    )
    storage = Storage(settings.database)
    storage.migrate()
    upsert_candles(storage, "BTC/USDT", "1h", [[CLOCK.hour_ms(), 30_000, 30_000, 30_000, 30_000, 1]], "t")
    engine = TradingEngine(settings, storage, PaperBroker(storage, settings.paper), clock=CLOCK)
    fields = {"contracts": 0.01, "timenow": CLOCK.iso(), **fields}
    alert = Alert.model_validate({**sample_alert(**fields), "strategy_id": "default"})
    decision = engine.process_signal(alert, signal, receipt=Receipt(received_at=CLOCK.now()))
    storage.close()
    assert decision.status == "executed", decision.reason
    return dict(decision.details["exits"])


def test_the_ml_signal_gives_exits_before_the_strategy(tmp_path: Path) -> None:
    planned = decide(tmp_path, ModelSignal())
    assert planned["source"] == {"stop_loss": "ml", "take_profit": "ml"}
    assert planned["stop_loss"] == pytest.approx(29_100.0)
    assert planned["take_profit"] == [{"price": pytest.approx(31_500.0), "share": 1.0}]


def test_the_alert_gives_exits_before_the_ml_signal(tmp_path: Path) -> None:
    planned = decide(tmp_path, ModelSignal(), stop_loss="1%")
    assert planned["source"] == {"stop_loss": "alert", "take_profit": "ml"}
    assert planned["stop_loss"] == pytest.approx(29_700.0)


def test_a_signal_that_disagrees_gives_no_exits_and_the_strategy_does(tmp_path: Path) -> None:
    planned = decide(tmp_path, ModelSignal(direction_probability=0.3, combined_probability=0.3))
    assert planned["source"] == {"stop_loss": "strategy", "take_profit": "strategy"}
    assert planned["stop_loss"] == pytest.approx(28_800.0)


@pytest.mark.parametrize(
    "spelling",
    [
        {"action": "close 25%"},
        {"action": "close_all", "contracts": "25%"},
        {"action": "close", "close_percent": 25},
    ],
)
def test_a_partial_close_by_percent(book: tuple[Any, Any], spelling: dict[str, Any]) -> None:
    """25% closes a quarter and keeps three quarters (at 50% the two would agree)."""
    settings, app = book
    send(app, contracts=0.02, stop_loss="2%", order_id="1")
    body = send(app, order_id="2", **spelling)
    assert body["status"] == "executed"
    assert body["decision"]["order"]["amount"] == pytest.approx(0.005)
    assert position(settings) == pytest.approx(0.015)
    assert exits(settings)["stop"][0] == "open"  # still guarding what is left
    assert send(app, action="close 100%", order_id="3")["status"] == "executed"
    assert position(settings) == 0.0 and exits(settings)["stop"][0] == "canceled"


def test_a_close_percent_on_the_side_not_held_changes_nothing(book: tuple[Any, Any]) -> None:
    settings, app = book
    send(app, contracts=0.02, order_id="1")
    assert send(app, action="close_short 50%", order_id="2")["status"] == "annotated"
    assert position(settings) == pytest.approx(0.02)


@pytest.mark.parametrize(
    "fields",
    [
        {"action": "buy", "close_percent": 50},
        {"action": "close 50%", "contracts": "40%"},
        {"action": "close", "close_percent": 150},
    ],
)
def test_a_wrong_close_percent_is_a_clear_400(book: tuple[Any, Any], fields: dict[str, Any]) -> None:
    settings, app = book
    response = app.test_client().post(
        "/webhook", data=json.dumps(sample_alert(timenow=CLOCK.iso(), **fields))
    )
    assert response.status_code == 400, response.json
    assert "percent" in json.dumps(response.json)
    assert db_rows(settings.database, "SELECT status FROM alerts")[-1]["status"] != "executed"


def test_the_pyramiding_limit_refuses_the_extra_entry(tmp_path: Path) -> None:
    settings, app = gateway(tmp_path, pyramiding=2)
    assert send(app, contracts=0.01, order_id="1")["status"] == "executed"
    assert send(app, contracts=0.01, order_id="2")["status"] == "executed"
    third = send(app, contracts=0.01, order_id="3")
    assert third["status"] == "rejected" and "pyramiding limit" in third["decision"]["reason"]
    assert position(settings) == pytest.approx(0.02)
    send(app, action="sell", contracts=0.01, order_id="4")  # a reduce is no entry
    assert send(app, contracts=0.01, order_id="5")["status"] == "rejected"
    send(app, action="close_all", order_id="6")
    assert send(app, contracts=0.01, order_id="7")["status"] == "executed"  # a new position


@pytest.mark.parametrize("undefined", ["NaN%", "NaN", "nan atr", "", None])
def test_an_undefined_pine_series_is_no_exit(book: tuple[Any, Any], undefined: Any) -> None:
    """The bundled strategy sends its ATR stop as a percent; before its ATR exists it prints NaN."""
    settings, app = book
    body = send(app, contracts=0.01, stop_loss=undefined, take_profit=undefined)
    assert body["status"] == "executed" and "exits" not in body["decision"].get("details", {})
    assert exits(settings) == {}
