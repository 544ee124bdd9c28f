"""The webhook intake: accepted shapes, refusals, and the record kept of each."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PASSPHRASE, db_rows, make_settings, market_app, sample_alert


def rows(settings: Any, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    return db_rows(settings.database, sql, params)


def post(client: Any, body: Any, **kwargs: Any) -> Any:
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    kwargs.setdefault("content_type", "application/json")
    return client.post("/webhook", data=data, **kwargs)


# --- accepted shapes ---------------------------------------------------------------------------


def shapes() -> dict[str, dict[str, Any]]:
    """The payload shapes, built when a test runs (their timenow must be fresh)."""
    return {
    "canonical": sample_alert(),
    "symbol_alias": {k if k != "ticker" else "symbol": v for k, v in sample_alert().items()},
    "numbers_as_strings": sample_alert(contracts="0.0100", price="30000.800000000003"),
    "nested_strategy_and_bar": {
        "passphrase": PASSPHRASE,
        "ticker": "ETHUSDT",
        "exchange": "BINANCE",
        "timenow": sample_alert()["timenow"],
        "bar": {"time": "2024-01-01T00:00:00Z", "open": "1800", "high": 1810, "low": 1790, "close": "1805.5",
                "volume": 12.5},
        "strategy": {"position_size": "0.5", "order_action": "buy", "order_contracts": "0.5",
                     "order_price": "1805.5", "order_id": "Long", "market_position": "long",
                     "market_position_size": "0.5", "prev_market_position": "flat"},
    },
    "nested_order_object": {
        "passphrase": PASSPHRASE, "ticker": "BINANCE:ETHUSDT", "timenow": sample_alert()["timenow"],
        "strategy": {"order": {"action": "sell", "contracts": 0.25, "price": 1800.25, "id": "Short"}},
    },
    "ml_enhanced_short_message": {
        "passphrase": PASSPHRASE, "action": "BUY", "symbol": "SOLUSDT", "price": 20.5, "contracts": 1,
        "ml_confidence": 0.72, "kelly_fraction": "0.05", "sentiment_score": -0.1,
    },
    }  # fmt: skip


SHAPE_NAMES = list(shapes())


@pytest.mark.parametrize("shape", SHAPE_NAMES)
def test_each_accepted_shape_executes_on_paper(client: Any, settings: Any, shape: str) -> None:
    response = post(client, shapes()[shape])
    assert response.status_code == 200, response.json
    assert response.json["status"] == "executed"
    alert_id = response.json["alert_id"]
    (row,) = rows(settings, "SELECT * FROM alerts WHERE id = ?", (alert_id,))
    assert row["status"] == "executed"
    (order,) = rows(settings, "SELECT * FROM orders WHERE alert_id = ?", (alert_id,))
    assert order["status"] == "filled" and order["filled"] > 0


def test_nested_shape_fields_land_in_the_record(client: Any, settings: Any) -> None:
    response = post(client, shapes()["nested_strategy_and_bar"])
    (row,) = rows(settings, "SELECT * FROM alerts WHERE id = ?", (response.json["alert_id"],))
    assert (row["symbol"], row["action"], row["contracts"], row["price"]) == ("ETH/USDT", "buy", 0.5, 1805.5)
    payload = json.loads(row["payload"])
    assert payload["close"] == 1805.5
    # TradingView's {{strategy.market_position_size}} in the nested shape is the schema's field now
    # (an unknown key is still kept, not fatal: test_unknown_fields_are_kept).
    assert payload["market_position_size"] == 0.5 and "strategy.market_position_size" not in payload["extras"]


def test_unknown_fields_are_kept(client: Any, settings: Any) -> None:
    response = post(client, sample_alert(my_note="hello", rsi=28.5))
    (row,) = rows(settings, "SELECT payload FROM alerts WHERE id = ?", (response.json["alert_id"],))
    assert json.loads(row["payload"])["extras"] == {"my_note": "hello", "rsi": 28.5}


def test_text_plain_body_is_parsed_as_json(client: Any) -> None:
    response = post(client, json.dumps(sample_alert()), content_type="text/plain; charset=utf-8")
    assert response.status_code == 200 and response.json["status"] == "executed"


def test_passphrase_is_never_stored(client: Any, settings: Any) -> None:
    post(client, sample_alert())
    post(client, '{"passphrase": "test-secret", "broken": ')
    post(client, sample_alert(passphrase="wrong-one"))
    dump = "\n".join(str(tuple(r)) for r in rows(settings, "SELECT * FROM alerts"))
    assert PASSPHRASE not in dump and "wrong-one" not in dump


# --- refusals ------------------------------------------------------------------------------


def assert_refused(settings: Any, response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.json
    body = response.json
    assert body["status"] == "refused" and body["error"]["code"] == code
    assert body["error"]["message"]
    (row,) = rows(settings, "SELECT * FROM alerts WHERE id = ?", (body["alert_id"],))
    assert (row["status"], row["http_status"], row["error_code"]) == ("refused", status, code)
    assert row["reason"] == body["error"]["message"]
    return body


def test_malformed_json_says_where(client: Any, settings: Any) -> None:
    body = assert_refused(settings, post(client, '{"ticker": "BTCUSDT",, }'), 400, "invalid_json")
    assert "line 1 column" in body["error"]["where"]


def test_empty_and_non_object_bodies(client: Any, settings: Any) -> None:
    assert_refused(settings, post(client, ""), 400, "empty_body")
    assert_refused(settings, post(client, "[1, 2]"), 400, "not_an_object")


def test_unfilled_placeholder_names_the_field(client: Any, settings: Any) -> None:
    raw = json.dumps(sample_alert()).replace('"price": 30000.0', '"price": {{plot("x")}}')
    body = assert_refused(settings, post(client, raw), 400, "unfilled_placeholder")
    assert "'price'" in body["error"]["message"]
    quoted = sample_alert(ticker="{{tickerr}}")
    body = assert_refused(settings, post(client, quoted), 400, "unfilled_placeholder")
    assert "'ticker'" in body["error"]["message"] and "{{tickerr}}" in body["error"]["message"]
    assert body["error"]["where"] == "field ticker"


def test_nan_volume_means_no_volume(client: Any) -> None:
    bar = sample_alert(open=29990.0, high=30020.0, low=29980.0, close=30005.0)
    raw = json.dumps(bar).replace("}", ', "volume": NaN}')
    response = post(client, raw)
    assert response.status_code == 200, response.json
    bad = json.dumps(sample_alert()).replace('"contracts": 0.01', '"contracts": NaN')
    assert post(client, bad).json["error"]["where"] == "contracts"


def test_validation_error_names_field(client: Any, settings: Any) -> None:
    body = assert_refused(settings, post(client, sample_alert(contracts="lots")), 400, "invalid_alert")
    assert "contracts" in body["error"]["message"]
    body = assert_refused(settings, post(client, sample_alert(action="moon")), 400, "invalid_alert")
    assert body["error"]["where"] == "action" and "moon" in body["error"]["message"]
    no_ticker = sample_alert()
    del no_ticker["ticker"]
    body = assert_refused(settings, post(client, no_ticker), 400, "invalid_alert")
    assert body["error"]["where"] == "ticker"


@pytest.mark.parametrize(
    ("passphrase", "message"),
    [(None, "missing passphrase"), ("", "missing passphrase"), ("wrong", "wrong passphrase")],
)
def test_wrong_or_missing_passphrase(
    client: Any, settings: Any, passphrase: str | None, message: str
) -> None:
    alert = sample_alert()
    if passphrase is None:
        del alert["passphrase"]
    else:
        alert["passphrase"] = passphrase
    body = assert_refused(settings, post(client, alert), 401, "unauthorized")
    assert message in body["error"]["message"]
    assert not rows(settings, "SELECT * FROM orders")


def test_strategies_have_their_own_secrets(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, {"strategies": {"swing": {"passphrase": "swing-secret", "mode": "annotate"}}}
    )
    client = market_app(settings).test_client()
    ok = post(client, sample_alert(strategy_id="swing", passphrase="swing-secret"))
    assert ok.status_code == 200 and ok.json["status"] == "annotated"
    crossed = post(client, sample_alert(strategy_id="swing", passphrase=PASSPHRASE))
    assert crossed.status_code == 401
    unknown = post(client, sample_alert(strategy_id="nope"))
    assert unknown.status_code == 401 and "unknown strategy" in unknown.json["error"]["message"]


def test_disallowed_ip_and_spoofed_forwarded_for(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, TVGW_ALLOWED_IPS="tradingview", TVGW_TRUSTED_PROXIES="10.0.0.5")
    client = market_app(settings).test_client()
    # A direct client cannot talk its way in by claiming to be TradingView.
    spoofed = post(
        client,
        sample_alert(),
        environ_base={"REMOTE_ADDR": "203.0.113.9"},
        headers={"X-Forwarded-For": "52.89.214.238"},
    )
    assert_refused(settings, spoofed, 403, "forbidden")
    assert "203.0.113.9" in spoofed.json["error"]["message"]
    # Through the trusted proxy, the rightmost untrusted hop is the client, not the leftmost claim.
    via_proxy = post(
        client,
        sample_alert(),
        environ_base={"REMOTE_ADDR": "10.0.0.5"},
        headers={"X-Forwarded-For": "52.89.214.238, 198.51.100.7"},
    )
    assert_refused(settings, via_proxy, 403, "forbidden")
    real = post(
        client,
        sample_alert(),
        environ_base={"REMOTE_ADDR": "10.0.0.5"},
        headers={"X-Forwarded-For": "52.89.214.238"},
    )
    assert real.status_code == 200
    (row,) = rows(settings, "SELECT source_ip FROM alerts WHERE id = ?", (real.json["alert_id"],))
    assert row["source_ip"] == "52.89.214.238"


def test_proxy_not_declared_trusted_cannot_bypass_the_allowlist(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, TVGW_ALLOWED_IPS="tradingview,loopback")
    client = market_app(settings).test_client()
    # nginx on the same host without TVGW_TRUSTED_PROXIES: every request would look local.
    body = assert_refused(
        settings,
        post(
            client,
            sample_alert(),
            environ_base={"REMOTE_ADDR": "127.0.0.1"},
            headers={"X-Forwarded-For": "203.0.113.9"},
        ),
        403,
        "untrusted_proxy",
    )
    assert "TVGW_TRUSTED_PROXIES" in body["error"]["message"]
    direct = post(client, sample_alert(), environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert direct.status_code == 200
    # A public sender that adds the header itself is judged by its own address.
    tradingview = post(
        client,
        sample_alert(order_id="tv"),
        environ_base={"REMOTE_ADDR": "52.89.214.238"},
        headers={"X-Forwarded-For": "10.1.2.3"},
    )
    assert tradingview.status_code == 200


def test_stale_alert_refused_and_recorded(client: Any, settings: Any) -> None:
    body = assert_refused(settings, post(client, sample_alert(timenow="2024-01-01T00:00:00Z")), 422, "stale")
    assert "TVGW_MAX_LAG_SECONDS" in body["error"]["message"]
    assert not rows(settings, "SELECT * FROM orders")


def test_oversized_body_refused_and_recorded(client: Any, settings: Any) -> None:
    big = sample_alert(comment="x" * (settings.max_body_bytes + 10))
    assert_refused(settings, post(client, big), 413, "too_large")


def test_deeply_nested_body_refused(client: Any, settings: Any) -> None:
    nested = '{"a":' * 20 + "1" + "}" * 20
    assert_refused(settings, post(client, nested), 400, "too_deep")
    very_deep = '{"a":' * 5000 + "1" + "}" * 5000  # deeper than Python's recursion limit
    assert_refused(settings, post(client, very_deep), 400, "too_deep")


def test_every_refusal_is_recorded(client: Any, settings: Any) -> None:
    bodies = [
        "",
        "nope",
        "[]",
        json.dumps(sample_alert(passphrase="x")),
        json.dumps(sample_alert(action="hodl")),
        json.dumps(sample_alert(timenow="2001-01-01T00:00:00Z")),
    ]
    statuses = [post(client, b).status_code for b in bodies]
    assert statuses == [400, 400, 400, 401, 400, 422]
    assert len(rows(settings, "SELECT * FROM alerts WHERE status = 'refused'")) == len(bodies)


# --- duplicates ------------------------------------------------------------------------------


def test_duplicate_answers_with_the_first_outcome_and_never_acts_twice(client: Any, settings: Any) -> None:
    alert = sample_alert()
    first = post(client, alert)
    second = post(client, alert)
    assert second.status_code == 200
    assert second.json["status"] == "duplicate"
    assert second.json["duplicate_of"] == first.json["alert_id"]
    assert second.json["original"]["status"] == "executed"
    assert len(rows(settings, "SELECT * FROM orders")) == 1
    (dup,) = rows(settings, "SELECT * FROM alerts WHERE status = 'duplicate'")
    assert dup["duplicate_of"] == first.json["alert_id"]


def test_explicit_id_is_the_idempotency_key(client: Any, settings: Any) -> None:
    first = post(client, sample_alert(id="abc-1"))
    later = post(client, sample_alert(id="abc-1", price=31000.0))
    assert later.json["status"] == "duplicate" and later.json["duplicate_of"] == first.json["alert_id"]


def test_same_signal_at_another_time_is_new(client: Any, settings: Any) -> None:
    """Two alerts that differ only in when they fired are two alerts, and both act; the same
    instant again is the duplicate (so it is the time that told them apart). Both instants sit
    well inside TVGW_MAX_LAG_SECONDS (60 s by default) of the gateway's clock."""
    now = datetime.now(UTC).replace(microsecond=0)
    earlier, later = ((now - timedelta(seconds=s)).strftime("%Y-%m-%dT%H:%M:%SZ") for s in (20, 10))
    first = post(client, sample_alert(timenow=earlier))
    second = post(client, sample_alert(timenow=later))
    repeat = post(client, sample_alert(timenow=later))
    assert first.json["status"] == second.json["status"] == "executed", (first.json, second.json)
    assert repeat.json["status"] == "duplicate" and repeat.json["duplicate_of"] == second.json["alert_id"]
    assert len(rows(settings, "SELECT * FROM orders")) == 2


# --- health, errors ----------------------------------------------------------------------------


def test_healthz(client: Any) -> None:
    body = client.get("/healthz").json
    assert body["status"] == "ok"
    assert body["database"]["ok"] and body["database"]["schema_version"] == body["database"]["expected"]


def test_unknown_route_and_method_are_json(client: Any) -> None:
    assert client.get("/webhook").status_code == 405
    assert client.get("/webhook").json["status"] == "refused"
    assert client.get("/nope").json["error"]["code"] == "not_found"


def test_a_gateway_fault_is_answered_in_json_and_kept_on_file(
    client: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine import engine as engine_module

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(engine_module, "decide", broken)
    response = post(client, sample_alert())
    assert response.status_code == 500
    assert response.json["status"] == "error" and "ZeroDivisionError" in response.json["error"]["message"]
    (row,) = rows(settings, "SELECT * FROM alerts WHERE id = ?", (response.json["alert_id"],))
    assert (row["status"], row["http_status"], row["error_code"]) == ("error", 500, "internal_error")
    assert not rows(settings, "SELECT * FROM orders")
