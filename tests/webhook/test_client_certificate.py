"""The proxy's client-certificate verdict: believed only from a trusted proxy, and only when
TVGW_REQUIRE_CLIENT_CERT asks for it. Every refusal is recorded like any other."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from settings import ConfigError
from tests.conftest import make_settings, market_app, sample_alert

PROXY, OUTSIDER = "127.0.0.1", "127.0.0.9"


def _client(tmp_path: Path, **env: str) -> Any:
    settings = make_settings(tmp_path, TVGW_TRUSTED_PROXIES=PROXY, TVGW_REQUIRE_CLIENT_CERT="true", **env)
    return market_app(settings).test_client(), settings


def _post(client: Any, verdict: str | None, peer: str = PROXY) -> Any:
    headers = {"X-Forwarded-For": "127.0.0.5"}
    if verdict is not None:
        headers["X-Client-Verify"] = verdict
    return client.post("/webhook", json=sample_alert(), headers=headers, environ_base={"REMOTE_ADDR": peer})


def test_verified_certificate_from_the_trusted_proxy_passes(tmp_path: Path) -> None:
    client, _ = _client(tmp_path)
    reply = _post(client, "SUCCESS")
    assert reply.status_code == 200, reply.json
    assert reply.json["status"] == "executed"


@pytest.mark.parametrize("verdict", ["FAILED:unable to get local issuer certificate", "NONE", "", None])
def test_anything_but_success_is_refused_and_recorded(tmp_path: Path, verdict: str | None) -> None:
    client, settings = _client(tmp_path)
    reply = _post(client, verdict)
    assert reply.status_code == 403
    assert reply.json["error"]["code"] == "client_certificate"
    row = (
        sqlite3.connect(settings.database)
        .execute(
            "SELECT status, http_status, error_code, source_ip FROM alerts WHERE id = ?",
            (reply.json["alert_id"],),
        )
        .fetchone()
    )
    assert row == ("refused", 403, "client_certificate", "127.0.0.5")


def test_verdict_from_a_peer_that_is_not_a_trusted_proxy_is_not_believed(tmp_path: Path) -> None:
    client, _ = _client(tmp_path)
    reply = _post(client, "SUCCESS", peer=OUTSIDER)
    assert reply.status_code == 403
    assert reply.json["error"]["code"] == "client_certificate"
    assert "not a trusted proxy" in reply.json["error"]["message"]


def test_verdict_is_ignored_when_not_required(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, TVGW_TRUSTED_PROXIES=PROXY)
    client = market_app(settings).test_client()
    reply = _post(client, "FAILED:whatever")
    assert reply.status_code == 200 and reply.json["status"] == "executed", reply.json


def test_requiring_a_certificate_without_a_trusted_proxy_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"TVGW_REQUIRE_CLIENT_CERT.*TVGW_TRUSTED_PROXIES"):
        make_settings(tmp_path, TVGW_REQUIRE_CLIENT_CERT="true")
