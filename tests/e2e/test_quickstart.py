"""`tvgw quickstart --offline` as a new user runs it: a small model is served at once, and the
full model trained in the background replaces it without a restart."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from ml_integration.store import latest_version
from tests.conftest import PASSPHRASE, ROOT, base_environ, free_port, sample_alert, wait_until

pytestmark = pytest.mark.slow


def _served_model(url: str) -> str | None:
    try:
        models = requests.get(url + "/healthz", timeout=2).json()["model"]["worker"]["models"]
    except (requests.RequestException, ValueError, KeyError):
        return None
    version = models.get("BTC/USDT 1h")
    return version if version and version[:1].isdigit() else None


def test_quickstart_serves_a_small_model_then_swaps_in_the_full_one(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **base_environ(tmp_path, TVGW_ML_ENABLED="true", TVGW_LOG_LEVEL="INFO")}
    log = tmp_path / "quickstart.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tvgw.cli", "quickstart", "--offline", "--bind", f"127.0.0.1:{port}"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:

        def tail() -> str:
            return log.read_text(errors="replace")[-4000:]

        small = wait_until(lambda: _served_model(url), 300, "no model served", tail)
        text = log.read_text()
        assert "small model" in text and "training in the background" in text
        curl = next(line.strip() for line in text.splitlines() if line.strip().startswith("curl -s http"))
        body = json.loads(shlex.split(curl)[shlex.split(curl).index("-d") + 1])
        assert body["passphrase"] == PASSPHRASE
        first = requests.post(url + "/webhook", data=json.dumps(body), timeout=10).json()
        assert first["status"] == "executed" and first["ml_analysis"]["model_version"] == small

        models = tmp_path / "models"
        full = wait_until(
            lambda: (v := latest_version(models, "BTC/USDT", "1h")) != small and v, 900, "no full model", tail
        )

        def swapped() -> bool:
            # no price: the synthetic market is not at the sample's 30000 (a price is checked)
            alert = {
                k: v for k, v in sample_alert(order_id=f"after-{time.monotonic_ns()}").items() if k != "price"
            }
            return (
                requests.post(url + "/webhook", json=alert, timeout=10)
                .json()["ml_analysis"]
                .get("model_version")
                == full
            )

        wait_until(swapped, 60, "the full model was not hot-swapped in", tail)
        assert process.poll() is None  # the same gateway, never restarted
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
