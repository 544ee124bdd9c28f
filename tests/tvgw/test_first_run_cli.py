"""The first-run path of the ``tvgw`` command: a fast ``--help``, training and serving without
TensorFlow, synthetic candles for any timeframe, offline errors in words, next steps."""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from ml_integration.candles import frame_to_rows
from ml_integration.exceptions import MLError
from ml_integration.market_data import MarketDataError, create_exchange, fetch_ohlcv_history, network_cause
from ml_integration.synthetic import synthetic_candles
from storage.candles import candle_sources, latest_candle_ms, load_candles, upsert_candles
from storage.database import Storage, query_one
from tests.conftest import PASSPHRASE, ROOT, base_environ, make_settings, market_app, refused_port
from tvgw.cli import main
from tvgw.commands.quickstart import next_steps
from webhook import create_app

HEAVY = ("pandas", "numpy", "pydantic", "ccxt", "psycopg", "sklearn", "tensorflow")

#: Run the ``tvgw`` command in a child where importing TensorFlow fails, as in a serve-only install.
WITHOUT_TF = textwrap.dedent(
    """
    import sys
    sys.modules["tensorflow"] = None  # import raises ImportError, as when it is not installed
    sys.modules["keras"] = None
    from tvgw.cli import main
    code = main(sys.argv[1:])
    assert "tensorflow" not in {m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}
    sys.exit(code)
    """
)


