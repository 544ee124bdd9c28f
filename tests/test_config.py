"""The one configuration loader: defaults, TVGW_* variables, the TOML file, clear failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from settings import TRADINGVIEW_IPS, ConfigError, exchange_credentials, load_settings
from tests.conftest import make_settings


def test_defaults_need_only_a_passphrase() -> None:
    settings = load_settings(environ={"TVGW_PASSPHRASE": "s-secret-1"})
    assert settings.broker == "paper" and settings.strategy(None).passphrase == "s-secret-1"  # type: ignore[union-attr]
    assert set(TRADINGVIEW_IPS) <= set(settings.allowed_ips)


def test_no_passphrase_stops_start_up() -> None:
    with pytest.raises(ConfigError, match="TVGW_PASSPHRASE"):
        load_settings(environ={})


def test_a_short_passphrase_stops_start_up_without_echoing_it() -> None:
    with pytest.raises(ConfigError, match="TVGW_PASSPHRASE: String should have at least 8") as raised:
        load_settings(environ={"TVGW_PASSPHRASE": "short7!"})
    assert "short7!" not in str(raised.value)
    assert load_settings(environ={"TVGW_PASSPHRASE": "eight-ch"}).strategy(None) is not None


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TVGW_MAX_LAG_SECONDS", "soon"),
        ("TVGW_SANDBOX", "maybe"),
        ("TVGW_ALLOWED_IPS", "10.0.0.300"),
        ("TVGW_STRATEGY_MODE", "yolo"),
        ("TVGW_SQLITE_SYNCHRONOUS", "sometimes"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_settings(environ={"TVGW_PASSPHRASE": "s-secret-1", variable: value})


def test_address_keywords_expand() -> None:
    settings = load_settings(
        environ={"TVGW_PASSPHRASE": "s-secret-1", "TVGW_ALLOWED_IPS": "tradingview, 10.0.0.0/8"}
    )
    assert settings.allowed_ips == (*TRADINGVIEW_IPS, "10.0.0.0/8")
    assert (
        load_settings(environ={"TVGW_PASSPHRASE": "s-secret-1", "TVGW_ALLOWED_IPS": "any"}).allowed_ips == ()
    )


def test_toml_strategies_with_secrets_from_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "tvgw.toml"
    config.write_text(
        '[strategies.swing]\npassphrase = "file-secret"\nmode = "ml_gate"\n[risk]\nmax_open_positions = 2\n'
    )
    settings = load_settings(environ={"TVGW_CONFIG": str(config), "TVGW_PASSPHRASE_SWING": "env-secret"})
    assert (
        settings.strategies["swing"].passphrase == "env-secret"
        and settings.strategies["swing"].mode == "ml_gate"
    )
    assert settings.risk.max_open_positions == 2
    config.write_text("[strategies.swing\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(environ={"TVGW_CONFIG": str(config)})


def test_exchange_credentials_come_from_the_environment_only() -> None:
    env = {"TVGW_BINANCE_API_KEY": "k", "TVGW_BINANCE_SECRET": "s", "TVGW_KRAKEN_API_KEY": "other"}
    assert exchange_credentials("binance", env) == {"apiKey": "k", "secret": "s"}


def test_an_api_token_that_cannot_be_sent_as_a_bearer_token_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TVGW_API_TOKEN") as caught:
        make_settings(tmp_path, TVGW_API_TOKEN="two words")
    assert "two words" not in str(caught.value)  # a bad secret is still a secret
    assert make_settings(tmp_path, TVGW_API_TOKEN="aZ0-._~+/==").api_token == "aZ0-._~+/=="


def test_a_postgresql_url_is_kept_as_written_and_a_path_as_text() -> None:
    url = "postgresql://tvgw:pw@db.internal:5432/tvgw?options=-csearch_path%3Dgw"
    settings = load_settings(environ={"TVGW_PASSPHRASE": "s-secret-1", "TVGW_DATABASE": url})
    assert settings.database == url  # a Path would have folded "//"
    from_code = load_settings({"database": Path("/var/x.sqlite")}, environ={"TVGW_PASSPHRASE": "s-secret-1"})
    assert from_code.database == "/var/x.sqlite"


def test_retention_shorter_than_what_the_gateway_reads_is_refused() -> None:
    env = {"TVGW_PASSPHRASE": "s-secret-1"}
    with pytest.raises(ConfigError, match=r"TVGW_RETAIN_PREDICTIONS_DAYS=10 days .* at least 30 days"):
        load_settings(environ={**env, "TVGW_RETAIN_PREDICTIONS_DAYS": "10"})
    with pytest.raises(ConfigError, match="at least 45 days"):  # the drift window reads further back
        load_settings({"drift_window_days": 45.0}, environ={**env, "TVGW_RETAIN_PREDICTIONS_DAYS": "40"})
    with pytest.raises(ConfigError, match="TVGW_RETAIN_EQUITY_DAYS"):
        load_settings(environ={**env, "TVGW_RETAIN_EQUITY_DAYS": "1"})
    with pytest.raises(ConfigError, match=r"TVGW_RETAIN_FEED_MARKS_DAYS=3 days .* at least 7 days"):
        load_settings(environ={**env, "TVGW_RETAIN_FEED_MARKS_DAYS": "3"})  # the daily summary's week
    kept = load_settings(environ={**env, "TVGW_RETAIN_ALERT_BODIES_DAYS": "0", "TVGW_PRUNE_INTERVAL_S": "60"})
    assert kept.retention.policy().alert_bodies_days == 0 and kept.retention.prune_interval_s == 60
    marks = load_settings(environ={**env, "TVGW_RETAIN_FEED_MARKS_DAYS": "14"})
    assert marks.retention.policy().feed_marks_days == 14
