"""Shared fixtures: settings on a temporary SQLite file, the Flask app and client, and a real
gunicorn gateway. Exchange fixtures live in tests/fake_exchange.py (loaded as a plugin)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from tvgw.commands.serve import gunicorn_argv
from tvgw.config import Settings, load_settings

pytest_plugins = ["tests.fake_exchange"]

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data" / "ohlcv" / "binance"
PASSPHRASE = "test-secret"


def base_environ(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A clean TVGW_* environment for one test (nothing leaks in from the developer's shell)."""
    env = {
        "TVGW_DATABASE": str(tmp_path / "tvgw.sqlite"),
        "TVGW_MODEL_DIR": str(tmp_path / "models"),
        "TVGW_PASSPHRASE": PASSPHRASE,
        "TVGW_ALLOWED_IPS": "any",
        "TVGW_ML_ENABLED": "false",
        "TVGW_LOG_LEVEL": "WARNING",
    }
    env.update(extra)
    return env


def make_settings(tmp_path: Path, overrides: Mapping[str, Any] | None = None, **env: str) -> Settings:
    return load_settings(overrides, environ=base_environ(tmp_path, **env))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def app(settings: Settings) -> Any:
    from webhook import create_app

    return create_app(settings)


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


def sample_alert(**fields: Any) -> dict[str, Any]:
    """A canonical alert as the bundled Pine script sends it, fired just now."""
    alert: dict[str, Any] = {
        "passphrase": PASSPHRASE,
        "ticker": "BTCUSDT",
        "exchange": "BINANCE",
        "interval": "60",
        "action": "buy",
        "contracts": 0.01,
        "price": 30000.0,
        "timenow": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "order_id": "Long",
    }
    alert.update(fields)
    return alert


def shared_candle_file(name: str) -> Path:
    """A real candle file from ../shared/data, or a skip that says why: a user's fresh clone has
    no ../shared, and those files are never copied into the project."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(
            f"real candles not available: {path} is absent (the shared folder sits beside the checkout)"
        )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveGateway:
    """A real ``gunicorn wsgi:app`` process on a loopback port."""

    url: str
    database: Path
    passphrase: str
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    log_path: Path

    def post(self, body: Any, **kwargs: Any) -> requests.Response:
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        return requests.post(self.url + "/webhook", data=data, timeout=10, **kwargs)

    def kill(self) -> None:
        """SIGKILL the master and its workers: nothing gets to clean up."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_gateway(
    tmp_path: Path,
    *,
    workers: int = 2,
    port: int | None = None,
    gunicorn_args: Sequence[str] = (),
    **env: str,
) -> LiveGateway:
    """Start gunicorn with the shipped config (bind overridden to a free loopback port, and
    ``gunicorn_args`` added to its command line)."""
    port = port or free_port()
    full_env = {**os.environ, **base_environ(tmp_path, **{"TVGW_LOG_LEVEL": "INFO", **env})}
    full_env.pop("GUNICORN_CMD_ARGS", None)
    log_path = tmp_path / f"gunicorn-{port}.log"
    cmd = gunicorn_argv(bind=f"127.0.0.1:{port}", workers=workers)
    cmd[-1:-1] = gunicorn_args  # options before the app
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            cmd, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    gateway = LiveGateway(
        f"http://127.0.0.1:{port}", Path(full_env["TVGW_DATABASE"]), PASSPHRASE, process, full_env, log_path
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{gateway.log()}")
        try:
            healthy = requests.get(gateway.url + "/healthz", timeout=1).status_code == 200
        except requests.ConnectionError:
            healthy = False
        # Every worker, not just the first, must be up: tests rely on N workers sharing the load.
        if healthy and gateway.log().count("gateway ready (pid") >= workers:
            return gateway
        time.sleep(0.1)
    gateway.stop()
    raise RuntimeError(f"gunicorn did not become healthy in 60 s:\n{gateway.log()}")


@pytest.fixture
def live_gateway(tmp_path: Path) -> Iterator[LiveGateway]:
    gateway = start_gateway(tmp_path)
    yield gateway
    gateway.stop()
