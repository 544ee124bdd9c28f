"""The alert messages the bundled scripts build, filled in like TradingView fills them, POSTed to a
running gateway (real gunicorn on loopback): every action the scripts emit is accepted, and a
placeholder TradingView left unfilled gets a 400 that names the field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from engine.exits import ATR_BARS
from pine.render import KINDS, indicator_conditions, render
from storage.alerts import list_alerts
from storage.database import Storage
from tests.conftest import LiveGateway, db_rows, seed_market, start_gateway
from tests.pine.tradingview import (
    PLACEHOLDER,
    SERIES,
    input_scope,
    parse_script,
    placeholder_values,
    substitute,
)

DECIDED = {"executed", "annotated", "rejected"}

#: The slow first parse happens in session setup (tests/pine/conftest.py), before any timestamp.
pytestmark = pytest.mark.usefixtures("parsed_bundled_scripts")


@pytest.fixture
def live_gateway(tmp_path: Path) -> Iterator[LiveGateway]:
    """The gateway, its market at the price the filled-in messages carry (placeholder_values)."""
    gateway = start_gateway(tmp_path, prices={"BTC/USDT": 1800.8})
    yield gateway
    gateway.stop()


def strategy_message(order_id: str, position_before: float, passphrase: str, **inputs: Any) -> str:
    """The alert_message= the bundled strategy builds for ``order_id`` (passphrase and the
    optional-field ``inputs`` as typed in)."""
    script = parse_script((resources.files("pine") / KINDS["strategy"]).read_text(encoding="utf-8"))
    scope = {
        **SERIES,
        **input_scope(script, **inputs),
        "gatewayStrategyId": script.input_default("gatewayStrategyId"),
        "gatewayPassphrase": passphrase,
        "strategy.position_size": position_before,
    }
    (order,) = [o for o in script.order_calls() if o.order_id == order_id]
    return script.evaluate(order.alert_message, scope)


#: The life of one position, as TradingView reports each fill: (order id, position before the
#: order, contracts, position after, market position after, previous market position, action).
LIFECYCLE = [
    ("Long", 0.0, "0.05", "0.05", "long", "flat", "buy"),
    ("Long exit", 0.05, "0.05", "0", "flat", "long", "close_long"),
    ("Short", 0.0, "0.05", "-0.05", "short", "flat", "sell"),
    ("Long", -0.05, "0.1", "0.05", "long", "short", "reverse"),
]


def sizes(before: float, after: str) -> dict[str, str]:
    """TradingView's unsigned {{strategy.market_position_size}} and the previous one."""
    return {"market_position_size": after.lstrip("-"), "prev_market_position_size": f"{abs(before):g}"}


def post(gateway: LiveGateway, text: str) -> tuple[int, dict[str, Any]]:
    """POST as TradingView does: the filled message as the body, Content-Type text/plain."""
    response = gateway.post(text, headers={"Content-Type": "text/plain; charset=utf-8"})
    return response.status_code, response.json()


@pytest.mark.slow
def test_every_strategy_action_is_accepted_by_a_running_gateway(live_gateway: LiveGateway) -> None:
    messages = [strategy_message(step[0], step[1], live_gateway.passphrase) for step in LIFECYCLE]
    # timenow is taken after every slow step (the Pine parse), as TradingView fires just before it posts.
    start = datetime.now(UTC).replace(microsecond=0)
    for step, (order_id, before, contracts, after, market, prev, action) in enumerate(LIFECYCLE):
        message = messages[step]
        values = placeholder_values(
            contracts=contracts,
            position_size=after,
            market_position=market,
            prev_market_position=prev,
            order_id=order_id,
            comment=order_id,
            now=start + timedelta(seconds=step),
            **sizes(before, after),
        )
        body = substitute(message, values)
        assert not PLACEHOLDER.search(body), body
        status, reply = post(live_gateway, body)
        assert status == 200, (action, reply)
        assert reply["status"] in DECIDED, (action, reply)

    stored = list(reversed(list_alerts(Storage(live_gateway.database), limit=10)))
    assert [row["payload"]["action"] for row in stored] == [step[-1] for step in LIFECYCLE]
    first = stored[0]["payload"]
    # Unquoted numbers arrived as numbers, the script's own values as it computed them.
    assert first["price"] == 1800.8000000000002
    assert first["ml_confidence"] == pytest.approx(0.72)
    assert first["technical_score"] == 6
    assert first["ticker"] == "BTCUSDT"
    assert "passphrase" not in first
    assert first["sequence"] == SERIES["bar_index"]
    # Each fill's position before is the one the fill before it left: no order alert is missing.
    said = [(r["payload"]["market_position_size"], r["payload"]["prev_market_position_size"]) for r in stored]
    assert said == [(0.05, 0.0), (0.0, 0.05), (0.05, 0.0), (0.05, 0.05)]
    assert db_rows(live_gateway.database, "SELECT * FROM feed_gaps") == []
    assert len(db_rows(live_gateway.database, "SELECT * FROM feed_marks WHERE kind = 'order'")) == 4


