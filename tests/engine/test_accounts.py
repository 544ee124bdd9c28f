"""One alert, several accounts (issue 13), through the real app: a real SQLite file, real ccxt
against the local fake Binance (two of them where two exchanges are meant), accounts configured
by a TVGW_CONFIG file as a trader would. The alert is recorded once; each account decides,
sizes, limits and orders on its own; one account's failure never blocks or repeats another's."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from common.errors import ConfigError
from tests.conftest import (
    dashboard_login,
    db_rows,
    db_write,
    make_settings,
    market_app,
    sample_alert,
    start_gateway,
)
from tests.fake_exchange import DEFAULT_API_KEY, DEFAULT_SECRET, FakeBinance, _BinanceError
from tvgw.config import account_credentials, secret_values
from webhook.recovery import recover

SHADOW_AND_LIVE = """
[accounts.live]
broker = "binance"
api_url = "{url}"

[accounts.shadow]
broker = "paper"

[strategies.default]
accounts = ["live", "shadow"]
"""


def configured(tmp_path: Path, toml: str, **env: str) -> tuple[Any, Any]:
    """Settings from a TVGW_CONFIG file holding ``toml``, and a test client of the real app."""
    path = tmp_path / "tvgw.toml"
    path.write_text(toml)
    settings = make_settings(tmp_path, TVGW_CONFIG=str(path), **{"TVGW_EXCHANGE_TIMEOUT_MS": "2000", **env})
    return settings, market_app(settings).test_client()


def exchange_route(**urls: str) -> str:
    """A config routing the default strategy to one Binance account per keyword, at its URL."""
    tables = [f'[accounts.{name}]\nbroker = "binance"\napi_url = "{url}"\n' for name, url in urls.items()]
    return "\n".join(tables) + f"\n[strategies.default]\naccounts = {json.dumps(list(urls))}\n"


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Set an account's exchange credentials in the environment, as an operator would."""

    def give(name: str = "LIVE", key: str = DEFAULT_API_KEY, secret: str = DEFAULT_SECRET) -> None:
        monkeypatch.setenv(f"TVGW_ACCOUNT_{name}_API_KEY", key)
        monkeypatch.setenv(f"TVGW_ACCOUNT_{name}_SECRET", secret)

    return give


def post(client: Any, **fields: Any) -> Any:
    return client.post("/webhook", data=json.dumps(sample_alert(**fields)))


def orders(settings: Any) -> list[Any]:
    return db_rows(settings.database, "SELECT * FROM orders ORDER BY id")


