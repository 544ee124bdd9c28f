"""`tvgw data import` and `tvgw train` against a real SQLite file and model directory."""

from __future__ import annotations

import json

import pytest

from ml_integration.store import latest_version, load_latest_strategy
from ml_integration.synthetic import synthetic_candles
from storage.candles import load_candles
from storage.database import Storage, query_one
from tvgw.cli import main


def _rows(frame):
    stamps = frame.index.as_unit("ms").asi8
    return [[int(ms), *vals] for ms, vals in zip(stamps, frame.to_numpy().tolist(), strict=True)]


def test_data_import_fills_the_store_and_reports_gaps(cli_env, capsys):
    frame = synthetic_candles(400, seed=5, n_gaps=1, max_gap_bars=4)
    (cli_env / "c.json").write_text(json.dumps(_rows(frame)))
    assert main(["data", "import", str(cli_env / "c.json"), "--symbol", "ETH/USDT", "--timeframe", "1h"]) == 0
    out = capsys.readouterr().out
    assert f"imported {len(frame)} candles" in out and "1 gap(s)" in out
    stored = load_candles(Storage(cli_env / "tvgw.sqlite"), "ETH/USDT", "1h")
    assert len(stored) == len(frame)


def test_data_import_refuses_a_bad_file(cli_env, capsys):
    rows = _rows(synthetic_candles(50, seed=5, n_gaps=0))
    rows[10][4] = -1.0
    (cli_env / "bad.json").write_text(json.dumps(rows))
    bad = str(cli_env / "bad.json")
    assert main(["data", "import", bad, "--symbol", "ETH/USDT", "--timeframe", "1h"]) == 1
    assert "row 10" in capsys.readouterr().err


@pytest.mark.slow
def test_train_synthetic_records_job_and_model(cli_env, capsys):
    code = main(
        ["train", "--symbol", "BTC/USDT", "--synthetic", "--days", "90", "--seed", "3", "--quick",
         "--no-progress"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "vs majority class" in out and "volatility QLIKE" in out
    version = latest_version(cli_env / "models", "BTC/USDT", "1h")
    assert version is not None
    strategy = load_latest_strategy(cli_env / "models", "BTC/USDT", "1h")
    assert strategy.synthetic is True and strategy.model_version == version
    storage = Storage(cli_env / "tvgw.sqlite")
    model = query_one(storage, "SELECT version, synthetic, metrics FROM ml_models")
    job = query_one(storage, "SELECT status, model_version, error FROM ml_training_jobs")
    assert tuple(model)[:2] == (version, 1) and "accuracy" in model["metrics"]
    assert tuple(job) == ("done", version, None)


def test_failed_training_is_recorded(cli_env, capsys):
    (cli_env / "short.json").write_text(json.dumps(_rows(synthetic_candles(100, seed=1, n_gaps=0))))
    short = str(cli_env / "short.json")
    assert main(["train", "--symbol", "BTC/USDT", "--data", short, "--no-progress"]) == 1
    assert "too few rows" in capsys.readouterr().err
    job = query_one(Storage(cli_env / "tvgw.sqlite"), "SELECT status, error FROM ml_training_jobs")
    assert job["status"] == "failed" and "too few rows" in job["error"]