@pytest.mark.slow
def test_indicator_conditions_are_accepted_by_a_running_gateway(
    live_gateway: LiveGateway, tmp_path: Any
) -> None:
    source = render("indicator", passphrase=live_gateway.passphrase).source
    script = parse_script(source)
    plots = {script.evaluate(c.args[1].value, {}): "0.731059" for c in script.calls("plot")}
    plots |= {"Technical score long": "6", "Technical score short": "2", "Sentiment score": "0"}
    plots |= {"Proxy Kelly fraction long": "0.26", "Proxy Kelly fraction short": "-0.117143"}
    plots |= {"Trailing stop (x ATR)": "NaN"}  # the input's default, 0: off
    plots |= {"Alert sequence": "4321", "Previous position size": "0.05"}
    now = datetime.now(UTC).replace(microsecond=0)
    for step, call in enumerate(script.calls("alertcondition")):
        message = script.evaluate(call.args[2].value, {})
        body = substitute(message, placeholder_values(plots=plots, now=now + timedelta(seconds=step)))
        assert not PLACEHOLDER.search(body), body
        status, reply = post(live_gateway, body)
        assert status == 200, (message, reply)
        assert reply["status"] in DECIDED, reply
    assert len(list_alerts(Storage(live_gateway.database), limit=20)) == len(indicator_conditions())


PERPETUAL = "BTC/USDT:USDT"


def seed_bars(gateway: LiveGateway, symbol: str, price: float, count: int = ATR_BARS) -> None:
    """Hourly bars ending at ``price`` that move (so the gateway's ATR, which "1.5atr" needs,
    exists and is not zero), as `tvgw data fetch` would store them."""
    now = datetime.now(UTC).timestamp()
    for back in range(count, 0, -1):
        wiggle = price * (1.004 if back % 2 else 0.996)
        seed_market(gateway.database, {symbol: wiggle}, at=now - back * 3600)
    seed_market(gateway.database, {symbol: price}, at=now)


@pytest.fixture
def perpetual_gateway(tmp_path: Path) -> Iterator[LiveGateway]:
    """The gateway with an hourly history of the BTCUSDT.P perpetual at the messages' price."""
    gateway = start_gateway(tmp_path, prices={"BTC/USDT": 1800.8, PERPETUAL: 1800.8})
    seed_bars(gateway, PERPETUAL, 1800.8)
    yield gateway
    gateway.stop()


PERP_INPUTS = {"trailingStopAtrMult": 1.5, "leverageInput": 3, "marginModeInput": "isolated"}


@pytest.mark.slow
def test_strategy_exit_and_perpetual_inputs_are_accepted_by_a_running_gateway(
    perpetual_gateway: LiveGateway,
) -> None:
    gateway = perpetual_gateway
    entry = strategy_message("Long", 0.0, gateway.passphrase, **PERP_INPUTS)
    now = datetime.now(UTC).replace(microsecond=0)
    values = placeholder_values(now=now) | {"{{ticker}}": "BTCUSDT.P"}
    status, reply = post(gateway, substitute(entry, values))
    assert status == 200, reply
    assert reply["status"] == "executed", reply
    # The engine acted on each field: the order's margin, the exit armed from the alert.
    decision = reply["decision"]
    assert decision["details"]["margin"] == {"leverage": 3.0, "margin_mode": "isolated"}, decision
    assert decision["details"]["exits"]["source"]["trailing_stop"] == "alert", decision
    (stored,) = list_alerts(Storage(gateway.database), limit=10)
    sent = {key: stored["payload"][key] for key in ("trailing_stop", "leverage", "margin_mode")}
    assert sent == {"trailing_stop": "1.5atr", "leverage": 3, "margin_mode": "isolated"}

    # The exit order carries the same inputs; it closes the perpetual position all the same.
    exit_message = strategy_message("Long exit", 0.05, gateway.passphrase, **PERP_INPUTS)
    closing = placeholder_values(
        position_size="0", market_position="flat", prev_market_position="long",
        order_id="Long exit", comment="Long exit", now=now + timedelta(seconds=1), **sizes(0.05, "0"),
    )  # fmt: skip
    status, reply = post(gateway, substitute(exit_message, closing | {"{{ticker}}": "BTCUSDT.P"}))
    assert status == 200, reply
    assert (reply["status"], reply["decision"]["target_position"]) == ("executed", 0.0), reply

    # The same inputs on a spot chart reach the engine, which refuses the leverage: the inputs'
    # defaults (0, strategy default) are what keeps a spot chart's alerts out of this.
    spot = placeholder_values(now=now + timedelta(seconds=2))
    status, reply = post(gateway, substitute(entry, spot))
    assert status == 422, reply
    assert "leverage_on_spot" in json.dumps(reply), reply


