"""No byte of a configured secret reaches SQLite, a log line, an HTTP answer or the API, whatever
the body looks like (the outside review's examples, then a few hundred generated hostile bodies)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import make_settings, market_app, property_settings, sample_alert

SECRET = "s3cret-Pa55word"
#: A second strategy's secret with characters JSON must escape: it must be found in both forms.
QUOTED_SECRET = 'sw"ing\\key/42'
TOKEN = "api-TOKEN-9f8e7d"
SECRETS = (SECRET, QUOTED_SECRET, TOKEN)

PROPERTY = property_settings(150)


@pytest.fixture
def world(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[dict[str, Any]]:
    caplog.set_level(logging.DEBUG)
    config = make_settings(
        tmp_path,
        {"strategies": {"swing": {"passphrase": QUOTED_SECRET, "mode": "annotate"}}},
        TVGW_PASSPHRASE=SECRET,
        TVGW_API_TOKEN=TOKEN,
        TVGW_LOG_LEVEL="DEBUG",
    )
    app = market_app(config)
    answers: list[bytes] = []
    yield {"client": app.test_client(), "settings": config, "answers": answers, "caplog": caplog}


def post(world: dict[str, Any], body: str | bytes) -> Any:
    response = world["client"].post("/webhook", data=body, content_type="text/plain")
    world["answers"].append(response.data)
    assert response.status_code < 500, response.data
    return response


def forms(secret: str) -> list[bytes]:
    """How a secret could appear in a file or an answer: as itself, JSON-escaped, UTF-16 never
    (SQLite stores UTF-8)."""
    return [secret.encode(), json.dumps(secret)[1:-1].encode()]


def assert_no_secret_anywhere(world: dict[str, Any]) -> None:
    api = world["client"].get("/api/alerts?limit=1000", headers={"Authorization": f"Bearer {TOKEN}"})
    assert api.status_code == 200
    for alert in api.json[:3]:
        one = world["client"].get(f"/api/alerts/{alert['id']}", headers={"Authorization": f"Bearer {TOKEN}"})
        world["answers"].append(one.data)
    database = Path(world["settings"].database)
    files = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    logs = "\n".join(r.getMessage() + (r.exc_text or "") for r in world["caplog"].records).encode(
        "utf-8", "surrogatepass"
    )
    places = {"database": files, "logs": logs, "answers": b"\n".join([*world["answers"], api.data])}
    for secret in SECRETS:
        for form in forms(secret):
            for place, content in places.items():
                assert form not in content, f"{secret!r} found in the {place}"


# --- the review's examples -----------------------------------------------------------------------


REVIEW_BODIES = [
    # a JSON syntax error right beside the passphrase
    '{"passphrase":"' + SECRET + '" "ticker":"BTCUSDT","action":"buy"}',
    '{"passphrase":"' + SECRET + '",, "ticker":"BTCUSDT"}',
    '{"ticker":"BTCUSDT", "passphrase":"' + SECRET + '"',
    # a JSON-escaped key, in valid and invalid JSON
    '{"pass\\u0070hrase":"' + SECRET + '","ticker":"BTCUSDT","action":"buy"}',
    '{"pass\\u0070hrase":"' + SECRET + '" "ticker":"BTCUSDT"}',
    # the secret itself escaped
    '{"passphrase":"s3\\u0063ret-Pa55word" "ticker":"BTCUSDT"}',
    # single-quoted pseudo-JSON and bare key=value text
    "{'passphrase':'" + SECRET + "','ticker':'BTCUSDT','action':'buy'}",
    "passphrase=" + SECRET + "&ticker=BTCUSDT&action=buy",
    # the secret in another field: refused, and the field is named, not the value
    json.dumps({**sample_alert(passphrase=SECRET), "comment": "key " + SECRET}),
    json.dumps({**sample_alert(passphrase=SECRET), "ticker": SECRET}),
    json.dumps({**sample_alert(passphrase=SECRET), "note": {"deep": [SECRET]}}),
    json.dumps({**sample_alert(passphrase=SECRET), SECRET: 1}),
    # the other strategy's secret (with quotes and a backslash), valid and broken
    json.dumps(sample_alert(strategy_id="swing", passphrase=QUOTED_SECRET)),
    json.dumps(sample_alert(strategy_id="swing", passphrase=QUOTED_SECRET))[:-1] + ",}",
    # the API token and a wrong-but-close passphrase
    json.dumps(sample_alert(passphrase=TOKEN)),
    json.dumps(sample_alert(passphrase=SECRET + "x")),
    # lone surrogates and huge numbers next to the secret
    '{"passphrase":"' + SECRET + '","ticker":"\\ud800","action":"buy"}',
    '{"passphrase":"' + SECRET + '","contracts":' + "9" * 5000 + "}",
]


def test_review_examples_leak_nothing(world: dict[str, Any]) -> None:
    for body in REVIEW_BODIES:
        post(world, body)
    misplaced = post(world, json.dumps({**sample_alert(passphrase=SECRET), "comment": "key " + SECRET}))
    assert misplaced.status_code == 400 and misplaced.json["error"]["code"] == "secret_in_alert"
    assert "comment" in misplaced.json["error"]["message"]
    assert_no_secret_anywhere(world)


def test_the_stored_cut_never_lands_inside_a_secret(world: dict[str, Any]) -> None:
    """A refused body is kept up to 8 KiB: a secret straddling that boundary is scrubbed before
    the cut, in valid and in broken JSON."""
    for shift in range(-len(SECRET) - 12, 4):
        pad = "x" * (8192 + shift - len('{"pad":"", "passphrase":"'))
        post(world, '{"pad":"' + pad + '", "passphrase":"' + SECRET + '" oops}')
        post(world, '{"pad":"' + pad + '", "ticker":"' + SECRET + '", "action": "fly"}')
    assert_no_secret_anywhere(world)


def test_error_messages_name_the_position_not_the_text(world: dict[str, Any]) -> None:
    response = post(world, '{"ticker":"BTCUSDT" "comment":"private words"}')
    error = response.json["error"]
    assert error["code"] == "invalid_json" and "line 1 column 21" in error["where"]
    assert "private" not in error["message"] and "BTCUSDT" not in error["message"]


def test_a_wrong_passphrase_is_masked_in_the_record(world: dict[str, Any]) -> None:
    response = post(world, '{"passphrase":"almost-the-secret" "ticker":"BTCUSDT"}')
    api = world["client"].get(
        f"/api/alerts/{response.json['alert_id']}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert "almost-the-secret" not in api.get_data(as_text=True)
    assert '"passphrase":"***"' in api.json["payload"]["raw"]


# --- generated hostile bodies --------------------------------------------------------------------

secret_keys = st.sampled_from(
    [
        '"passphrase"',
        '"pass\\u0070hrase"',
        '"Passphrase"',
        '"secret"',
        "'passphrase'",
        "passphrase",
        '"PASSPHRASE"',
    ]
)
secret_values = st.sampled_from(
    [
        f'"{SECRET}"',
        f"'{SECRET}'",
        SECRET,
        '"' + "".join(f"\\u{ord(c):04x}" if i % 3 == 0 else c for i, c in enumerate(SECRET)) + '"',
        json.dumps(QUOTED_SECRET),
        json.dumps(TOKEN),
    ]
)
junk = st.text(alphabet=st.sampled_from(list("{}[]\",:' \\x0123\n\t")), max_size=6)
fields = st.lists(
    st.sampled_from(
        [
            '"ticker":"BTCUSDT"',
            '"action":"buy"',
            '"contracts":1',
            '"price":30000',
            '"interval":"60"',
            "{{close}}",
        ]
    ),
    max_size=4,
)


@st.composite
def hostile_bodies(draw: st.DrawFn) -> str:
    parts = [*draw(fields), f"{draw(secret_keys)}{draw(junk)}:{draw(junk)}{draw(secret_values)}"]
    parts = draw(st.permutations(parts))
    body = "{" + draw(junk).join(parts) + draw(junk) + "}"
    if draw(st.booleans()):  # the body may be cut anywhere, as a client's retry might send it
        body = body[: draw(st.integers(min_value=0, max_value=len(body)))]
    return body


@PROPERTY
@given(body=hostile_bodies())
def test_hostile_bodies_built_around_a_secret_leak_nothing(world: dict[str, Any], body: str) -> None:
    post(world, body)
    assert_no_secret_anywhere(world)


def short_lists(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=3)


@PROPERTY
@given(
    alert=st.fixed_dictionaries(
        {"passphrase": st.sampled_from([SECRET, QUOTED_SECRET, TOKEN, "nope"])},
        optional={
            "ticker": st.sampled_from(["BTCUSDT", SECRET, "ETH" + TOKEN]),
            "action": st.sampled_from(["buy", "sell", QUOTED_SECRET, 3]),
            "strategy": st.sampled_from(["swing", "default", SECRET]),
            "comment": st.text(max_size=20).map(lambda t: t + SECRET),
            "extra": st.recursive(st.sampled_from([SECRET, 1, None]), short_lists),
        },
    )
)
def test_valid_json_with_secrets_in_any_field_leaks_nothing(
    world: dict[str, Any], alert: dict[str, Any]
) -> None:
    post(world, json.dumps(alert))
    assert_no_secret_anywhere(world)


# --- the masks: order, escaped forms and the cut, on the Redactor itself ----------------------

#: Each secret holds the one before it: masking any of them before a longer one would cut the
#: longer one apart and leave its edges readable. A chain of five has 120 orders; only
#: longest-first masks every one whole.
NESTED = ("k9Vq2wX", "Ak9Vq2wXz", "BAk9Vq2wXzy", 'C"BAk9Vq2wXzy\\x', 'DC"BAk9Vq2wXzy\\xw')


@pytest.mark.parametrize("order", [NESTED, NESTED[::-1], NESTED[2:] + NESTED[:2]])
def test_a_secret_holding_another_is_masked_whole_in_any_order(order: tuple[str, ...]) -> None:
    from webhook.redaction import MASK, Redactor

    redactor = Redactor(order)
    for secret in NESTED:
        assert redactor.text(f"<{secret}>") == f"<{MASK}>"
        # serialised (its quote and backslash escaped), as in a stored row or a raw body
        assert redactor.text(json.dumps({"note": f"<{secret}>"})) == json.dumps({"note": f"<{MASK}>"})
        assert redactor.value({"note": [f"<{secret}>"]}) == {"note": [f"<{MASK}>"]}


def test_a_secret_s_json_escaped_form_is_masked() -> None:
    from webhook.redaction import MASK, Redactor

    redactor = Redactor([QUOTED_SECRET])
    serialised = json.dumps({"comment": QUOTED_SECRET})
    assert QUOTED_SECRET not in serialised  # only its escaped form is there
    assert redactor.text(serialised) == json.dumps({"comment": MASK})
    assert redactor.answer({"comment": QUOTED_SECRET}) == {"comment": MASK}


@pytest.mark.parametrize("broken", [False, True], ids=["parsed", "raw"])
def test_the_cut_never_keeps_part_of_a_secret(broken: bool) -> None:
    """A refused body is kept to a limit, and the cut is made after masking: for every position
    of the limit across a secret (in a field that is not secret-named), what is kept is exactly
    the masked text cut there, never the secret's first characters."""
    from webhook.redaction import MASK, Redactor

    redactor = Redactor([SECRET])
    head = '{"comment":"' + "x" * 40
    for limit in range(len(head) - 2, len(head) + len(SECRET) + 2):
        body = head + SECRET + '", "ticker":"BTCUSDT"' + ("" if broken else "}")
        if broken:
            kept = redactor.raw_body(body.encode(), limit)["raw"]
            whole = body.replace(SECRET, MASK)
        else:
            kept = redactor.body(json.loads(body), limit)["raw"]
            whole = json.dumps({"comment": "x" * 40 + MASK, "ticker": "BTCUSDT"}, separators=(",", ":"))
        assert kept == whole[:limit], limit
        assert not any(SECRET[:n] in kept for n in range(3, len(SECRET) + 1)), limit
