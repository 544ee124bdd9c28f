"""The dashboard: login by token into a HttpOnly, SameSite=Strict session; CSRF on the forms;
and, in a real headless Chromium against a real gunicorn, the page shows an alert posted a
moment earlier, its live feed updates without a reload, its charts render, and the console
stays clean."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from storage import Storage
from storage import champions as role_store
from storage.predictions import insert_prediction, set_outcome
from tests.conftest import CSRF_FIELD, LiveGateway, dashboard_login, sample_alert, start_gateway
from tests.operator.browser import Browser
from tests.operator.conftest import TOKEN


def _login(client: Any, token: str = TOKEN) -> Any:
    return dashboard_login(client, token)


def test_login_sets_a_strict_httponly_session(api: Any) -> None:
    page = api.get("/")
    assert page.status_code == 200 and 'name="token"' in page.text and "Recent alerts" not in page.text
    assert api.get("/dashboard/data").status_code == 401
    response = _login(api)
    assert response.status_code == 303 and response.headers["Location"] == "/"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert TOKEN not in cookie  # the session is signed with a key derived from the token, not the token
    assert "Recent alerts" in api.get("/").text
    assert "script-src 'self'" in api.get("/").headers["Content-Security-Policy"]
    assert api.get("/dashboard/data").status_code == 200


def test_login_refuses_a_wrong_token_and_a_missing_csrf_token(api: Any) -> None:
    wrong = _login(api, "not-the-token")
    assert wrong.status_code == 401 and "Wrong token" in wrong.text
    assert api.get("/dashboard/data").status_code == 401
    forged = api.post("/login", data={"token": TOKEN})  # a cross-site form cannot know the CSRF token
    assert forged.status_code == 403 and forged.json["error"]["code"] == "csrf"
    assert api.get("/dashboard/data").status_code == 401


def test_logout_needs_the_csrf_token(api: Any) -> None:
    _login(api)
    assert api.post("/logout", data={}).status_code == 403
    assert api.get("/dashboard/data").status_code == 200
    csrf = CSRF_FIELD.search(api.get("/").text).group(1)
    assert api.post("/logout", data={"csrf": csrf}).status_code == 303
    assert api.get("/dashboard/data").status_code == 401


def test_dashboard_is_off_without_a_token(client: Any) -> None:
    page = client.get("/")
    assert page.status_code == 404 and "TVGW_API_TOKEN" in page.text
    assert client.post("/login", data={"token": ""}).status_code == 404


def test_dashboard_data_shows_alerts_with_their_decision_grade_and_reason(api: Any) -> None:
    executed = api.post("/webhook", data=json.dumps(sample_alert())).json["alert_id"]
    refused = api.post("/webhook", data=json.dumps(sample_alert(passphrase="wrong-passphrase"))).json[
        "alert_id"
    ]
    _login(api)
    data = api.get("/dashboard/data").json
    alerts = {a["id"]: a for a in data["alerts"]}
    assert alerts[executed]["status"] == "executed" and alerts[executed]["decision"] == "buy"
    assert alerts[executed]["ml_error"].startswith("ML is disabled")
    assert alerts[refused]["status"] == "refused" and "wrong passphrase" in alerts[refused]["reason"]
    assert data["positions"][0]["symbol"] == "BTC/USDT" and data["equity"]
    assert re.match(r"^\d{4}-\d\d-\d\dT.*Z$", data["equity"][0]["at"])
    assert "needs_retraining" in data["drift"]


def test_prediction_feed_returns_only_what_is_new(api: Any, tmp_path: Path) -> None:
    assert api.get("/dashboard/predictions").status_code == 401
    _login(api)
    storage = Storage(tmp_path / "tvgw.sqlite")
    with storage.transaction() as conn:
        ids = [
            insert_prediction(
                conn,
                timestamp=time.time(),
                symbol="BTC/USDT",
                timeframe="1h",
                direction_prob=0.6,
                horizon=5,
                target_time=time.time(),
            )
            for _ in range(3)
        ]
    assert [p["id"] for p in api.get("/dashboard/predictions").json] == ids[::-1]
    newer = api.get(f"/dashboard/predictions?after_id={ids[1]}").json
    assert [p["id"] for p in newer] == [ids[2]] and re.match(r"^\d{4}-.*Z$", newer[0]["timestamp"])
    assert api.get("/dashboard/predictions?after_id=-1").status_code == 400


def test_plotly_is_served_from_the_installed_package(api: Any) -> None:
    response = api.get("/dashboard/plotly.min.js")
    assert response.status_code == 200 and response.mimetype == "text/javascript"
    assert b"plotly.js" in response.data[:2000]


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[LiveGateway]:
    live = start_gateway(tmp_path, TVGW_API_TOKEN=TOKEN)
    yield live
    live.stop()


@pytest.mark.slow
def test_dashboard_in_a_real_browser(chromium: Browser, gateway: LiveGateway) -> None:
    alert_id = gateway.post(sample_alert()).json()["alert_id"]
    storage = Storage(gateway.database)
    role_store.insert_champion(storage, "ETH/USDT", "1h", "v1", now=time.time())  # a market's roles
    role_store.add_event(
        storage, symbol="ETH/USDT", timeframe="1h", kind="promote", version="v1", actor="ana",
        reason="planted for the page",
    )  # fmt: skip
    roles = role_store.get_roles(storage, "ETH/USDT", "1h")
    assert roles is not None and role_store.set_challenger(storage, roles, "v2", now=time.time())
    chromium.call(
        "Emulation.setDeviceMetricsOverride", width=390, height=844, deviceScaleFactor=2, mobile=True
    )
    chromium.navigate(gateway.url + "/")
    chromium.wait_for("document.querySelector('#token') !== null", what="the login form")
    chromium.evaluate(
        f"document.querySelector('#token').value = {json.dumps(TOKEN)};"
        " document.querySelector('#login').submit(); true"
    )
    chromium.wait_for(
        f"document.querySelector('#alerts tr[data-alert-id=\"{alert_id}\"]') !== null",
        what=f"alert {alert_id} in the table",
    )
    row = chromium.evaluate(f"document.querySelector('#alerts tr[data-alert-id=\"{alert_id}\"]').innerText")
    assert "executed" in row and "BTC/USDT" in row
    market = chromium.evaluate(
        "document.querySelector('#champions tr[data-market=\"ETH/USDT 1h\"]').innerText"
    )
    assert "v1" in market and "promote by ana: planted for the page" in market and "v2" in market
    assert "no resolved alerts both predicted yet" in market and "waiting: 0 of 100" in market
    chromium.wait_for("document.querySelectorAll('#equity-chart .main-svg').length > 0", what="equity drawn")
    assert chromium.evaluate("document.querySelectorAll('#equity-chart .scatterlayer .trace').length") == 1
    # Nothing resolved yet: those charts say so instead of drawing empty axes
    # (tests/operator/test_honest_states.py); they draw once predictions resolve.
    for chart in ("accuracy-chart", "calibration-chart"):
        chromium.wait_for(f"!document.getElementById('{chart}-empty').hidden", what=f"{chart}'s empty state")

    # The live feed: a prediction logged now appears without a reload.
    chromium.evaluate("window.__sameDocument = true")
    with storage.transaction() as conn:
        prediction_id = insert_prediction(
            conn, timestamp=time.time(), symbol="ETH/USDT", timeframe="1h", direction_prob=0.61, horizon=5,
            target_time=time.time() + 18_000, model_version="vtest",
        )  # fmt: skip
    chromium.wait_for(
        f"document.querySelector('#predictions li[data-prediction-id=\"{prediction_id}\"]') !== null",
        what="the new prediction in the live feed",
    )
    assert chromium.evaluate("window.__sameDocument === true")  # not reloaded
    # Its outcome known, the accuracy and calibration charts draw it (at the next refresh).
    assert set_outcome(storage, prediction_id, actual_direction=1, actual_magnitude=0.01)
    for chart in ("accuracy-chart", "calibration-chart"):
        drawn = f"document.querySelectorAll('#{chart} .main-svg').length > 0"
        chromium.wait_for(drawn, what=f"{chart} drawn")
        assert chromium.evaluate(f"document.getElementById('{chart}-empty').hidden")
    # Phone-sized: nothing wider than the screen (tables scroll inside their own boxes).
    assert chromium.evaluate("document.documentElement.scrollWidth") <= 390
    cookies = chromium.call("Network.getCookies", urls=[gateway.url])["cookies"]
    session = next(c for c in cookies if c["name"] == "tvgw_session")
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert chromium.errors == []
    assert requests.get(gateway.url + "/dashboard/data", timeout=5).status_code == 401  # no cookie, no data
