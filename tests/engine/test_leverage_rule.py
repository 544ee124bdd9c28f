"""A leverage is a whole number, in an alert and in a strategy's settings alike (one rule,
``engine.alert.whole_leverage``): exchanges take 3, not 2.5, so 2.5 is the sender's or the
operator's clear error naming the field, never a silent rounding."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from engine.alert import Alert
from engine.settings import StrategySettings

ALERT = {"ticker": "BTCUSDT.P", "action": "buy", "order_id": "o1"}


def test_an_alert_takes_a_whole_leverage_and_refuses_a_fraction() -> None:
    assert Alert.model_validate({**ALERT, "leverage": 3}).leverage == 3
    with pytest.raises(ValidationError, match=r"leverage must be a whole number \(1, 2, 3 \.\.\.\), got 2.5"):
        Alert.model_validate({**ALERT, "leverage": 2.5})


def test_a_strategy_takes_a_whole_leverage_and_refuses_a_fraction() -> None:
    secret = "a-long-passphrase"
    assert StrategySettings(id="s", passphrase=secret, leverage=5).leverage == 5
    with pytest.raises(ValidationError, match=r"strategies\.leverage must be a whole number .*got 2.5"):
        StrategySettings(id="s", passphrase=secret, leverage=2.5)
