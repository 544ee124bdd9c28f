"""`tvgw train --ensemble`: the zoo's options on the command line, a real model directory."""

from __future__ import annotations

import json

import pytest

from ml_integration.ensemble import COMPARISON_FILE, EnsemblePricePrediction
from ml_integration.store import latest_version, load_latest_strategy
from tests.ml_integration.zoo_data import one_thread  # noqa: F401 (autouse)
from tvgw.cli import main


@pytest.mark.parametrize(
    ("flags", "named"),
    [(["--smote"], "--smote"), (["--models", "rf"], "--models"), (["--label", "three_class"], "--label")],
)
def test_an_ensemble_option_without_ensemble_is_refused(cli_env, capsys, flags, named):
    assert main(["train", "--symbol", "BTC/USDT", "--synthetic", *flags]) == 2
    assert f"{named} needs --ensemble" in capsys.readouterr().err


def test_an_unknown_model_is_refused_by_name(cli_env, capsys):
    code = main(["train", "--symbol", "BTC/USDT", "--synthetic", "--ensemble", "--models", "rf,forest"])
    assert code == 2
    assert "unknown model 'forest'" in capsys.readouterr().err


@pytest.mark.slow
def test_train_ensemble_prints_and_stores_the_table_and_serves_the_chosen_combiner(cli_env, capsys):
    argv = ["train", "--symbol", "BTC/USDT", "--synthetic", "--days", "60", "--quick", "--no-lstm",
            "--ensemble", "--models", "rf,lr", "--combiner", "soft", "--label", "triple_barrier",
            "--class-weight", "balanced", "--no-progress"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "served combiner: soft" in out and "stacking (combiner)" in out and "logistic_regression" in out
    version = latest_version(cli_env / "models", "BTC/USDT", "1h")
    stored = json.loads((cli_env / "models" / "BTC_USDT_1h" / str(version) / COMPARISON_FILE).read_text())
    assert stored["label"] == "triple_barrier" and stored["chosen_combiner"] == "soft"
    assert {row["name"] for row in stored["table"]} >= {"random_forest", "logistic_regression", "soft"}
    strategy = load_latest_strategy(cli_env / "models", "BTC/USDT", "1h")
    assert isinstance(strategy.predictor, EnsemblePricePrediction)
    assert strategy.predictor.ensemble_.names == ["random_forest", "logistic_regression"]
