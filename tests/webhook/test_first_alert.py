"""A newcomer's first alerts: the offline quickstart's synthetic market, anchored at a price the
user gives and named SYNTHETIC in every refusal and answer, never mixed with a real bar; and a
fresh paper gateway that knows no price, whose first alert carrying its own bar is decided on
that bar instead of being lost. Through the whole intake path, on real SQLite files."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from ml_integration.training import store_synthetic_history
from storage import Storage
from storage.candles import candle_sources, is_synthetic_market, newest_candle
from tests.conftest import db_rows, make_settings, market_app, sample_alert

ANCHOR = 91_234.5
TOKEN = "first-alert-token"


def post(client: Any, **fields: Any) -> Any:
    alert = sample_alert(**fields)
    for key in [k for k, v in fields.items() if v is None]:
        del alert[key]
    return client.post("/webhook", data=json.dumps(alert))


def bar(close: float, *, hours_ago: float = 0.0) -> dict[str, Any]:
    """The bar a Pine alert carries: the 1h bar open ``hours_ago`` hours back, around ``close``."""
    opened = (time.time() - hours_ago * 3600) // 3600 * 3600
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(opened))
    return {"time": stamp, "open": close * 0.999, "high": close * 1.002, "low": close * 0.997, "close": close,
            "volume": 3.0}  # fmt: skip


def synthetic_app(tmp_path: Path, price: float = ANCHOR, **env: str) -> tuple[Any, Any]:
    """A gateway over the offline quickstart's candle store: a synthetic BTC/USDT 1h history up to
    now, ending at ``price``."""
    settings = make_settings(tmp_path, TVGW_API_TOKEN=TOKEN, **env)
    storage = Storage(settings.database)
    storage.migrate()
    assert store_synthetic_history(storage, "BTC/USDT", "1h", bars=300, seed=7, price=price)
    storage.close()
    return settings, market_app(settings, prices={}).test_client()


def alert_bars(settings: Any) -> list[sqlite3.Row]:
    return db_rows(settings.database, "SELECT * FROM candles WHERE source = 'alert'")


# --- the synthetic market ------------------------------------------------------------------------


def test_the_synthetic_history_ends_at_the_price_given(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "s.sqlite")
    storage.migrate()
    store_synthetic_history(storage, "BTC/USDT", "1h", bars=300, seed=7, price=ANCHOR)
    newest = newest_candle(storage, "BTC/USDT", "1h")
    assert newest is not None and newest[4] == pytest.approx(ANCHOR)
    assert newest[0] / 1000 > time.time() - 3600  # up to now
    # Extended later without a price, it keeps its level (the full model's training does this).
    store_synthetic_history(storage, "BTC/USDT", "1h", bars=300, seed=7)
    assert newest_candle(storage, "BTC/USDT", "1h")[4] == pytest.approx(ANCHOR)  # type: ignore[index]


def test_a_real_alert_at_the_anchor_executes_and_says_its_price_is_synthetic(tmp_path: Path) -> None:
    settings, client = synthetic_app(tmp_path)
    answer = post(client, price=ANCHOR, contracts=0.001, **bar(ANCHOR)).json
    assert answer["status"] == "executed", answer
    assert answer["decision"]["fill"]["average"] == pytest.approx(ANCHOR * (1 + 5 / 10_000))
    assert answer["decision"]["details"]["price"]["source"] == "candle store 1h close, SYNTHETIC"
    assert "SYNTHETIC" in answer["ml_analysis"]["market"]
    # The real bar is not written into the generated history: no mixture to mark the book at.
    assert alert_bars(settings) == []
    assert candle_sources(Storage(settings.database), "BTC/USDT", "1h") == {"synthetic"}


def test_a_refusal_against_a_synthetic_price_says_so_and_how_to_move_it(tmp_path: Path) -> None:
    settings, client = synthetic_app(tmp_path, price=141_000.0)
    answer = post(client, price=ANCHOR, contracts=0.001, **bar(ANCHOR))
    assert answer.status_code == 422 and answer.json["error"]["code"] == "price_out_of_band"
    message = answer.json["error"]["message"]
    assert "SYNTHETIC" in message and "--price" in message and "141000" in message
    assert alert_bars(settings) == []


def test_a_stale_synthetic_market_refuses_saying_synthetic_and_keeps_the_bar_out(tmp_path: Path) -> None:
    settings, client = synthetic_app(tmp_path)
    conn = sqlite3.connect(settings.database)
    conn.execute("UPDATE candles SET ts_ms = ts_ms - 6 * 3600 * 1000")  # the history ended 6 h ago
    conn.commit()
    conn.close()
    answer = post(client, price=ANCHOR, contracts=0.001, **bar(ANCHOR))
    assert answer.status_code == 422 and answer.json["error"]["code"] == "no_market_price"
    assert "SYNTHETIC" in answer.json["error"]["message"]
    assert alert_bars(settings) == []  # not even as the first price: it would mix


def test_a_real_bar_on_another_timeframe_is_not_mixed_in_either(tmp_path: Path) -> None:
    settings, client = synthetic_app(tmp_path)
    answer = post(client, interval="15", price=ANCHOR, contracts=0.001, **bar(ANCHOR)).json
    assert answer["status"] == "executed" and "SYNTHETIC" in answer["decision"]["details"]["price"]["source"]
    assert alert_bars(settings) == []


def test_synthetic_positions_are_marked_in_the_api(tmp_path: Path) -> None:
    _, client = synthetic_app(tmp_path)
    assert post(client, price=ANCHOR, contracts=0.001).json["status"] == "executed"
    book = client.get("/api/positions", headers={"Authorization": f"Bearer {TOKEN}"}).json
    assert [p["synthetic"] for p in book["positions"]] == [True]


# --- a fresh paper gateway with no price at all -------------------------------------------------------


def test_the_first_alert_with_its_bar_is_decided_on_that_bar(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    client = market_app(settings, prices={}).test_client()
    answer = post(client, price=ANCHOR, contracts=0.001, **bar(ANCHOR)).json
    assert answer["status"] == "executed", answer
    price = answer["decision"]["details"]["price"]
    assert (price["reference"], price["source"], price["alert"]) == (
        ANCHOR, "candle store 1h close (an alert's bar)", ANCHOR,
    )  # fmt: skip
    assert len(alert_bars(settings)) == 1
    assert len(db_rows(settings.database, "SELECT * FROM alerts")) == 1  # decided once, recorded once
    assert len(db_rows(settings.database, "SELECT * FROM orders")) == 1


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"hours_ago": 3}, "a bar three hours old is no current price"),
        ({"low": ANCHOR * 1.01}, "a low above the close is no bar"),
        ({"high": ANCHOR * 0.99}, "a high below the close is no bar"),
    ],
)
def test_a_stale_or_incoherent_bar_is_no_first_price(
    tmp_path: Path, change: dict[str, Any], why: str
) -> None:
    settings = make_settings(tmp_path)
    client = market_app(settings, prices={}).test_client()
    fields = bar(ANCHOR, hours_ago=change.pop("hours_ago", 0.0))
    answer = post(client, price=ANCHOR, contracts=0.001, **{**fields, **change})
    assert answer.status_code == 422 and answer.json["error"]["code"] == "no_market_price", why
    assert db_rows(settings.database, "SELECT * FROM orders") == []


def test_an_alert_price_far_from_its_own_bar_is_refused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    client = market_app(settings, prices={}).test_client()
    answer = post(client, price=ANCHOR * 1.5, contracts=0.001, **bar(ANCHOR))
    assert answer.status_code == 422 and answer.json["error"]["code"] == "price_out_of_band"
    assert db_rows(settings.database, "SELECT * FROM orders") == []


def test_an_exchange_gateway_never_takes_an_alerts_bar_as_its_price(
    tmp_path: Path, fake_exchange: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On an exchange its own ticker is the price: with the ticker (and its candles) failing, the
    # alert's bar does not stand in for it.
    from tests.fake_exchange import DEFAULT_API_KEY, DEFAULT_SECRET

    monkeypatch.setenv("TVGW_BINANCE_API_KEY", DEFAULT_API_KEY)
    monkeypatch.setenv("TVGW_BINANCE_SECRET", DEFAULT_SECRET)
    settings = make_settings(
        tmp_path, TVGW_BROKER="binance", TVGW_EXCHANGE_API_URL=fake_exchange.url,
        TVGW_EXCHANGE_TIMEOUT_MS="600",
    )  # fmt: skip
    client = market_app(settings, prices={}).test_client()
    for endpoint in ("GET /api/v3/ticker/price", "GET /api/v3/ticker/24hr", "GET /api/v3/klines"):
        fake_exchange.fail_next(endpoint, "500", times=100)
    answer = post(client, price=ANCHOR, contracts=0.001, **bar(ANCHOR))
    assert answer.status_code == 422 and answer.json["error"]["code"] == "no_market_price", answer.json
    assert alert_bars(settings) == [] or db_rows(settings.database, "SELECT * FROM orders") == []


def test_the_market_is_not_synthetic_once_real_candles_replaced_it(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "s.sqlite")
    storage.migrate()
    store_synthetic_history(storage, "BTC/USDT", "1h", bars=50, seed=7, price=ANCHOR)
    assert is_synthetic_market(storage, "BTC/USDT")
    # tvgw train --synthetic never writes into a market that has real candles, on any timeframe
    from storage.candles import delete_synthetic, upsert_candles

    delete_synthetic(storage, "BTC/USDT")
    upsert_candles(storage, "BTC/USDT", "4h", [[0, 1.0, 1.0, 1.0, 1.0, 1.0]], "ccxt:binance")
    assert not store_synthetic_history(storage, "BTC/USDT", "1h", bars=50, seed=7)
    assert not is_synthetic_market(storage, "BTC/USDT")


def test_the_model_never_sees_a_real_bar_in_a_synthetic_market(tmp_path: Path) -> None:
    """The alert's bar is kept out of the model's candle window too, not only out of the store:
    a real close in a generated window would be the same mix at the model's input."""
    _, client = synthetic_app(tmp_path, TVGW_ML_ENABLED="true")
    signals = client.application.extensions["tvgw"].signals
    opened = int(time.time() // 3600 * 3600 * 1000)  # the synthetic history's current hour
    served = signals.serve("BTC/USDT", "1h", [opened, 49_950.0, 50_100.0, 49_900.0, 50_000.0, 3.0])
    assert served.synthetic_market and served.bar is None
    assert served.candles is not None and len(served.candles) > 0
    assert 50_000.0 not in served.candles["close"].to_list()
    assert "SYNTHETIC" in served.analysis()["market"]