def outcomes(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {line["account"]: line for line in body["decision"]["accounts"]}


def test_a_failing_exchange_account_leaves_the_paper_shadow_filled_once(
    tmp_path: Path, fake_exchange: FakeBinance, keys: Any
) -> None:
    keys()
    settings, client = configured(tmp_path, SHADOW_AND_LIVE.format(url=fake_exchange.url))
    fake_exchange.fail_next("POST /api/v3/order", "503")
    response = post(client, contracts=0.01)
    body = response.json
    # One account filled: 200 (a 502 would invite a resend of what did fill), led by the filler.
    assert response.status_code == 200, body
    assert body["status"] == "executed" and body["decision"]["account"] == "shadow"
    lines = outcomes(body)
    assert list(lines) == ["live", "shadow"]  # routing order, every account's outcome
    assert lines["live"]["status"] == "failed" and lines["live"]["filled"] is None
    assert "503" in lines["live"]["reason"] or "unavailable" in lines["live"]["reason"].lower()
    assert lines["shadow"]["status"] == "executed"
    assert lines["shadow"]["filled"] == pytest.approx(0.01) and lines["shadow"]["average"] > 30000
    rows = {r["broker"]: r for r in orders(settings)}
    assert set(rows) == {"live", "shadow"}
    assert rows["shadow"]["status"] == "filled" and rows["live"]["status"] in ("failed", "unknown")
    assert rows["live"]["client_order_id"] != rows["shadow"]["client_order_id"]
    assert rows["live"]["client_order_id"].endswith("-live")
    assert rows["shadow"]["client_order_id"].endswith("-shadow")
    # The alert is recorded once, its stored decision listing both accounts.
    (alert,) = db_rows(settings.database, "SELECT * FROM alerts")
    assert alert["status"] == "executed" and alert["http_status"] == 200
    assert [a["account"] for a in json.loads(alert["decision"])["accounts"]] == ["live", "shadow"]
    positions = db_rows(settings.database, "SELECT broker, amount FROM positions")
    assert [(p["broker"], p["amount"]) for p in positions] == [("shadow", pytest.approx(0.01))]

    sent = fake_exchange.request_count("POST", "/api/v3/order")
    again = post(client, contracts=0.01, timenow=body_time(alert))
    assert again.json["status"] == "duplicate", again.json
    assert fake_exchange.request_count("POST", "/api/v3/order") == sent  # nothing new on the exchange
    assert len(orders(settings)) == 2  # nor on the paper book


def body_time(alert_row: Any) -> str:
    """The ``timenow`` the stored alert carried: the same alert, sent again."""
    return str(json.loads(alert_row["payload"])["timenow"])


def test_insufficient_balance_on_one_account_is_its_own_rejection(
    tmp_path: Path, fake_exchange: FakeBinance, keys: Any
) -> None:
    keys()
    _, client = configured(tmp_path, SHADOW_AND_LIVE.format(url=fake_exchange.url))
    fake_exchange.fail_next("POST /api/v3/order", "insufficient_balance")
    body = post(client, contracts=0.01).json
    lines = outcomes(body)
    assert lines["live"]["status"] == "rejected" and "insufficient" in lines["live"]["reason"].lower()
    assert lines["shadow"]["status"] == "executed"
    assert fake_exchange.request_count("POST", "/api/v3/order") == 1  # refused once, never retried


def test_when_no_account_fills_and_a_broker_failed_the_answer_is_502(
    tmp_path: Path, fake_exchange: FakeBinance, keys: Any
) -> None:
    toml = (
        SHADOW_AND_LIVE.format(url=fake_exchange.url) + "\n[accounts.shadow.risk]\nmax_open_positions = 1\n"
    )
    keys()
    _, client = configured(tmp_path, toml)
    first = post(client, contracts=0.01, order_id="first").json
    assert [line["status"] for line in first["decision"]["accounts"]] == ["executed", "executed"]
    fake_exchange.fail_next("POST /api/v3/order", "503")
    response = post(client, ticker="ETHUSDT", price=1800.0, contracts=0.1, order_id="second")
    lines = outcomes(response.json)
    assert lines["shadow"]["status"] == "rejected" and lines["shadow"]["risk_codes"] == ["max_open_positions"]
    assert lines["live"]["status"] == "failed" and lines["live"]["client_order_id"] is not None
    assert response.status_code == 502 and response.json["status"] == "failed"


#: Two paper accounts: ``big`` buys 600 USDT a time, ``small`` the alert's contracts (the strategy's sizing).
BIG_AND_SMALL = """
[accounts.big]
sizing = "fixed_quote"
quote_amount = 600

[accounts.small]

[strategies.default]
accounts = ["big", "small"]
"""


def test_each_account_sizes_with_its_own_terms(tmp_path: Path) -> None:
    settings, client = configured(tmp_path, BIG_AND_SMALL)
    body = post(client, contracts=0.01).json
    assert body["status"] == "executed"
    amounts = {r["broker"]: r["amount"] for r in orders(settings)}
    assert amounts == {
        "big": pytest.approx(600 / 30000),
        "small": pytest.approx(0.01),
    }  # small: the strategy's
    lines = outcomes(body)
    assert lines["big"]["amount"] == pytest.approx(0.02) and lines["small"]["amount"] == pytest.approx(0.01)


def test_an_accounts_risk_limit_refuses_only_that_account(tmp_path: Path) -> None:
    toml = """
[risk]
risk_per_trade = 0.03

[accounts.tight.risk]
max_open_positions = 1

[accounts.loose]

[strategies.default]
accounts = ["tight", "loose"]
"""
    settings, client = configured(tmp_path, toml)
    # The account's own [risk] overrides one limit; the others come from the gateway's [risk].
    assert settings.accounts["tight"].risk.risk_per_trade == 0.03
    assert settings.accounts["loose"].risk.max_open_positions == settings.risk.max_open_positions
    assert post(client, contracts=0.01, order_id="btc").json["status"] == "executed"
    response = post(client, ticker="ETHUSDT", price=1800.0, contracts=0.1, order_id="eth")
    assert response.status_code == 200
    lines = outcomes(response.json)
    assert lines["tight"]["status"] == "rejected" and lines["tight"]["risk_codes"] == ["max_open_positions"]
    assert lines["loose"]["status"] == "executed" and lines["loose"]["filled"] == pytest.approx(0.1)
    held = {(p["broker"], p["symbol"]) for p in db_rows(settings.database, "SELECT * FROM positions")}
    assert held == {("tight", "BTC/USDT"), ("loose", "BTC/USDT"), ("loose", "ETH/USDT")}


def test_two_accounts_on_one_exchange_each_place_their_order_once(
    tmp_path: Path, fake_exchange: FakeBinance, keys: Any
) -> None:
    """Idempotency is per account: the client order id names the account, so the same alert on
    two accounts of one exchange is two orders, and a resend is none."""
    keys("MAIN")
    keys("SIDE")
    settings, client = configured(tmp_path, exchange_route(main=fake_exchange.url, side=fake_exchange.url))
    body = post(client, contracts=0.01, id="same-alert").json
    assert [line["status"] for line in body["decision"]["accounts"]] == ["executed", "executed"]
    ids = [r["client_order_id"] for r in orders(settings)]
    assert len(set(ids)) == 2
    assert all(len(fake_exchange.orders_for(cid)) == 1 for cid in ids)
    assert post(client, contracts=0.01, id="same-alert").json["status"] == "duplicate"
    assert fake_exchange.request_count("POST", "/api/v3/order") == 2


#: How long the held exchange waits for the other account's order (the gateway's exchange
#: timeout in that test is longer, so the hold, not the timeout, decides).
HOLD_S = 45.0


class _WaitsForOther(FakeBinance):
    """A fake exchange whose order endpoint answers only once ``other`` holds an order: it
    succeeds when the gateway sends both accounts' orders side by side, and refuses (503) when
    the gateway waits for this one before sending the other's."""

    def __init__(self, other: FakeBinance, **kwargs: Any):
        super().__init__(**kwargs)
        self.other = other

    def _create_order(self, params: Any) -> dict[str, Any]:
        # Held until the other order exists: at once when the sends run side by side, however
        # busy the machine; only a gateway that waits for this answer first runs out the hold.
        deadline = time.monotonic() + HOLD_S
        while not self.other.orders and time.monotonic() < deadline:
            threading.Event().wait(0.05)
        if not self.other.orders:
            raise _BinanceError(503, 0, "the other account's order never came while this one was held")
        return super()._create_order(params)


def test_one_slow_exchange_does_not_hold_back_another_account(tmp_path: Path, keys: Any) -> None:
    quick = FakeBinance().start()
    slow = _WaitsForOther(quick, api_key="slow-key").start()
    try:
        keys("SLOW", "slow-key", "slow-secret")
        keys("QUICK")
        toml = exchange_route(slow=slow.url, quick=quick.url)
        _, client = configured(tmp_path, toml, TVGW_EXCHANGE_TIMEOUT_MS="60000")  # longer than the hold
        body = post(client, contracts=0.01).json
        lines = outcomes(body)
        assert lines["quick"]["status"] == "executed", body
        assert lines["slow"]["status"] == "executed", body  # it was answered while quick's was placed
        assert len(slow.orders) == 1 and len(quick.orders) == 1
    finally:
        slow.stop()
        quick.stop()


def test_a_config_naming_an_unknown_account_stops_start_up(tmp_path: Path) -> None:
    path = tmp_path / "tvgw.toml"
    path.write_text(
        '[accounts.live]\nbroker = "binance"\n\n[strategies.default]\naccounts = ["live", "shadw"]\n'
    )
    with pytest.raises(ConfigError, match=r"strategies\.default\.accounts names unknown account 'shadw'"):
        make_settings(tmp_path, TVGW_CONFIG=str(path))


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[accounts.Live]\nbroker = "paper"\n', "account name 'Live'"),
        ('[accounts.paper]\nbroker = "binance"\n', "default account's name"),
        ("[strategies.default]\naccounts = []\n", "at least 1 item"),
        ('[accounts.a]\n[strategies.default]\naccounts = ["a", "a"]\n', "names an account twice"),
        ("[accounts.a.risk]\nmax_leverage = 50\n", "accounts.a.risk.max_leverage"),
    ],
)
def test_bad_account_settings_are_clear_config_errors(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "tvgw.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        make_settings(tmp_path, TVGW_CONFIG=str(path))


def test_account_credentials_are_its_own_else_the_exchanges_and_all_are_secrets(tmp_path: Path) -> None:
    path = tmp_path / "tvgw.toml"
    path.write_text('[accounts.live]\nbroker = "binance"\n[accounts.spare]\nbroker = "binance"\n')
    env = {"TVGW_ACCOUNT_LIVE_API_KEY": "live-key-123", "TVGW_ACCOUNT_LIVE_SECRET": "live-secret-456",
           "TVGW_BINANCE_API_KEY": "shared-key-789", "TVGW_BINANCE_SECRET": "shared-secret-000"}  # fmt: skip
    settings = make_settings(tmp_path, TVGW_CONFIG=str(path), **env)
    full_env = {**env, "TVGW_PASSPHRASE": "test-secret"}
    live = account_credentials("live", settings.accounts["live"], full_env)
    spare = account_credentials("spare", settings.accounts["spare"], full_env)
    assert live == {"apiKey": "live-key-123", "secret": "live-secret-456"}
    assert spare == {"apiKey": "shared-key-789", "secret": "shared-secret-000"}
    secrets = secret_values(settings, full_env)
    assert {"live-key-123", "live-secret-456", "shared-key-789", "shared-secret-000"} <= set(secrets)


def test_no_accounts_configured_is_the_one_default_account(tmp_path: Path) -> None:
    settings, client = configured(tmp_path, "")
    body = post(client, contracts=0.01).json
    assert body["decision"]["account"] == "paper"
    assert [line["account"] for line in body["decision"]["accounts"]] == ["paper"]
    (row,) = orders(settings)
    assert row["broker"] == "paper" and row["client_order_id"].endswith(f"-{body['alert_id']}-paper")


def test_a_crash_between_send_and_record_is_reconciled_on_each_account(
    tmp_path: Path, fake_exchange: FakeBinance, keys: Any
) -> None:
    keys()
    settings, client = configured(tmp_path, SHADOW_AND_LIVE.format(url=fake_exchange.url))
    assert post(client, contracts=0.01).json["status"] == "executed"
    conn_rows = orders(settings)
    live_id = next(r["client_order_id"] for r in conn_rows if r["broker"] == "live")
    db_write(  # a worker that died after the live order was sent, before its fill was recorded
        settings.database,  # an hour ago: on a store hosts share, a younger one may be in flight
        "UPDATE orders SET status = 'pending', filled = 0, average = NULL, booked = 0, booked_cost = 0,"
        " booked_net = 0, booked_fees = NULL, updated_at = updated_at - 3600 WHERE broker = 'live'",
        "DELETE FROM positions WHERE broker = 'live'",
    )
    lines = recover(settings)
    assert any(live_id in line and "filled" in line for line in lines), lines
    held = {p["broker"]: p["amount"] for p in db_rows(settings.database, "SELECT * FROM positions")}
    # The exchange took its 0.1% fee in BTC: the live account holds 0.00999 (the paper book's fee is in USDT).
    assert held == {"live": pytest.approx(0.00999), "shadow": pytest.approx(0.01)}
    assert len(fake_exchange.orders_for(live_id)) == 1  # asked about, never re-sent


@pytest.mark.slow
def test_two_workers_place_each_accounts_order_once(tmp_path: Path) -> None:
    """The same alert at both gunicorn workers at once: one alert row acts, each account's order
    exactly once (the UNIQUE key holds across processes for every account)."""
    path = tmp_path / "tvgw.toml"
    path.write_text(
        '[accounts.a]\n[accounts.b]\nsizing = "fixed_quote"\n\n[strategies.default]\naccounts = ["a", "b"]\n'
    )
    gateway = start_gateway(tmp_path, workers=2, TVGW_CONFIG=str(path))
    try:
        alert = sample_alert(contracts=0.01)
        barrier = threading.Barrier(6)
        answers: list[Any] = []

        def fire() -> None:
            barrier.wait()
            answers.append(gateway.post(alert).json())

        threads = [threading.Thread(target=fire) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert sorted(a["status"] for a in answers) == ["duplicate"] * 5 + ["executed"]
        rows = db_rows(gateway.database, "SELECT broker, amount, status FROM orders ORDER BY broker")
        assert [(r["broker"], r["status"]) for r in rows] == [("a", "filled"), ("b", "filled")]
        assert rows[1]["amount"] == pytest.approx(100 / 30000, abs=1e-8)  # fixed_quote: 100 quote
    finally:
        gateway.stop()


def test_a_paper_accounts_starting_cash_is_its_own_and_kept(tmp_path: Path) -> None:
    from storage import Storage
    from storage.orders import ledger_start

    toml = '[accounts.small]\nstarting_balance = 1000\n[strategies.default]\naccounts = ["small"]\n'
    settings, client = configured(tmp_path, toml)
    assert post(client, contracts=0.005).json["status"] == "executed"
    storage = Storage(settings.database)
    assert ledger_start(storage, "small", "USDT") == pytest.approx(1000)
    storage.close()
    (tmp_path / "tvgw.toml").write_text(toml.replace("1000", "2000"))
    changed = make_settings(tmp_path, TVGW_CONFIG=str(tmp_path / "tvgw.toml"))
    with pytest.raises(ConfigError, match=r"\[accounts\.small\] starting_balance .* 'small' .* 1000\.00"):
        recover(changed)


def test_the_stored_decision_matches_the_documented_schema(tmp_path: Path) -> None:
    """``/api/alerts/<id>`` of a two-account alert, validated against the OpenAPI document's
    ``Alert`` schema (its ``Decision`` and ``AccountOutcome``)."""
    from jsonschema import Draft202012Validator

    toml = '[accounts.a]\n[accounts.b]\nsizing = "fixed_quote"\n[strategies.default]\naccounts = ["a", "b"]\n'
    _, client = configured(tmp_path, toml, TVGW_API_TOKEN="accounts-token")
    alert_id = post(client, contracts=0.01).json["alert_id"]
    headers = {"Authorization": "Bearer accounts-token"}
    row = client.get(f"/api/alerts/{alert_id}", headers=headers).json
    document = client.get("/api/openapi.json").json
    schema = {"$ref": "#/components/schemas/Alert", "components": document["components"]}
    Draft202012Validator(schema).validate(row)
    assert [line["account"] for line in row["decision"]["accounts"]] == ["a", "b"]
    bad = {**row, "decision": {**row["decision"], "accounts": [{"account": "a"}]}}
    assert not Draft202012Validator(schema).is_valid(bad)  # the schema does check the lines


def test_positions_and_the_dashboard_show_every_accounts_book(tmp_path: Path) -> None:
    token = "positions-token-123"
    _, client = configured(tmp_path, BIG_AND_SMALL, TVGW_API_TOKEN=token)
    assert post(client, contracts=0.01).json["status"] == "executed"
    body = client.get("/api/positions", headers={"Authorization": f"Bearer {token}"}).json
    books = {book["account"]: book for book in body["accounts"]}
    assert set(books) == {"paper", "big", "small"}  # the default account is listed too
    assert books["paper"]["positions"] == [] and body["positions"] == []  # it holds nothing here
    held = {name: [(p["symbol"], p["amount"]) for p in book["positions"]] for name, book in books.items()}
    assert held["big"] == [("BTC/USDT", pytest.approx(0.02))]
    assert held["small"] == [("BTC/USDT", pytest.approx(0.01))]
    # Each paper account values its own book: the starting 10,000 less its own fee.
    assert 9_990 < books["small"]["equity"] < books["paper"]["equity"] == pytest.approx(10_000)
    assert books["big"]["equity"] < books["small"]["equity"]  # the bigger order paid more fee

    assert dashboard_login(client, token).status_code == 303
    rows = client.get("/dashboard/data").json["positions"]
    assert sorted((r["account"], r["amount"]) for r in rows) == [
        ("big", pytest.approx(0.02)),
        ("small", pytest.approx(0.01)),
    ]
