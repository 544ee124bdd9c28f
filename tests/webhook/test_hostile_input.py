"""Every hostile input gets a 4xx and is recorded, and the API survives whatever was stored.

The review's examples first (each answered 500 before), then property-based tests that drive
``/webhook`` and every ``/api`` route with random JSON, random bytes, wrong types, huge and
non-finite numbers and odd unicode."""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import (
    LiveGateway,
    make_settings,
    market_app,
    property_settings,
    sample_alert,
    start_gateway,
)

TOKEN = "api-token-hostile"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROPERTY = property_settings(150)


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    config = make_settings(tmp_path, TVGW_API_TOKEN=TOKEN)
    return {"client": market_app(config).test_client(), "settings": config}


def alert_rows(world: dict[str, Any]) -> int:
    with sqlite3.connect(world["settings"].database) as conn:
        return int(conn.execute("SELECT count(*) FROM alerts").fetchone()[0])


def post(world: dict[str, Any], body: str | bytes) -> Any:
    """Post ``body``; the answer is never 5xx and exactly one row records it."""
    before = alert_rows(world)
    response = world["client"].post("/webhook", data=body, content_type="application/json")
    assert response.status_code < 500, response.data
    assert alert_rows(world) == before + 1, "every webhook request is recorded"
    body_json = response.json
    assert body_json["alert_id"] is not None
    if response.status_code >= 400:
        assert body_json["error"]["message"], "a refusal says what was wrong"
    return response


def api_reads_back(world: dict[str, Any]) -> None:
    for path in ("/api/alerts?limit=1000", "/api/orders", "/api/positions", "/api/accuracy"):
        response = world["client"].get(path, headers=AUTH)
        assert response.status_code == 200, (path, response.data)
    for alert in world["client"].get("/api/alerts?limit=5", headers=AUTH).json:
        assert world["client"].get(f"/api/alerts/{alert['id']}", headers=AUTH).status_code == 200


def raw_alert(**replace: str) -> str:
    """A canonical alert as text with some fields' JSON replaced verbatim."""
    text = json.dumps(sample_alert())
    fields = ", ".join(f'"{k}": {v}' for k, v in replace.items())
    return text[:-1] + ", " + fields + "}" if fields else text


# --- the review's examples ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        raw_alert(contracts="9" * 5000),
        raw_alert(note="-" + "9" * 5000),
        raw_alert(nested='{"deep": [' + "1" * 4400 + "]}"),
        raw_alert(note=str(2**64)),
        raw_alert(note=str(2**63)),
        raw_alert(note=str(-(2**63) - 1)),
    ],
    ids=["5000-digit contracts", "5000-digit unknown field", "nested 4400 digits", "2^64", "2^63", "-2^63-1"],
)
def test_huge_integers_are_refused_with_400(world: dict[str, Any], body: str) -> None:
    response = post(world, body)
    assert response.status_code == 400 and response.json["error"]["code"] == "number_out_of_range"
    assert "9999" not in response.json["error"]["message"]
    api_reads_back(world)


def test_the_largest_integer_that_fits_is_accepted_and_read_back(world: dict[str, Any]) -> None:
    response = post(world, raw_alert(note=str(2**63 - 1), low=str(-(2**63))))
    assert response.status_code == 400  # low is a price: a negative one is a validation error
    response = post(world, raw_alert(note=str(2**63 - 1)))
    assert response.status_code == 200
    api_reads_back(world)
    stored = world["client"].get(f"/api/alerts/{response.json['alert_id']}", headers=AUTH).json
    assert stored["payload"]["extras"]["note"] == 2**63 - 1


@pytest.mark.parametrize(
    "field", ["passphrase", "ticker", "note", "comment"], ids=lambda f: f"lone surrogate in {f}"
)
def test_a_lone_surrogate_is_refused_with_400(world: dict[str, Any], field: str) -> None:
    response = post(world, raw_alert(**{field: '"abc\\ud800"'}))
    assert response.status_code == 400 and response.json["error"]["code"] == "invalid_unicode"
    assert field in response.json["error"]["message"]
    assert post(world, raw_alert(**{"x\\udc00y": "1"})).status_code == 400
    assert post(world, raw_alert(ok='"pair \\ud83d\\ude00"')).status_code == 200  # a proper pair is text
    api_reads_back(world)


@pytest.mark.parametrize("field", ["timenow", "time"])
@pytest.mark.parametrize(
    "value",
    ["1e20", "1e308", "-1e20", "Infinity", "-Infinity", "NaN", '"' + "9" * 30 + '"', '"1e20"', "0", "-5"],
)
def test_impossible_times_are_refused_with_400(world: dict[str, Any], field: str, value: str) -> None:
    response = post(world, raw_alert(**{field: value}))
    assert response.status_code == 400, response.json
    assert response.json["error"]["where"] == field
    api_reads_back(world)


@pytest.mark.parametrize("field", ["price", "contracts", "position_size"])
@pytest.mark.parametrize(
    "value", ['"NaN"', '"nan"', "NaN", '"Infinity"', "Infinity", '"-inf"', "-Infinity", "1e999"]
)
def test_non_finite_numbers_as_text_or_literal_are_refused_naming_the_field(
    world: dict[str, Any], field: str, value: str
) -> None:
    response = post(world, raw_alert(**{field: value}))
    assert response.status_code == 400, response.json
    assert response.json["error"]["code"] == "invalid_alert" and response.json["error"]["where"] == field


def test_nan_in_a_bar_field_still_means_not_given(world: dict[str, Any]) -> None:
    for value in ('"NaN"', "NaN"):
        response = post(world, raw_alert(volume=value))
        assert response.status_code == 200, response.json


