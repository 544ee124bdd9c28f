"""The command line says what is synthetic: ``tvgw positions`` marks a position whose market's
prices are generated, and ``tvgw data import`` replaces a synthetic history whole (a market is
never half generated), saying so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ml_integration.synthetic import synthetic_candles
from ml_integration.training import store_synthetic_history
from storage import Storage
from storage.candles import candle_sources, is_synthetic_market
from tests.conftest import make_settings, market_app, sample_alert
from tvgw.cli import main


def _synthetic_store(database: Path) -> None:
    storage = Storage(database)
    storage.migrate()
    store_synthetic_history(storage, "BTC/USDT", "1h", bars=100, seed=7, price=30_000.0)
    storage.close()


def test_positions_say_when_their_prices_are_synthetic(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _synthetic_store(cli_env / "tvgw.sqlite")
    client = market_app(make_settings(cli_env), prices={"ETH/USDT": 1800.0}).test_client()
    for fields in ({}, {"ticker": "ETHUSDT", "order_id": "eth", "contracts": 0.1}):
        alert = {k: v for k, v in sample_alert(**fields).items() if k != "price"}
        assert client.post("/webhook", data=json.dumps(alert)).json["status"] == "executed"
    assert main(["positions"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["BTC/USDT"].endswith("SYNTHETIC") and rows["ETH/USDT"].endswith("market")
    assert main(["positions", "--json"]) == 0
    shown = {p["symbol"]: p["synthetic"] for p in json.loads(capsys.readouterr().out)}
    assert shown == {"BTC/USDT": True, "ETH/USDT": False}


def test_importing_real_candles_replaces_the_synthetic_history(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _synthetic_store(cli_env / "tvgw.sqlite")
    real = synthetic_candles(50, seed=3, n_gaps=0)  # stands for a file of real candles
    path = cli_env / "BTC_USDT-1h.json"
    path.write_text(json.dumps([[int(t.timestamp() * 1000), *row] for t, row in zip(
        real.index, real.to_numpy().tolist(), strict=True)]))  # fmt: skip
    assert main(["data", "import", str(path), "--symbol", "BTC/USDT", "--timeframe", "1h"]) == 0
    assert "removed 100 SYNTHETIC BTC/USDT candles" in capsys.readouterr().out
    storage = Storage(cli_env / "tvgw.sqlite")
    assert not is_synthetic_market(storage, "BTC/USDT")
    assert candle_sources(storage, "BTC/USDT", "1h") == {"file:BTC_USDT-1h.json"}
