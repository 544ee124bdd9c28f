"""What the bundled scripts send for alert continuity (issue 20), read from the Pine source with
the real parser: every order alert's sequence number and the strategy's position after and
before it; and the optional heartbeat ``alert()`` at bar close, sent only when its input is on,
at most one per 36 s, with a message the webhook's model accepts."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

from engine.alert import Action, Alert, MarketPosition
from pine.render import HEARTBEAT_MIN_SECONDS, KINDS, indicator_conditions, render
from tests.pine.tradingview import (
    PLACEHOLDER,
    SERIES,
    PineScript,
    input_scope,
    parse_script,
    placeholder_values,
    substitute,
)

pytestmark = pytest.mark.usefixtures("parsed_bundled_scripts")


def bundled(kind: str) -> PineScript:
    return parse_script((resources.files("pine") / KINDS[kind]).read_text(encoding="utf-8"))


def chart(**overrides: Any) -> dict[str, Any]:
    """The chart as the heartbeat sees it at a bar close: a 1-minute BTCUSDT chart, long 0.05."""
    return {
        **SERIES,
        "syminfo.ticker": "BTCUSDT", "syminfo.prefix": "BINANCE", "timeframe.period": "1",
        "timeframe.in_seconds": lambda: 60, "time": 1_714_564_800_000, "timenow": 1_714_564_861_000,
        "barstate.isconfirmed": True, "strategy.position_size": 0.05, "emulatedPosition": 1,
        "emulatedSize": 0.05, "gatewayStrategyId": "default", "gatewayPassphrase": "s3cret-pass",
        **overrides,
    }  # fmt: skip


def heartbeat(script: PineScript, scope: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """(whether the heartbeat alert() runs on this bar, the JSON it sends)."""
    ((call, tests),) = script.guarded_calls("alert")
    scope = {**scope, "tvgwHeartbeatBars": script.evaluate(script.assignment("tvgwHeartbeatBars"), scope)}
    fires = all(script.evaluate(test, scope) for test in tests)
    assert "freq_once_per_bar_close" in str(call.args[1].value.attr)
    message = script.evaluate(call.args[0].value, scope)
    assert not PLACEHOLDER.search(message), "alert() messages get no placeholders: the script fills all"
    return fires, json.loads(message)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_heartbeat_is_off_by_default_and_sent_only_when_switched_on(kind: str) -> None:
    script = bundled(kind)
    assert script.input_default("heartbeatOn") is False
    assert script.input_default("heartbeatBars") == 1
    scope = chart(heartbeatOn=False, heartbeatBars=1)
    assert heartbeat(script, scope)[0] is False
    assert heartbeat(script, {**scope, "heartbeatOn": True})[0] is True
    # Never on a bar still forming (its close is not final), and only every N-th bar.
    assert heartbeat(script, {**scope, "heartbeatOn": True, "barstate.isconfirmed": False})[0] is False
    every_4 = {**scope, "heartbeatOn": True, "heartbeatBars": 4}
    assert [heartbeat(script, {**every_4, "bar_index": n})[0] for n in (4320, 4321, 4322, 4323, 4324)] == [
        True, False, False, False, True,
    ]  # fmt: skip


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize(("bar_seconds", "asked", "spacing"), [(60, 1, 1), (60, 3, 3), (5, 1, 8), (1, 2, 36)])
def test_heartbeats_stay_under_tradingviews_alert_rate_limit(
    kind: str, bar_seconds: int, asked: int, spacing: int
) -> None:
    """TradingView stops a script alert that fires more than 15 times in 3 minutes: heartbeats
    are kept 36 s apart whatever the trader asks, and say so (heartbeat_bars)."""
    script = bundled(kind)
    scope = chart(heartbeatOn=True, heartbeatBars=asked, **{"timeframe.in_seconds": lambda: bar_seconds})
    _, sent = heartbeat(script, {**scope, "bar_index": 0})
    assert sent["heartbeat_bars"] == spacing
    assert spacing * bar_seconds >= HEARTBEAT_MIN_SECONDS  # at most 5 heartbeats in 3 minutes


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_heartbeat_message_is_an_alert_the_webhook_accepts(kind: str) -> None:
    script = bundled(kind)
    _, sent = heartbeat(script, chart(heartbeatOn=True, heartbeatBars=1))
    alert = Alert.model_validate(sent)
    assert alert.action is Action.HEARTBEAT
    assert alert.sequence == SERIES["bar_index"] and alert.heartbeat_bars == 1
    assert (alert.ticker, alert.exchange, alert.interval) == ("BTCUSDT", "BINANCE", "1")
    assert alert.time is not None and alert.time.timestamp() == 1_714_564_800
    assert alert.timenow is not None and alert.timenow.timestamp() == 1_714_564_861
    assert alert.intended_position == pytest.approx(0.05)
    assert alert.extras == {}
    if kind == "strategy":
        assert (alert.strategy_id, alert.passphrase) == ("default", "s3cret-pass")


@pytest.mark.parametrize(
    ("position", "side", "size"), [(0.05, "long", 0.05), (-0.2, "short", 0.2), (0.0, "flat", 0.0)]
)
def test_the_strategy_heartbeat_reports_its_position(position: float, side: str, size: float) -> None:
    scope = chart(heartbeatOn=True, heartbeatBars=1, **{"strategy.position_size": position})
    _, sent = heartbeat(bundled("strategy"), scope)
    assert (sent["market_position"], sent["market_position_size"]) == (side, size)
    assert Alert.model_validate(sent).intended_position == pytest.approx(position)


def test_the_indicator_heartbeat_reports_its_emulated_position_with_the_baked_identity() -> None:
    script = parse_script(render("indicator", strategy_id="eth_1h", passphrase="s3cret-pass").source)
    scope = chart(heartbeatOn=True, heartbeatBars=1, emulatedPosition=-1, emulatedSize=0.3)
    _, sent = heartbeat(script, scope)
    assert (sent["strategy_id"], sent["passphrase"]) == ("eth_1h", "s3cret-pass")
    assert Alert.model_validate(sent).intended_position == pytest.approx(-0.3)


def test_every_strategy_order_alert_carries_its_sequence_and_position_sizes() -> None:
    script = bundled("strategy")
    env = {**SERIES, **input_scope(script), "gatewayStrategyId": "default", "gatewayPassphrase": "x"}
    for order in script.order_calls():
        message = script.evaluate(order.alert_message, {**env, "strategy.position_size": 0.0})
        for name in ("market_position_size", "prev_market_position_size"):
            assert f'"{name}": {{{{strategy.{name}}}}}' in message, order.order_id
        data = json.loads(PLACEHOLDER.sub("0", message))
        assert data["sequence"] == SERIES["bar_index"], order.order_id
        assert "heartbeat_bars" not in data, "a heartbeat's field, not an order's"


def test_a_filled_strategy_alert_says_the_intended_position_after_and_before() -> None:
    script = bundled("strategy")
    env = {**SERIES, **input_scope(script), "gatewayStrategyId": "default", "gatewayPassphrase": "x"}
    (reverse,) = [o for o in script.order_calls() if o.order_id == "Short"]
    message = script.evaluate(reverse.alert_message, {**env, "strategy.position_size": 0.05})
    values = placeholder_values(
        position_size="-0.1", market_position="short", prev_market_position="long",
        market_position_size="0.1", prev_market_position_size="0.05", order_id="Short",
    )  # fmt: skip
    alert = Alert.model_validate(json.loads(substitute(message, values)))
    assert (alert.intended_position, alert.previous_position) == (pytest.approx(-0.1), pytest.approx(0.05))


def test_each_indicator_condition_says_the_position_after_and_before() -> None:
    script = parse_script(render("indicator").source)
    plot_titles = {script.evaluate(c.args[1].value, {}) for c in script.calls("plot")}
    assert {"Alert sequence", "Previous position size"} <= plot_titles
    plots = {title: "0.5" for title in plot_titles}
    plots |= {"Alert sequence": "4321", "Previous position size": "0.25"}
    for call, condition in zip(script.calls("alertcondition"), indicator_conditions(), strict=True):
        message = script.evaluate(call.args[2].value, {})
        alert = Alert.model_validate(json.loads(substitute(message, placeholder_values(plots=plots))))
        assert alert.sequence == 4321, condition.title
        after = {MarketPosition.LONG: 0.5, MarketPosition.SHORT: -0.5, MarketPosition.FLAT: 0.0}
        before = {MarketPosition.LONG: 0.25, MarketPosition.SHORT: -0.25, MarketPosition.FLAT: 0.0}
        assert alert.intended_position == after[condition.market_position], condition.title
        assert alert.previous_position == before[condition.prev_market_position], condition.title
