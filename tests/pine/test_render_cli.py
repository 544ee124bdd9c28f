"""`tvgw pine render` as a user runs it: script on stdout, what to paste on stderr."""

from __future__ import annotations

import pytest

from pine.render import render
from tvgw.cli import main


def test_render_prints_the_strategy_and_the_message_to_paste(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pine", "render", "--strategy", "btc-swing"]) == 0
    out, err = capsys.readouterr()
    assert out == render("strategy", strategy_id="btc-swing").source
    assert "gatewayStrategyId = input.string('btc-swing'" in out
    assert "gatewayPassphrase = input.string(''" in out
    assert "{{strategy.order.alert_message}}" in err
    assert "https://<your-host>/webhook" in err
    assert "warning" not in err


def test_passphrase_env_bakes_the_secret_and_warns(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_TV_SECRET", "s3cret")
    assert main(["pine", "render", "--strategy", "eth", "--passphrase-env", "MY_TV_SECRET"]) == 0
    out, err = capsys.readouterr()
    assert "gatewayPassphrase = input.string('s3cret'" in out
    assert "warning: the rendered script contains the passphrase" in err


def test_indicator_prints_one_message_per_condition(capsys: pytest.CaptureFixture[str]) -> None:
    url = "https://gw.example.com/webhook"
    assert main(["pine", "render", "--kind", "indicator", "--strategy", "eth", "--url", url]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("//@version=5")
    assert "indicator('ML Enhanced Indicator (tvgw)'" in out
    for title in (
        "Long entry",
        "Short entry",
        "Long exit",
        "Short exit",
        "Reverse to long",
        "Reverse to short",
    ):
        assert f"[{title}]" in err
    assert err.count('"strategy_id": "eth"') == 6
    assert f"Webhook URL: {url}" in err


def test_missing_passphrase_variable_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TVGW_NOT_SET_ANYWHERE", raising=False)
    assert main(["pine", "render", "--passphrase-env", "TVGW_NOT_SET_ANYWHERE"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "environment variable TVGW_NOT_SET_ANYWHERE is not set or empty" in err


def test_bad_strategy_id_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pine", "render", "--strategy", "x" * 80]) == 2
    assert "80 characters; the webhook accepts 64" in capsys.readouterr().err
