"""`tvgw schema --markdown`: the documentation's field table, made from the alert model."""

from __future__ import annotations

import pytest

from engine.alert import Alert
from pine.field_table import alert_field_table
from tvgw.cli import main


def test_one_row_per_alert_field_with_its_placeholder(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| field | type | required | TradingView placeholder | meaning |"
    fields = [name for name in Alert.model_fields if name != "extras"]
    assert [line.split(" | ")[0].removeprefix("| `").removesuffix("`") for line in lines[2:]] == fields
    rows = {row["field"]: row for row in alert_field_table()}
    assert rows["ticker"] == {
        "field": "ticker", "type": "str", "required": "yes", "placeholder": "{{ticker}}",
        "description": Alert.model_fields["ticker"].description,
    }  # fmt: skip
    assert "| `price` | float or None | no | `{{strategy.order.price}}` |" in "\n".join(lines)


def test_types_read_as_words_not_python() -> None:
    types = {row["field"]: row["type"] for row in alert_field_table()}
    assert types["margin_mode"] == "isolated or cross or None"
    assert types["timenow"] == "datetime or None"
    assert types["market_position"] == "MarketPosition or None"
    assert not [t for t in types.values() if "typing" in t or "<class" in t or "Literal" in t]
