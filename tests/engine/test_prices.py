"""The alert's price is a claim: checked against the gateway's own market price, never used to
size, risk-check or fill. Through the whole intake path, on real SQLite files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from engine.brokers.base import OrderRequest
from engine.brokers.paper import PaperBroker
from engine.exceptions import InvalidOrderError
from storage import Storage
from tests.conftest import (
    EngineClock,
    db_rows,
    db_write,
    make_settings,
    market_app,
    sample_alert,
    seed_market,
)

TOKEN = "price-token"
REFERENCE = 30000.0
SLIP = 5 / 10_000


def rows(settings: Any, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    return db_rows(settings.database, sql, params)


def cash(settings: Any) -> float:
    found = rows(settings, "SELECT total FROM balances WHERE broker = 'paper'")
    return settings.paper.starting_balance if not found else float(found[0]["total"])


def equity(client: Any) -> float:
    return float(client.get("/api/positions", headers={"Authorization": f"Bearer {TOKEN}"}).json["equity"])


def post(client: Any, **fields: Any) -> Any:
    alert = sample_alert(**fields)
    for key in [k for k, v in fields.items() if v is None]:
        del alert[key]
    return client.post("/webhook", data=json.dumps(alert))


@pytest.fixture
def book(tmp_path: Path) -> tuple[Any, Any]:
    settings = make_settings(
        tmp_path, {"risk": {"max_position_fraction": 5.0, "max_leverage": 3.0}}, TVGW_API_TOKEN=TOKEN
    )
    return settings, market_app(settings).test_client()


def assert_refused_for_price(settings: Any, response: Any, code: str, where: str) -> dict[str, Any]:
    assert response.status_code == 422, response.json
    body = response.json
    assert body["status"] == "refused" and body["error"]["code"] == code and body["error"]["where"] == where
    (row,) = rows(settings, "SELECT * FROM alerts WHERE id = ?", (body["alert_id"],))
    assert (row["status"], row["http_status"], row["error_code"]) == ("refused", 422, code)
    return body


# --- the reviewer's examples -------------------------------------------------------------------


def test_buy_at_price_1_is_refused_naming_both_prices(book: tuple[Any, Any]) -> None:
    settings, client = book
    body = assert_refused_for_price(
        settings, post(client, action="buy", contracts=100, price=1), "price_out_of_band", "price"
    )
    message = body["error"]["message"]
    assert "price 1 " in message and "30000" in message and "TVGW_MAX_PRICE_DEVIATION" in message
    assert rows(settings, "SELECT * FROM orders") == []


def test_close_short_at_1e7_cannot_drain_cash(book: tuple[Any, Any]) -> None:
    settings, client = book
    assert post(client, action="sell", contracts=0.1, order_id="short").json["status"] == "executed"
    before = cash(settings)
    assert_refused_for_price(
        settings, post(client, action="close_short", price=1e7, order_id="x"), "price_out_of_band", "price"
    )
    assert cash(settings) == before
    closed = post(client, action="close_short", order_id="y").json  # at the market price: fine
    assert closed["decision"]["fill"]["average"] == pytest.approx(REFERENCE * (1 + SLIP))
    assert cash(settings) > 0


def test_huge_contracts_at_tiny_price_leaves_the_worker_sound(book: tuple[Any, Any]) -> None:
    settings, client = book
    assert_refused_for_price(
        settings, post(client, action="buy", contracts=1e305, price=1e-305), "price_out_of_band", "price"
    )
    huge = post(client, action="buy", contracts=1e305, order_id="huge").json
    # At the market price the risk limits cut it to what the account can carry.
    assert huge["status"] == "executed" and huge["decision"]["order"]["amount"] <= 5 * 10_000 / REFERENCE
    normal = post(client, action="buy", contracts=0.01, order_id="after")
    assert normal.status_code == 200 and normal.json["status"] == "executed"
    assert math.isfinite(equity(client)) and equity(client) == pytest.approx(10_000, rel=0.01)


def test_fill_uses_the_market_price_not_a_close_alert_price(book: tuple[Any, Any]) -> None:
    _, client = book
    post(client, action="buy", contracts=0.1, order_id="long")
    close_all = post(client, action="close_all", price=REFERENCE * 1.02, order_id="c").json
    assert close_all["decision"]["fill"]["average"] == pytest.approx(REFERENCE * (1 - SLIP))
    assert close_all["decision"]["details"]["price"] == {
        "reference": REFERENCE,
        "source": "candle store 1h close",
        "age_s": None,  # a bar's close: its source names its time
        "alert": REFERENCE * 1.02,
    }


# --- the band, at its edges --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "accepted"),
    [(30900.0, True), (29100.0, True), (30900.01, False), (29099.99, False), (30000.0, True)],
)
def test_band_edges(book: tuple[Any, Any], price: float, accepted: bool) -> None:
    settings, client = book
    response = post(client, action="buy", contracts=0.01, price=price)
    if accepted:
        assert response.status_code == 200 and response.json["status"] == "executed"
    else:
        assert_refused_for_price(settings, response, "price_out_of_band", "price")


def test_band_is_configurable(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, TVGW_MAX_PRICE_DEVIATION="0.10")
    client = market_app(settings).test_client()
    assert post(client, action="buy", contracts=0.01, price=32900.0).status_code == 200
    assert post(client, action="buy", contracts=0.01, price=33100.0, order_id="2").status_code == 422


def bar_at_one() -> dict[str, Any]:
    """A bar, fired just now, whose every price is 1 (far from any real market)."""
    prices = dict.fromkeys(("open", "high", "low", "close", "volume"), 1.0)
    return {"time": sample_alert()["timenow"], **prices}


def test_bar_close_is_checked_when_the_price_is_absent(book: tuple[Any, Any]) -> None:
    settings, client = book
    bar = bar_at_one()
    response = post(client, action="buy", contracts=0.01, price=None, **bar)
    assert_refused_for_price(settings, response, "price_out_of_band", "close")


@pytest.mark.parametrize("raw", ["Infinity", "-Infinity", "NaN", "1e999", "0", "-5"])
def test_non_finite_or_non_positive_price_is_a_400_naming_the_field(book: tuple[Any, Any], raw: str) -> None:
    _, client = book
    body = json.dumps(sample_alert()).replace('"price": 30000.0', f'"price": {raw}')
    response = client.post("/webhook", data=body)
    assert response.status_code == 400 and response.json["error"]["where"] == "price"


# --- no market price ---------------------------------------------------------------------------


def test_no_market_price_refuses_new_exposure_and_says_how(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    client = market_app(settings, prices={}).test_client()
    body = assert_refused_for_price(
        settings, post(client, action="buy", contracts=0.01), "no_market_price", "price"
    )
    assert "tvgw data fetch" in body["error"]["message"] and "TVGW_MARKET_DATA" in body["error"]["message"]


def test_a_stale_candle_is_no_reference(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    clock = EngineClock()
    seed_market(settings.database, {"BTC/USDT": REFERENCE}, at=clock.now() - 3 * 3600)
    client = market_app(settings, prices={}, clock=clock).test_client()
    answer = post(client, action="buy", contracts=0.01, timenow=clock.iso())
    assert answer.json["error"]["code"] == "no_market_price"


def test_the_first_alerts_own_bar_is_the_first_price_and_no_later_bar_moves_it(tmp_path: Path) -> None:
    # With no price at all, the first alert's current, coherent bar becomes the paper book's
    # first price (TradingView never resends the alert): said in the answer. From then on an
    # alert's bar is checked against the stored price like any other claim.
    settings = make_settings(tmp_path)
    client = market_app(settings, prices={}).test_client()
    first = post(client, action="buy", contracts=1, price=1.0, **bar_at_one())
    assert first.status_code == 200 and first.json["status"] == "executed", first.json
    assert first.json["decision"]["details"]["price"]["source"] == "candle store 1h close (an alert's bar)"
    later = {**bar_at_one(), **dict.fromkeys(("open", "high", "low", "close"), 2.0)}
    assert_refused_for_price(
        settings, post(client, action="buy", contracts=1, price=None, order_id="2", **later),
        "price_out_of_band", "close",
    )  # fmt: skip
    assert len(rows(settings, "SELECT * FROM orders")) == 1


def test_exit_without_market_price_fills_at_the_last_mark_never_the_alerts_price(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, TVGW_API_TOKEN=TOKEN)
    client = market_app(settings).test_client()
    assert post(client, action="sell", contracts=0.1, order_id="short").json["status"] == "executed"
    db_write(settings.database, "DELETE FROM candles")  # the market data is gone (or has gone stale)
    assert (
        post(client, action="sell", contracts=0.1, order_id="more").json["error"]["code"] == "no_market_price"
    )
    before = equity(client)
    exit_ = post(client, action="close_short", price=1e7, order_id="exit").json
    assert exit_["status"] == "executed"
    assert exit_["decision"]["fill"]["average"] == pytest.approx(REFERENCE * (1 + SLIP))
    assert "last mark" in exit_["decision"]["details"]["price"]["source"]
    after = equity(client)
    assert before - 0.1 * REFERENCE * 2 * SLIP - 5 <= after <= before  # fees and slippage only


# --- limits and precision ----------------------------------------------------------------------


def test_amount_is_rounded_down_to_the_step_and_minimums_refuse(book: tuple[Any, Any]) -> None:
    _, client = book
    odd = post(client, action="buy", contracts=0.0123456789, order_id="odd").json
    assert odd["decision"]["order"]["amount"] == 0.01234567
    tiny = post(client, action="buy", contracts=5e-9, order_id="tiny").json
    assert tiny["status"] == "rejected" and "below the market minimum" in tiny["decision"]["reason"]
    cheap = post(client, action="buy", contracts=0.00002, order_id="cheap").json  # 0.6 USDT
    assert cheap["status"] == "rejected" and "order value" in cheap["decision"]["reason"]


def test_per_market_limits_are_configurable(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        {
            "risk": {"max_position_fraction": 5.0, "max_leverage": 5.0},
            "paper": {"markets": {"BTC/USDT": {"max_amount": 0.1, "amount_step": 0.001}}},
        },
    )
    client = market_app(settings).test_client()
    big = post(client, action="buy", contracts=0.2).json
    assert big["status"] == "rejected" and "above the market maximum 0.1" in big["decision"]["reason"]
    stepped = post(client, action="buy", contracts=0.0129, order_id="s").json
    assert stepped["decision"]["order"]["amount"] == pytest.approx(0.012)


def test_the_paper_book_itself_refuses_absurd_orders(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    storage = Storage(settings.database)
    storage.migrate()
    broker = PaperBroker(storage, settings.paper)
    for amount, price in [(1e305, REFERENCE), (0.01, math.inf), (math.nan, REFERENCE), (1e-12, REFERENCE)]:
        with pytest.raises(InvalidOrderError):
            broker.execute(
                OrderRequest(client_order_id="c", symbol="BTC/USDT", side="buy", amount=amount, price=price)
            )
    assert broker.equity() == settings.paper.starting_balance  # nothing was left behind


# --- no sequence of accepted alerts breaks the book ---------------------------------------------


def test_no_sequence_of_alerts_makes_equity_non_finite_or_cash_run_away(book: tuple[Any, Any]) -> None:
    settings, client = book
    edge_high, edge_low = REFERENCE * 1.03, REFERENCE * 0.97
    script = [
        ("buy", 1e6, edge_low), ("close_all", None, edge_high), ("sell", 1e6, edge_high),
        ("close_short", None, edge_low), ("buy", 0.5, edge_low), ("reverse", None, edge_high),
        ("reverse", None, edge_low), ("sell", 1e300, edge_high), ("close_all", None, 1e-300),
        ("buy", 0.3, edge_low), ("sell", 0.3, edge_high), ("close_long", None, edge_high),
    ]  # fmt: skip
    starting = settings.paper.starting_balance
    for n, (action, contracts, price) in enumerate(script):
        response = post(client, action=action, contracts=contracts, price=price, order_id=f"seq-{n}")
        assert response.status_code in (200, 422), response.json
        fill = (response.json.get("decision") or {}).get("fill")
        if fill is not None:  # every fill is at the market price, whatever the alert claimed
            assert fill["average"] in (
                pytest.approx(REFERENCE * (1 + SLIP)),
                pytest.approx(REFERENCE * (1 - SLIP)),
            )
        value = equity(client)
        assert math.isfinite(value) and math.isfinite(cash(settings))
        assert cash(settings) >= -settings.risk.max_leverage * starting
        assert value <= starting  # buying and selling at one price can only cost fees


def test_workers_read_the_same_peak_and_day_start_equity(tmp_path: Path) -> None:
    """Drawdown and daily-loss limits read the equity snapshots from the file every time: a
    per-worker cache let one worker refuse for "daily loss" what the other filled."""
    from engine.engine import TradingEngine

    settings = make_settings(tmp_path)
    workers = []
    for _ in range(2):
        storage = Storage(settings.database)
        storage.migrate()
        workers.append((storage, TradingEngine(settings, storage, PaperBroker(storage, settings.paper))))
    (storage_a, first), (storage_b, second) = workers
    assert first.desk.equity_marks(storage_a, 10_000.0) == (10_000.0, 10_000.0)
    with storage_b.transaction() as conn:
        second.desk.note_equity(conn, 12_000.0)
    assert first.desk.equity_marks(storage_a, 10_000.0) == (12_000.0, 12_000.0)
    with storage_b.transaction() as conn:
        first.desk.note_equity(conn, 9_000.0)  # within EQUITY_TTL_S of the other worker's snapshot
    assert rows(settings, "SELECT COUNT(*) FROM equity_snapshots")[0][0] == 1