@pytest.mark.parametrize(
    "limit", ["²", "١٢", "٣", "1e3", "-1", "0", "1001", "99999999999999999999", " 5", ""]
)
def test_api_limit_must_be_ascii_digits_in_range(world: dict[str, Any], limit: str) -> None:
    response = world["client"].get("/api/alerts", query_string={"limit": limit}, headers=AUTH)
    assert response.status_code == 400 and response.json["error"]["where"] == "limit"


@pytest.mark.parametrize("days", ["nan", "inf", "-1", "0", "1e308", "x", "3651"])
def test_api_days_must_be_a_sane_number(world: dict[str, Any], days: str) -> None:
    response = world["client"].get("/api/accuracy", query_string={"days": days}, headers=AUTH)
    assert response.status_code == 400 and response.json["error"]["where"] == "days"


@pytest.mark.parametrize("alert_id", ["9223372036854775808", "9" * 40, "-1", "1.5", "²"])
def test_api_alert_ids_beyond_any_row_are_404(world: dict[str, Any], alert_id: str) -> None:
    assert world["client"].get(f"/api/alerts/{alert_id}", headers=AUTH).status_code == 404
    assert world["client"].get("/api/alerts/9223372036854775807", headers=AUTH).status_code == 404


# --- property-based: /webhook --------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
def json_containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)


json_values = st.recursive(json_scalars, json_containers, max_leaves=12)
alert_keys = st.sampled_from(
    ["passphrase", "ticker", "symbol", "action", "contracts", "price", "position_size", "market_position",
     "timenow", "time", "interval", "strategy", "strategy_id", "id", "close", "volume", "comment", "bar",
     "extras", "ml_confidence", "kelly_fraction", "exchange", "order_id"]
)  # fmt: skip


def dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=True)  # NaN and Infinity literals, as a careless client sends


@PROPERTY
@given(body=st.dictionaries(alert_keys | st.text(max_size=8), json_values, max_size=8))
def test_random_alert_shaped_json_is_never_a_5xx(world: dict[str, Any], body: dict[str, Any]) -> None:
    post(world, dumps({**sample_alert(), **body}))


@PROPERTY
@given(body=json_values)
def test_random_json_is_never_a_5xx(world: dict[str, Any], body: Any) -> None:
    post(world, dumps(body))


@PROPERTY
@given(body=st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_random_bytes_are_never_a_5xx(world: dict[str, Any], body: bytes) -> None:
    post(world, body)


@pytest.mark.slow
def test_everything_accepted_or_refused_reads_back(world: dict[str, Any]) -> None:
    """After the storms above in one database, every API route still answers."""
    for body in [raw_alert(note=str(2**63 - 1)), raw_alert(note='"\\ud83d\\ude00"'), "\xff\xfe", "[]", "{}"]:
        post(world, body)
    api_reads_back(world)


# --- property-based: /api --------------------------------------------------------------------------

api_paths = st.sampled_from(["/api/alerts", "/api/orders", "/api/positions", "/api/accuracy", "/api/alerts/"])
query_values = st.text(max_size=12) | st.integers().map(str) | st.floats().map(str)


@PROPERTY
@given(
    path=api_paths,
    suffix=st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=25),
    query=st.dictionaries(
        st.sampled_from(["limit", "status", "days", "symbol", "x"]), query_values, max_size=3
    ),
    token=st.sampled_from([TOKEN, "", "wrong"]),
)
def test_random_api_requests_are_never_a_5xx(
    world: dict[str, Any], path: str, suffix: str, query: dict[str, str], token: str
) -> None:
    url = path + (quote(suffix, safe="") if path.endswith("/") else "")
    response = world["client"].get(url, query_string=query, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code < 500, (url, query, response.data)
    assert response.is_json


# --- a real gunicorn: chunked bodies ----------------------------------------------------------------


def chunked_post(gateway: LiveGateway, body: bytes) -> tuple[int, dict[str, Any]]:
    """POST ``body`` with Transfer-Encoding: chunked (no Content-Length), over a raw socket."""
    host, port = gateway.url.removeprefix("http://").split(":")
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 1000]), body[i : i + 1000]) for i in range(0, len(body), 1000)
    )
    request = (
        b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks + b"0\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"chunked" in head.lower():  # the answer itself may be chunked
        size, _, rest = payload.partition(b"\r\n")
        payload = rest[: int(size, 16)]
    return status, json.loads(payload)


@pytest.mark.slow
def test_a_chunked_body_over_the_cap_is_refused_not_cut(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, workers=1, TVGW_MAX_BODY_BYTES="4096")
    try:
        alert = json.dumps(sample_alert()).encode()
        # An alert that would parse if cut at the cap: valid JSON up to byte 4096, padding after.
        padded = alert[:-1] + b', "pad": "' + b"x" * (4096 - len(alert) - 12) + b'"}' + b" " * 5000
        status, body = chunked_post(gateway, padded)
        assert status == 413 and body["error"]["code"] == "too_large", body
        status, body = chunked_post(gateway, alert)
        assert status == 200, body
        exact = alert[:-1] + b', "pad": "' + b"x" * (4096 - len(alert) - 11) + b'"}'
        assert len(exact) == 4096
        status, body = chunked_post(gateway, exact.replace(b'"Long"', b'"Lon2"'))  # not a duplicate
        assert status == 200, body
        with sqlite3.connect(gateway.database) as conn:
            rows = conn.execute("SELECT http_status, error_code FROM alerts ORDER BY id").fetchall()
        assert rows[0] == (413, "too_large") and len(rows) == 3
    finally:
        gateway.stop()
