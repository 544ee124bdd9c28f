"""What the operator sees is what is true: one equity for one instant wherever it shows (the
dashboard's curve, ``/api/positions``, ``/api/ml/strategies``), synthetic prices and models marked
as such, empty states that say what will fill them, and "—" for figures that do not apply (in a
real headless Chromium for the page)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backtest.metrics import trading_metrics
from backtest.report import NOT_APPLICABLE, _fmt, page_header
from ml_integration.training import store_synthetic_history
from storage import Storage
from tests.conftest import LiveGateway, dashboard_login, make_settings, market_app, sample_alert, seed_market
from tests.operator.browser import Browser
from tests.operator.conftest import AUTH, TOKEN


def _post(client: Any, **fields: Any) -> Any:
    return client.post("/webhook", data=json.dumps(sample_alert(**fields))).json


def _equities(client: Any, start: float) -> tuple[float, float, float]:
    positions = client.get("/api/positions", headers=AUTH).json["equity"]
    curve = client.get("/dashboard/data").json["equity"][-1]["equity"]
    (strategy,) = client.get("/api/ml/strategies?strategy_id=default", headers=AUTH).json
    return positions, curve, start + strategy["pnl"]


def test_one_equity_for_one_instant_everywhere(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, TVGW_API_TOKEN=TOKEN)
    client = market_app(settings).test_client()
    dashboard_login(client, TOKEN)
    start = settings.paper.starting_balance
    assert _post(client, contracts=0.05, price=None)["status"] == "executed"
    seed_market(settings.database, {"BTC/USDT": 31_000.0})  # the market moves ...
    more = _post(client, contracts=0.01, price=None, order_id="more")
    assert more["status"] == "executed", more["decision"]["reason"]  # ... and marked
    # A newer candle that no alert has priced yet: the book is still valued at its marks.
    seed_market(settings.database, {"BTC/USDT": 33_000.0}, at=time.time() + 1)
    positions, curve, strategies = _equities(client, start)
    assert positions == pytest.approx(curve, abs=1e-6) and positions == pytest.approx(strategies, abs=1e-6)
    assert positions != pytest.approx(start, abs=1.0)  # it did move: the check is not vacuous


def test_dashboard_data_marks_synthetic_markets_and_positions(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, TVGW_API_TOKEN=TOKEN)
    storage = Storage(settings.database)
    storage.migrate()
    store_synthetic_history(storage, "BTC/USDT", "1h", bars=100, seed=7, price=30_000.0)
    storage.close()
    client = market_app(settings, prices={"ETH/USDT": 1800.0}).test_client()
    dashboard_login(client, TOKEN)
    assert _post(client, contracts=0.01, price=None)["status"] == "executed"
    assert _post(client, ticker="ETHUSDT", contracts=0.1, price=None, order_id="eth")["status"] == "executed"
    data = client.get("/dashboard/data").json
    assert data["synthetic_markets"] == ["BTC/USDT"]
    assert {p["symbol"]: p["synthetic"] for p in data["positions"]} == {"BTC/USDT": True, "ETH/USDT": False}


def test_trade_figures_that_do_not_apply_are_none_and_read_as_a_dash() -> None:
    held = trading_metrics(
        np.linspace(10_000, 12_270, 50), np.ones(50), [], start_equity=10_000, fees=10.0, bar_seconds=3600
    )
    assert held.total_return == pytest.approx(0.227)
    trade_figures = (held.win_rate, held.profit_factor, held.average_win, held.average_loss)
    assert trade_figures == (None, None, None, None)  # buy and hold never closes a trade
    assert held.calmar is None  # it never fell: no drawdown to divide by
    assert _fmt(held.win_rate, "pct") == NOT_APPLICABLE == "—"


def test_a_backtest_on_synthetic_candles_says_so_first() -> None:
    summary = {"symbol": "BTC/USDT", "timeframe": "1h", "period": ["2025-01-01T00", "2025-02-01T00"]}
    title, banner = page_header({**summary, "candles": {"synthetic": True}})
    assert "SYNTHETIC" in title and "SYNTHETIC" in banner
    assert page_header({**summary, "candles": {"synthetic": False}}) == (
        "tvgw backtest: BTC/USDT 1h, 2025-01-01 .. 2025-02-01",
        "",
    )


# --- the page, in a browser --------------------------------------------------------------------


@pytest.fixture
def synthetic_gateway(tmp_path: Path) -> Iterator[LiveGateway]:
    from tests.conftest import start_gateway

    database = tmp_path / "tvgw.sqlite"
    storage = Storage(database)
    storage.migrate()
    store_synthetic_history(storage, "BTC/USDT", "1h", bars=100, seed=7, price=30_000.0)
    storage.close()
    live = start_gateway(tmp_path, workers=1, prices=None, TVGW_API_TOKEN=TOKEN)
    yield live
    live.stop()


@pytest.mark.slow
def test_the_page_says_what_is_empty_and_what_is_synthetic(
    chromium: Browser, synthetic_gateway: LiveGateway
) -> None:
    gateway = synthetic_gateway
    chromium.navigate(gateway.url + "/")
    chromium.wait_for("document.querySelector('#token') !== null", what="the login form")
    chromium.evaluate(
        f"document.querySelector('#token').value = {json.dumps(TOKEN)};"
        " document.querySelector('#login').submit(); true"
    )
    chromium.wait_for("document.querySelector('#alerts td.empty') !== null", what="the empty alerts table")
    assert "No alerts yet" in chromium.evaluate("document.querySelector('#alerts').innerText")
    champions = chromium.evaluate("document.querySelector('#champions tbody').innerText")
    assert "No champion yet: the first model trained for a market" in champions
    for chart in ("accuracy-chart", "calibration-chart"):
        note = chromium.evaluate(f"document.getElementById('{chart}-empty').innerText")
        assert "No resolved predictions yet" in note
        # no axes drawn for nothing (Plotly's empty axes read 2000 or 1970)
        assert chromium.evaluate(f"document.querySelectorAll('#{chart} .main-svg').length") == 0
    # An alert: executed at the synthetic price, the page says the market is synthetic.
    assert gateway.post(sample_alert(price=None)).json()["status"] == "executed"
    chromium.wait_for("!document.getElementById('synthetic').hidden", what="the banner", timeout=30)
    banner = chromium.evaluate("document.getElementById('synthetic').innerText")
    assert "SYNTHETIC prices for BTC/USDT" in banner
    chromium.wait_for("document.querySelector('#positions td.warn') !== null", what="a position", timeout=30)
    assert "SYNTHETIC" in chromium.evaluate("document.querySelector('#positions tbody').innerText")
    assert chromium.errors == []