def unfilled(message: str, broken: str) -> str:
    """Fill every placeholder but one: ``broken`` stays as TradingView leaves a mistyped one."""
    values = placeholder_values()
    values.pop(broken, None)
    return substitute(message, values)


@pytest.mark.slow
def test_an_unfilled_placeholder_gets_a_400_naming_the_field(live_gateway: LiveGateway) -> None:
    message = strategy_message("Long", 0.0, live_gateway.passphrase)

    # Unquoted (numeric) position: the body is not JSON at all.
    numeric = unfilled(message.replace("{{close}}", '{{plot("x")}}'), '{{plot("x")}}')
    with pytest.raises(json.JSONDecodeError):
        json.loads(numeric)
    status, reply = post(live_gateway, numeric)
    assert status == 400, reply
    assert "'close'" in reply["error"]["message"], reply
    assert '{{plot("x")}}' in reply["error"]["message"], reply

    # Quoted (string) position: valid JSON, but the field holds placeholder text.
    quoted = unfilled(message.replace("{{exchange}}", "{{exchnage}}"), "{{exchnage}}")
    assert json.loads(quoted)["exchange"] == "{{exchnage}}"
    status, reply = post(live_gateway, quoted)
    assert status == 400, reply
    assert "'exchange'" in reply["error"]["message"], reply
    assert "{{exchnage}}" in reply["error"]["message"], reply


@pytest.mark.slow
def test_heartbeats_of_both_scripts_are_accepted_by_a_running_gateway(live_gateway: LiveGateway) -> None:
    """Each script's heartbeat, as its own Pine builds it, is taken by the gateway onto the
    chart's feed; a skipped number comes back as a gap naming the missed bar."""
    from tests.pine.test_continuity_fields import chart, heartbeat

    scripts = {
        "strategy": parse_script((resources.files("pine") / KINDS["strategy"]).read_text(encoding="utf-8")),
        "indicator": parse_script(render("indicator", passphrase=live_gateway.passphrase).source),
    }
    now = datetime.now(UTC).replace(microsecond=0)
    bar = now.replace(second=0) - timedelta(minutes=5)
    for kind, script in scripts.items():
        ticker = {"strategy": "BTCUSDT", "indicator": "ETHUSDT"}[kind]
        answers = []
        for index, minutes in ((100, 0), (102, 2)):  # bar 101's heartbeat never arrives
            scope = chart(
                heartbeatOn=True, heartbeatBars=1, bar_index=index, gatewayPassphrase=live_gateway.passphrase,
                time=int((bar + timedelta(minutes=minutes)).timestamp() * 1000),
                timenow=int(now.timestamp() * 1000), emulatedPosition=0, emulatedSize=0.0,
                **{"syminfo.ticker": ticker, "strategy.position_size": 0.0},  # flat, as the book is
            )  # fmt: skip
            fires, sent = heartbeat(script, scope)
            assert fires
            status, reply = post(live_gateway, json.dumps(sent))
            assert status == 200, (kind, reply)
            answers.append(reply)
        assert [a["status"] for a in answers] == ["heartbeat", "heartbeat"], answers
        assert answers[0]["gaps"] == []
        (gap,) = answers[1]["gaps"]
        missed_bar = (bar + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert (gap["kind"], gap["sequence_from"], gap["bar_time"]) == ("sequence_gap", 101, missed_bar), gap
        assert gap["symbol"] == f"{ticker[:3]}/USDT" and gap["strategy_id"] == "default", gap
