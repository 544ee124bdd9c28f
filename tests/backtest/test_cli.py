"""`tvgw backtest` and `tvgw evaluate` end to end: real files in, report and JSON out."""

from __future__ import annotations

import json

import pytest

from ml_integration.candles import frame_to_rows
from ml_integration.store import model_key
from ml_integration.synthetic import synthetic_candles
from tests.backtest.conftest import backtest_argv
from tests.conftest import shared_candle_file
from tvgw.cli import main


@pytest.mark.slow
def test_backtest_command_writes_report_and_summary_from_a_csv(cli_env, capsys):
    # 75 days: two 14-day test windows after the 40-day training one (every arm, each window)
    frame = synthetic_candles(1800, seed=8, n_gaps=0)
    csv = cli_env / "candles.csv"
    frame.rename_axis("time").reset_index().to_csv(csv, index=False)
    code = main(
        [
            "backtest",
            "--symbol",
            "BTC/USDT",
            "--data",
            str(csv),
            "--train-window",
            "40d",
            "--test-window",
            "14d",
            "--no-lstm",
            "--quick",
            "--mode",
            "ml_gate",
            "--jobs",
            "2",
            "--no-progress",
            "--report",
            str(cli_env / "out" / "report.html"),
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    summary = json.loads((cli_env / "out" / "report.json").read_text())
    assert (
        set(summary["trading"]) == {"buy_and_hold", "pine", "baseline", "ml"} and summary["mode"] == "ml_gate"
    )
    assert len(summary["windows"]) == 2
    assert (cli_env / "out" / "report.html").stat().st_size > 1_000_000  # plotly inlined
    assert "Rules + full ML strategy (ml_gate)" in out.out and "report " in out.out


def test_evaluate_scores_a_saved_model_out_of_sample(cli_env, model_store, capsys):
    """The suite's tiny model (trained on seed-7 candles) scored on later candles of another seed."""
    frame = synthetic_candles(900, seed=9, n_gaps=0, start="2024-06-01")
    (cli_env / "new.json").write_text(json.dumps(frame_to_rows(frame)))
    model = model_store / model_key("BTC/USDT", "1h") / "tiny"
    assert main(["evaluate", "--model", str(model), "--data", str(cli_env / "new.json")]) == 0
    report = json.loads(capsys.readouterr().out)
    prediction = report["prediction"]
    assert report["rows_scored"] > 500 and report["horizon"] == 5
    assert {
        "accuracy",
        "majority_accuracy",
        "auc",
        "auc_ci",
        "brier",
        "base_rate_brier",
        "log_loss",
        "calibration",
        "verdict",
    } <= set(prediction)


def test_evaluate_leaves_out_what_the_model_was_fit_on(cli_env, model_store, candles, capsys):
    """Scored on its own training candles, only rows after its calibration window count."""
    (cli_env / "own.json").write_text(json.dumps(frame_to_rows(candles)))
    model = model_store / model_key("BTC/USDT", "1h") / "tiny"
    assert main(["evaluate", "--model", str(model), "--data", str(cli_env / "own.json")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["first_scored"] > report["excluded_until"]
    assert report["rows_scored"] < 0.2 * len(candles)


def test_evaluate_refuses_a_directory_that_is_no_model(cli_env, capsys):
    (cli_env / "empty").mkdir()
    (cli_env / "c.json").write_text(json.dumps(frame_to_rows(synthetic_candles(300, seed=1, n_gaps=0))))
    assert main(["evaluate", "--model", str(cli_env / "empty"), "--data", str(cli_env / "c.json")]) == 2
    assert "not a saved model" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.shared_data
def test_walk_forward_on_real_btc_candles(cli_env, capsys):
    """Two monthly windows of real BTC/USDT with --quick models: every arm, real gaps handled."""
    path = shared_candle_file("BTC_USDT-1h.json")
    argv = backtest_argv(path, cli_env / "real.html", train="60d", test="30d")
    code = main([*argv, "--start", "2022-08-01", "--end", "2022-09-30", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((cli_env / "real.json").read_text())
    assert len(summary["windows"]) == 2 and set(summary["trading"]) == {
        "buy_and_hold",
        "pine",
        "baseline",
        "ml",
    }
    assert summary["prediction"]["ml"]["n"] > 1000