def _run(tmp_path: Path, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", **base_environ(tmp_path)}
    return subprocess.run(
        [sys.executable, "-c", script, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_help_lists_the_commands_without_importing_heavy_libraries(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from tvgw.cli import main
        try:
            main(["--help"])
        except SystemExit:
            pass
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
        """
    )
    done = _run(tmp_path, script)
    assert done.returncode == 0, done.stderr
    assert "quickstart" in done.stdout and "train" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_a_command_still_gets_its_own_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--no-lstm" in capsys.readouterr().out


def test_training_the_lstm_without_tensorflow_says_so_in_one_line(tmp_path: Path) -> None:
    args = ("train", "--symbol", "BTC/USDT", "--synthetic", "--days", "20", "--quick", "--no-progress")
    done = _run(tmp_path, WITHOUT_TF, *args)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "TensorFlow" in lines[0] and "pip install 'tvgw[train]'" in lines[0] and "--no-lstm" in lines[0]
    job = query_one(Storage(tmp_path / "tvgw.sqlite"), "SELECT status, error FROM ml_training_jobs")
    assert job["status"] == "failed" and "MissingTrainExtraError" in job["error"]


def test_a_serve_only_install_trains_without_the_lstm_and_serves(tmp_path: Path) -> None:
    args = ("train", "--symbol", "BTC/USDT", "--synthetic", "--days", "40", "--quick", "--no-lstm",
            "--no-progress")  # fmt: skip
    done = _run(tmp_path, WITHOUT_TF, *args)
    assert done.returncode == 0, done.stderr
    serve = textwrap.dedent(
        f"""
        import sys
        sys.modules["tensorflow"] = None
        sys.modules["keras"] = None
        from ml_integration.store import load_latest_strategy
        from ml_integration.synthetic import synthetic_candles
        strategy = load_latest_strategy({str(tmp_path / "models")!r}, "BTC/USDT", "1h")
        signal = strategy.generate_signal(synthetic_candles(300, seed=2, n_gaps=0), "BTC/USDT")
        print(signal.model_version)
        """
    )
    served = _run(tmp_path, serve)
    assert served.returncode == 0, served.stderr
    assert served.stdout.strip()


def test_a_synthetic_4h_model_serves_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in base_environ(tmp_path).items():
        monkeypatch.setenv(key, value)
    args = ["train", "--symbol", "BTC/USDT", "--timeframe", "4h", "--synthetic", "--days", "365", "--quick"]
    assert main([*args, "--no-lstm", "--no-progress"]) == 0
    storage = Storage(tmp_path / "tvgw.sqlite")
    newest = latest_candle_ms(storage, "BTC/USDT", "4h")
    assert newest is not None and time.time() * 1000 - newest < 4 * 3600 * 1000  # the bar open now
    client = create_app(make_settings(tmp_path, TVGW_ML_ENABLED="true")).test_client()
    alert = {"passphrase": PASSPHRASE, "ticker": "BTCUSDT", "interval": "240", "action": "buy",
             "contracts": 0.001}  # fmt: skip
    analysis = client.post("/webhook", json=alert).json["ml_analysis"]
    assert "error" not in analysis, analysis
    assert analysis["synthetic"] is True and analysis["model_version"]


def test_synthetic_history_never_writes_over_real_candles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in base_environ(tmp_path).items():
        monkeypatch.setenv(key, value)
    storage = Storage(tmp_path / "tvgw.sqlite")
    storage.migrate()
    real = synthetic_candles(100, seed=9, timeframe="4h", n_gaps=0)  # stands in for an imported file
    upsert_candles(storage, "BTC/USDT", "4h", frame_to_rows(real), "file:real.json")
    args = ["train", "--symbol", "BTC/USDT", "--timeframe", "4h", "--synthetic", "--days", "365", "--quick"]
    assert main([*args, "--no-lstm", "--no-progress"]) == 0
    assert candle_sources(storage, "BTC/USDT", "4h") == {"file:real.json"}
    assert len(load_candles(storage, "BTC/USDT", "4h")) == len(real)


def test_an_offline_fetch_names_the_cause_and_shows_a_date() -> None:
    with refused_port() as port, pytest.raises(MarketDataError) as failed:
        exchange = create_exchange("binance", timeout_ms=3000, api_url=f"http://127.0.0.1:{port}")
        fetch_ohlcv_history(exchange, "BTC/USDT", "1h", 1_700_000_000_000)
    message = str(failed.value)
    assert "connection refused" in message
    assert "since 2023-11-14 22:13 UTC" in message and "1700000000000" not in message


def test_a_dns_failure_is_named() -> None:
    import ccxt

    try:
        try:
            raise socket.gaierror(-2, "Name or service not known")
        except socket.gaierror as dns:
            raise ccxt.NetworkError("binance GET https://api.binance.com/api/v3/exchangeInfo") from dns
    except ccxt.NetworkError as exc:
        cause = network_cause(exc)
    assert cause is not None and cause.startswith("DNS lookup failed") and "no network" in cause
    assert network_cause(MLError("not a network problem")) is None


def test_quickstart_next_steps_hold_a_curl_that_works(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    text = next_steps("127.0.0.1:8000", PASSPHRASE, settings)
    curl = next(line.strip() for line in text.splitlines() if line.strip().startswith("curl -s http"))
    words = shlex.split(curl)
    assert words[2] == "http://127.0.0.1:8000/webhook"
    body = json.loads(words[words.index("-d") + 1])
    assert body["passphrase"] == PASSPHRASE
    reply: Any = market_app(settings).test_client().post("/webhook", data=json.dumps(body))
    assert reply.json["status"] == "executed", reply.json
    assert "TVGW_API_TOKEN" in text and "Ctrl-C" in text and "/healthz" in text


def test_quickstarts_small_model_runs_a_short_tournament_and_the_full_model_the_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The small model is the wait between install and a served model: its tournament is the
    default blend against no opinion (it still serves nothing without an edge), not --quick's
    five candidates; the full model that replaces it runs the whole tournament (no --quick)."""
    import ml_integration.training
    from ml_integration.tournament import CANDIDATES
    from tvgw.commands import quickstart

    seen: list[Any] = []

    class Pipeline:
        def run(self, config: Any) -> Any:
            seen.append(config)
            return type("Result", (), {"version": "v1", "wall_time_s": 0.0})()

    monkeypatch.setattr(ml_integration.training, "create_ml_training_pipeline", lambda **_: Pipeline())
    settings = make_settings(tmp_path)
    quickstart._train_small_on_synthetic_data(settings, Storage(settings.database), 100_000.0)
    assert [c.model.tournament for c in seen] == [("no_model", "default_blend")]
    assert seen[0].model.use_lstm is False
    argv = quickstart.full_training_argv(synthetic=True, lstm=False, price=100_000.0)
    assert "--quick" not in argv and "--promote" in argv
    assert len(CANDIDATES) > 2  # what the full model's tournament runs


def test_quickstarts_full_model_is_full_size_unless_the_test_hook_says_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TVGW_QUICKSTART_FULL_TRAIN_OPTIONS (set by the wheel test only) adds ``tvgw train``
    options to the background run; unset, the child is the full-size training."""
    from tvgw.commands import quickstart

    started: list[list[str]] = []

    class Child:
        def __init__(self, argv: list[str], **_: Any) -> None:
            started.append(argv)
            self.pid = 0

    monkeypatch.setattr(quickstart.subprocess, "Popen", Child)
    monkeypatch.delenv(quickstart.FULL_TRAIN_OPTIONS_ENV, raising=False)
    settings = make_settings(tmp_path)
    quickstart._start_full_training(settings, synthetic=True, price=100_000.0)
    monkeypatch.setenv(quickstart.FULL_TRAIN_OPTIONS_ENV, "--quick")
    quickstart._start_full_training(settings, synthetic=True, price=100_000.0)
    default, hooked = started
    assert default[:3] == [sys.executable, "-m", "tvgw.cli"] and "--quick" not in default
    assert hooked == [*default, "--quick"]
