"""The bundled Pine scripts: they parse, they are what the renderer makes, and the alert JSON they
build matches the webhook's model (engine.alert.Alert), checked from the Pine source itself."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest
from pynescript import ast

from engine.alert import Action, Alert
from engine.exits import Level, parse_level
from pine.render import KINDS, NOT_SENT, RenderError, indicator_conditions, message_fields, render
from tests.pine.tradingview import (
    PLACEHOLDER,
    SERIES,
    input_scope,
    parse_script,
    placeholder_values,
    substitute,
)

#: The alert fields the scripts send only when the trader sets their input.
OPTIONAL = {"trailing_stop", "leverage", "margin_mode"}

ENTRY_ACTIONS = {"buy", "sell", "reverse"}

#: The slow first parse happens in session setup (tests/pine/conftest.py), before any timestamp.
pytestmark = pytest.mark.usefixtures("parsed_bundled_scripts")


def bundled(kind: str) -> str:
    return (resources.files("pine") / KINDS[kind]).read_text(encoding="utf-8")


def placeholder_fields() -> dict[str, str]:
    """Fields of Alert that carry a TradingView placeholder, and the placeholder."""
    out = {}
    for name, info in Alert.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get("placeholder"):
            out[name] = str(extra["placeholder"])
    return out


def strategy_messages(
    source: str, passphrase: str | None = None, **inputs: Any
) -> dict[tuple[str, float], str]:
    """(order id, position size when called) → the alert JSON the Pine source builds for it, with
    the optional-field ``inputs`` as the trader set them (their defaults otherwise)."""
    script = parse_script(source)
    env = {
        **SERIES,
        **input_scope(script, **inputs),
        "gatewayStrategyId": script.input_default("gatewayStrategyId"),
        "gatewayPassphrase": script.input_default("gatewayPassphrase") if passphrase is None else passphrase,
    }
    messages = {}
    for order in script.order_calls():
        assert order.alert_message is not None, f"{order.function}({order.order_id!r}) has no alert_message="
        for position in (-0.05, 0.0, 0.05):
            scope = {**env, "strategy.position_size": position}
            messages[(order.order_id, position)] = script.evaluate(order.alert_message, scope)
    return messages


def as_json_with_dummy_placeholders(message: str) -> dict:
    """The message parsed as JSON once every placeholder is replaced by a JSON-safe token."""
    return json.loads(PLACEHOLDER.sub("0", message))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_bundled_script_parses_with_pynescript(kind: str) -> None:
    tree = parse_script(bundled(kind)).tree
    assert tree.annotations == ["//@version=5"]
    declaration = tree.body[0].value
    assert ast.dump(declaration.func) == ast.dump(ast.Name(id=kind, ctx=ast.Load()))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_bundled_script_is_what_render_produces_for_the_default_strategy(kind: str) -> None:
    assert render(kind).source == bundled(kind), (
        f"pine/{KINDS[kind]} differs from `tvgw pine render --kind {kind}`: run `python -m pine`"
    )


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize(
    ("strategy_id", "passphrase"),
    [("btc-swing", ""), ("eth_1h", "s3cret"), ("quote'and\\slash", "pa\"ss'wo\\rd")],
)
def test_every_rendered_variant_parses(kind: str, strategy_id: str, passphrase: str) -> None:
    source = render(kind, strategy_id=strategy_id, passphrase=passphrase).source
    script = parse_script(source)  # raises pynescript's SyntaxError if the Pine is broken
    assert script.tree.body
    if kind == "strategy":
        assert script.input_default("gatewayStrategyId") == strategy_id
        assert script.input_default("gatewayPassphrase") == passphrase


def test_the_proxy_model_is_identical_in_strategy_and_indicator() -> None:
    def shared(text: str) -> str:
        start = text.index("// <tvgw:shared proxy-model>")
        return text[start : text.index("// </tvgw:shared proxy-model>")]

    assert shared(bundled("strategy")) == shared(bundled("indicator"))


def test_every_alert_field_is_sent_or_deliberately_left_out() -> None:
    for kind in KINDS:
        sent = {f.name for f in message_fields(kind)}
        assert not sent & set(NOT_SENT), kind
        missing = set(Alert.model_fields) - sent - set(NOT_SENT)
        if kind == "strategy":
            assert missing == set(), f"strategy alert JSON lacks {missing}"
        else:
            # Indicators have no strategy.* placeholders; these have no indicator equivalent. Its
            # constant messages leave exits to the gateway's strategy settings.
            # Nor can they leave leverage and margin mode out on a spot chart.
            assert missing == {
                "position_size", "order_id", "comment", "stop_loss", "take_profit", "leverage", "margin_mode"
            }  # fmt: skip


def test_strategy_messages_carry_every_placeholder_field_and_no_unknown_key() -> None:
    expected = placeholder_fields()
    messages = strategy_messages(bundled("strategy"), passphrase="test-secret")
    assert {order_id for order_id, _ in messages} == {"Long", "Short", "Long exit", "Short exit"}
    for (order_id, _), message in messages.items():
        data = as_json_with_dummy_placeholders(message)
        assert set(data) <= set(Alert.model_fields) - set(NOT_SENT), f"{order_id}: unknown keys"
        for name, placeholder in expected.items():
            assert name in data, f"{order_id}: {name} missing"
            if name != "action":  # fixed per order call, see below
                quoted = f'"{name}": "{placeholder}"'
                unquoted = f'"{name}": {placeholder}'
                assert quoted in message or unquoted in message, f"{order_id}: {name} not {placeholder}"
        Action(data["action"])  # a value the webhook accepts


def test_numbers_are_unquoted_and_strings_quoted() -> None:
    message = strategy_messages(bundled("strategy"))[("Long", 0.0)]
    assert '"price": {{strategy.order.price}}' in message
    assert '"contracts": {{strategy.order.contracts}}' in message
    assert '"ticker": "{{ticker}}"' in message
    assert '"timenow": "{{timenow}}"' in message
    data = as_json_with_dummy_placeholders(message)
    assert data["ml_confidence"] == pytest.approx(0.72)
    assert data["technical_score"] == 6


def test_each_order_fixes_its_action() -> None:
    messages = strategy_messages(bundled("strategy"))
    actions = {key: as_json_with_dummy_placeholders(m)["action"] for key, m in messages.items()}
    assert actions[("Long", 0.0)] == "buy"
    assert actions[("Long", -0.05)] == "reverse"
    assert actions[("Short", 0.0)] == "sell"
    assert actions[("Short", 0.05)] == "reverse"
    assert actions[("Long exit", 0.05)] == "close_long"
    assert actions[("Short exit", -0.05)] == "close_short"


def test_passphrase_with_quotes_stays_valid_json() -> None:
    tricky = 'a"b\\c'
    message = strategy_messages(bundled("strategy"), passphrase=tricky)[("Long", 0.0)]
    assert as_json_with_dummy_placeholders(message)["passphrase"] == tricky


def test_indicator_alertconditions_match_the_model_and_its_plots() -> None:
    source = render("indicator", strategy_id="eth_1h", passphrase="s3cret").source
    script = parse_script(source)
    plot_titles = {script.evaluate(call.args[1].value, {}) for call in script.calls("plot")}
    conditions = script.calls("alertcondition")
    assert [script.evaluate(c.args[1].value, {}) for c in conditions] == [
        c.title for c in indicator_conditions()
    ]
    allowed = set(Alert.model_fields) - set(NOT_SENT)
    for call, condition in zip(conditions, indicator_conditions(), strict=True):
        assert dotted_name(call.args[0].value) == condition.variable
        message = script.evaluate(call.args[2].value, {})
        for placeholder in PLACEHOLDER.findall(message):
            assert not placeholder.startswith("{{strategy."), "strategy placeholders are empty in indicators"
            if placeholder.startswith("{{plot("):
                assert placeholder[8:-4] in plot_titles, f"{placeholder} names no plot of the indicator"
        data = json.loads(substitute(message, {p: "1" for p in PLACEHOLDER.findall(message)}))
        assert set(data) <= allowed
        assert data["strategy_id"] == "eth_1h"
        assert data["passphrase"] == "s3cret"
        assert data["action"] == condition.action.value
        assert ("contracts" in data) == (data["action"] in ENTRY_ACTIONS)
        assert not {"leverage", "margin_mode"} & set(data), "a spot chart's alert would be refused"


def test_optional_inputs_default_to_off_and_send_nothing() -> None:
    script = parse_script(bundled("strategy"))
    assert input_scope(script) == {
        "trailingStopAtrMult": 0.0,
        "leverageInput": 0,
        "marginModeInput": "strategy default",
    }
    for key, message in strategy_messages(bundled("strategy")).items():
        data = as_json_with_dummy_placeholders(message)
        assert not OPTIONAL & set(data), f"{key}: an optional field is sent although its input is off"


@pytest.mark.parametrize(
    ("inputs", "field", "sent"),
    [
        ({"trailingStopAtrMult": 1.5}, "trailing_stop", "1.5atr"),
        ({"trailingStopAtrMult": 0.25}, "trailing_stop", "0.25atr"),
        ({"leverageInput": 3}, "leverage", 3),
        ({"leverageInput": 1}, "leverage", 1),
        ({"marginModeInput": "isolated"}, "margin_mode", "isolated"),
        ({"marginModeInput": "cross"}, "margin_mode", "cross"),
    ],
)
def test_each_optional_field_is_sent_only_when_its_input_is_set(
    inputs: dict[str, Any], field: str, sent: object
) -> None:
    messages = strategy_messages(bundled("strategy"), **inputs)
    for key, message in messages.items():
        data = as_json_with_dummy_placeholders(message)
        assert OPTIONAL & set(data) == {field}, key
        assert data[field] == sent, key
    if field == "trailing_stop":
        # The gateway's own parser reads it as an ATR multiple, not a price or a percent.
        assert parse_level(field, sent) == Level(float(inputs["trailingStopAtrMult"]), "atr")


def test_all_optional_fields_together_validate_as_an_alert_on_a_perpetual() -> None:
    message = strategy_messages(
        bundled("strategy"), trailingStopAtrMult=1.5, leverageInput=3, marginModeInput="isolated"
    )[("Long", 0.0)]
    values = placeholder_values(plots=None) | {"{{ticker}}": "BTCUSDT.P"}
    alert = Alert.model_validate(json.loads(substitute(message, values)))
    assert (alert.trailing_stop, alert.leverage, alert.margin_mode) == ("1.5atr", 3, "isolated")
    assert alert.extras == {}


@pytest.mark.parametrize(("plotted", "expected"), [("NaN", None), ("1.5", "1.5atr")])
def test_indicator_trailing_stop_travels_through_its_plot(plotted: str, expected: str | None) -> None:
    """Constant messages cannot drop the key: a plot that is na while the input is 0 prints NaN,
    which the gateway reads as "no trailing stop"."""
    script = parse_script(bundled("indicator"))
    assert input_scope(script) == {"trailingStopAtrMult": 0.0}
    plots = {script.evaluate(c.args[1].value, {}): "0.5" for c in script.calls("plot")}
    plots["Trailing stop (x ATR)"] = plotted
    plots["Alert sequence"] = "12"  # the bar index: a whole number
    for call in script.calls("alertcondition"):
        message = script.evaluate(call.args[2].value, {})
        assert '"trailing_stop": "{{plot("Trailing stop (x ATR)")}}atr"' in message
        alert = Alert.model_validate(json.loads(substitute(message, placeholder_values(plots=plots))))
        assert alert.trailing_stop == expected
        assert alert.leverage is None and alert.margin_mode is None


def dotted_name(node: object) -> str:
    assert isinstance(node, ast.Name), ast.dump(node)
    return node.id


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy_id": ""}, "strategy id must not be empty"),
        ({"strategy_id": "x" * 65}, "65 characters; the webhook accepts 64"),
        ({"strategy_id": "a\nb"}, "control character"),
        ({"passphrase": "{{ticker}}"}, "placeholder"),
        ({"webhook_url": "gw.example.com/webhook"}, "not an http(s) URL"),
    ],
)
def test_bad_render_input_is_refused_with_a_reason(kwargs: dict, message: str) -> None:
    with pytest.raises(RenderError, match=message.replace("(", r"\(").replace(")", r"\)")):
        render("strategy", **kwargs)


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(RenderError, match="unknown script kind 'library'"):
        render("library")


def test_url_warnings() -> None:
    assert render(webhook_url="https://gw.example.com/webhook").warnings == []
    warnings = render(webhook_url="http://gw.example.com:8080/webhook").warnings
    assert any("plain http" in w for w in warnings)
    assert any("ports 80 and 443" in w for w in warnings)


@pytest.mark.slow  # a real parse of a new source: the ANTLR warm-up when nothing was parsed yet
def test_the_parser_check_can_fail() -> None:
    """Guards the parse tests above: pynescript does reject a broken script."""
    source = render("strategy").source.replace("    message + '}'", "    message + '}", 1)
    with pytest.raises(ast.SyntaxError):
        ast.parse(source)
