"""The read-only JSON API: bearer token, and what it shows of the record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_settings, market_app, sample_alert

TOKEN = "api-token-123"


@pytest.fixture
def api(tmp_path: Path) -> Any:
    return market_app(make_settings(tmp_path, TVGW_API_TOKEN=TOKEN)).test_client()


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_token_is_required(api: Any) -> None:
    assert api.get("/api/alerts").status_code == 401
    assert api.get("/api/alerts", headers=auth("wrong")).status_code == 401
    assert api.get("/api/alerts", headers=auth()).status_code == 200


def test_api_is_off_without_a_token(client: Any) -> None:
    response = client.get("/api/alerts", headers=auth())
    assert response.status_code == 404 and "TVGW_API_TOKEN" in response.json["error"]["message"]


def test_alerts_orders_positions_and_accuracy(api: Any) -> None:
    executed = api.post("/webhook", data=json.dumps(sample_alert())).json
    api.post("/webhook", data="not json")
    alerts = api.get("/api/alerts?limit=10", headers=auth()).json
    assert [a["status"] for a in alerts] == ["refused", "executed"]
    assert "passphrase" not in json.dumps(alerts)
    one = api.get(f"/api/alerts/{executed['alert_id']}", headers=auth()).json
    assert one["orders"][0]["status"] == "filled"
    assert api.get("/api/alerts/999", headers=auth()).status_code == 404
    assert api.get("/api/orders", headers=auth()).json[0]["symbol"] == "BTC/USDT"
    positions = api.get("/api/positions", headers=auth()).json
    assert positions["broker"] == "paper" and positions["positions"][0]["amount"] == pytest.approx(0.01)
    accuracy = api.get("/api/accuracy?days=7", headers=auth()).json
    assert accuracy["total_predictions"] == 0 and accuracy["direction_accuracy"] is None


def test_bad_query_parameters_say_what_is_wrong(api: Any) -> None:
    response = api.get("/api/alerts?limit=lots", headers=auth())
    assert response.status_code == 400 and response.json["error"]["where"] == "limit"
    assert api.get("/api/accuracy?days=x", headers=auth()).json["error"]["where"] == "days"


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer {TOKEN}", True),  # the scheme is case-insensitive (RFC 7235)
        (f"BEARER  {TOKEN}", True),  # 1*SP between scheme and token (RFC 6750 2.1)
        (TOKEN, False),  # a bare token: no scheme
        ("Bearer", False),
        ("Bearer ", False),
        (f"Basic {TOKEN}", False),
        (f"Token {TOKEN}", False),
        (f"Bearer  {TOKEN} extra", False),
        (f"Bearer {TOKEN},Bearer {TOKEN}", False),
        (f"Bearer\t{TOKEN}", False),
        (f"{TOKEN} Bearer", False),
    ],
)
def test_only_a_bearer_credential_is_accepted(api: Any, header: str, accepted: bool) -> None:
    response = api.get("/api/alerts", headers={"Authorization": header})
    if accepted:
        assert response.status_code == 200, response.json
        return
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="tvgw"'
    assert response.json["error"]["code"] == "unauthorized"
    assert TOKEN not in json.dumps(response.json)


def test_a_wrong_token_says_invalid_token_and_a_missing_one_does_not(api: Any) -> None:
    wrong = api.get("/api/orders", headers=auth("not-the-token"))
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"] == 'Bearer realm="tvgw", error="invalid_token"'
    missing = api.get("/api/orders")
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="tvgw"'
    assert "Bearer" in missing.json["error"]["message"]
