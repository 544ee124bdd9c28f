"""Bad input stops the backtest before any training, with a message that says what to change."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from backtest.data import CandleSource, load_candles
from backtest.errors import BacktestInputError
from backtest.run import run_backtest
from ml_integration.candles import frame_to_rows
from ml_integration.synthetic import synthetic_candles
from tests.backtest.conftest import backtest_argv, small_config
from tests.conftest import make_settings
from tvgw.cli import main


def _write_json(path, frame):
    path.write_text(json.dumps(frame_to_rows(frame)))
    return path


def _backtest(path, report, *extra):
    return main(backtest_argv(path, report, *extra))


def _refused(capsys, report) -> str:
    """The command's error line; nothing was trained (no progress bar started) or written."""
    err = capsys.readouterr().err
    assert "train windows" not in err, "training started before the input was checked"
    assert not report.exists() and not report.with_suffix(".json").exists()
    return err


def test_a_file_in_an_unknown_format_is_refused_naming_the_formats(cli_env, capsys):
    path = cli_env / "candles.parquet"
    path.write_bytes(b"PAR1 not candles")
    assert _backtest(path, cli_env / "out.html") == 2
    err = _refused(capsys, cli_env / "out.html")
    assert "unknown candle file format '.parquet'" in err and "freqtrade JSON" in err and "CSV" in err


def test_a_file_with_broken_rows_names_the_row(cli_env, capsys):
    rows = frame_to_rows(synthetic_candles(300, seed=1, n_gaps=0))
    rows[17][2] = rows[17][3] / 2  # high below low
    (cli_env / "bad.json").write_text(json.dumps(rows))
    assert _backtest(cli_env / "bad.json", cli_env / "out.html") == 2
    assert "row 17" in _refused(capsys, cli_env / "out.html")


def test_too_few_rows_for_the_windows_says_where_data_must_start(cli_env, capsys):
    path = _write_json(cli_env / "short.json", synthetic_candles(900, seed=2, n_gaps=0))
    assert _backtest(path, cli_env / "out.html") == 2
    err = _refused(capsys, cli_env / "out.html")
    assert "too few rows: 900 candles" in err and "give more history, or shorten --train-window" in err


def test_a_test_window_longer_than_the_traded_period_is_refused(cli_env, capsys):
    frame = synthetic_candles(2000, seed=3, n_gaps=0)
    path = _write_json(cli_env / "c.json", frame)
    end = (frame.index[-1] - pd.Timedelta(days=2)).date().isoformat()
    start = (frame.index[-1] - pd.Timedelta(days=12)).date().isoformat()
    assert _backtest(path, cli_env / "out.html", "--start", start, "--end", end) == 2
    err = _refused(capsys, cli_env / "out.html")
    assert "shorter than one --test-window" in err


def test_a_training_window_too_short_for_the_models_is_refused(cli_env, capsys):
    path = _write_json(cli_env / "c.json", synthetic_candles(2000, seed=3, n_gaps=0))
    code = main(backtest_argv(path, cli_env / "out.html", train="5d", quick=False))
    assert code == 2
    assert "lengthen --train-window" in _refused(capsys, cli_env / "out.html")


def test_a_gap_longer_than_the_horizon_is_refused_naming_it(cli_env, capsys):
    frame = synthetic_candles(2600, seed=4, n_gaps=0)
    hole = frame.index[1500]
    frame = frame.drop(frame.index[1500:1512])  # 12 bars missing, horizon 5
    path = _write_json(cli_env / "gappy.json", frame)
    assert _backtest(path, cli_env / "out.html") == 2
    err = _refused(capsys, cli_env / "out.html")
    assert "12 bars missing" in err and str(hole - pd.Timedelta(hours=1)) in err and "Move --start" in err


def test_a_gap_within_the_horizon_is_accepted(tmp_path):
    """The gap check refuses only what it must: 3 missing bars under a 5-bar horizon pass (the
    run itself is stopped by an impossible window right after, before training)."""
    frame = synthetic_candles(2600, seed=4, n_gaps=0)
    frame = frame.drop(frame.index[1500:1503])
    with pytest.raises(BacktestInputError, match="shorter than one --test-window"):
        run_backtest(
            small_config(start=frame.index[-10], end=frame.index[-1]), make_settings(tmp_path), candles=frame
        )


def test_timeframe_must_match_the_data(tmp_path):
    path = _write_json(tmp_path / "c.json", synthetic_candles(300, seed=1, n_gaps=0))
    with pytest.raises(BacktestInputError, match=r"3600 s apart but --timeframe 4h"):
        load_candles(CandleSource("BTC/USDT", "4h", file=path))


def test_an_empty_candle_store_says_how_to_fill_it(tmp_path):
    from storage import Storage

    Storage(tmp_path / "db.sqlite").migrate()
    with pytest.raises(BacktestInputError, match="tvgw data fetch --symbol BTC/USDT --timeframe 1h"):
        load_candles(CandleSource("BTC/USDT", "1h", database=tmp_path / "db.sqlite"))


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--train-window", "six months", "like 180d"),
        ("--mode", None, None),
        ("--embargo", "2", "shorter than"),
    ],
)
def test_bad_options_are_refused(cli_env, capsys, option, value, message):
    path = _write_json(cli_env / "c.json", synthetic_candles(300, seed=1, n_gaps=0))
    if value is None:
        with pytest.raises(SystemExit):
            _backtest(path, cli_env / "out.html", "--mode", "yolo")
        return
    assert _backtest(path, cli_env / "out.html", option, value) == 2
    assert message in _refused(capsys, cli_env / "out.html")
