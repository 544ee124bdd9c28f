"""``[paper] starting_balance`` for a book that already traded is refused with a message at
start-up, never silently ignored (the ledger's cash is the truth once there are fills)."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.database import Storage
from storage.orders import get_cash, ledger_start
from tests.conftest import make_settings, market_app, sample_alert, start_gateway
from tvgw.config import ConfigError
from webhook.recovery import recover


def _config(tmp_path: Path, balance: float) -> dict[str, str]:
    path = tmp_path / f"tvgw-{balance:g}.toml"
    path.write_text(f"[paper]\nstarting_balance = {balance}\n")
    return {"TVGW_CONFIG": str(path)}


def _trade(tmp_path: Path, balance: float, *alerts: dict[str, object]) -> None:
    client = market_app(make_settings(tmp_path, **_config(tmp_path, balance))).test_client()
    for alert in alerts:
        assert client.post("/webhook", json=alert).json["status"] == "executed"


def test_the_ledger_knows_what_the_book_started_with(tmp_path: Path) -> None:
    _trade(
        tmp_path, 25_000,
        sample_alert(order_id="a", contracts=0.1, price=30_000),
        sample_alert(action="sell", order_id="b", contracts=0.04, price=30_500),
    )  # fmt: skip
    storage = Storage(make_settings(tmp_path).database)
    assert get_cash(storage, "paper", "USDT", 0.0) != pytest.approx(25_000)  # fills moved the cash
    assert ledger_start(storage, "paper", "USDT") == pytest.approx(25_000, abs=1e-6)


def test_a_new_book_takes_the_configured_balance(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, **_config(tmp_path, 25_000))
    recover(settings)
    storage = Storage(settings.database)
    assert ledger_start(storage, "paper", "USDT") is None
    assert get_cash(storage, "paper", "USDT", settings.paper.starting_balance) == 25_000


def test_a_changed_balance_for_a_book_with_trades_is_refused(tmp_path: Path) -> None:
    _trade(tmp_path, 10_000, sample_alert())
    recover(make_settings(tmp_path, **_config(tmp_path, 10_000)))  # the same figure: fine
    with pytest.raises(ConfigError) as refused:
        recover(make_settings(tmp_path, **_config(tmp_path, 25_000)))
    message = str(refused.value)
    assert "starting_balance" in message and "25000" in message and "10000.00" in message
    assert "TVGW_DATABASE" in message  # says how to start a new book


@pytest.mark.slow
def test_gunicorn_refuses_to_start_with_the_reason(tmp_path: Path) -> None:
    _trade(tmp_path, 10_000, sample_alert())
    with pytest.raises(RuntimeError) as failed:
        start_gateway(tmp_path, workers=1, **_config(tmp_path, 25_000))
    log = str(failed.value)
    assert "starting_balance" in log and "started with 10000.00" in log
    assert "Traceback" not in log
