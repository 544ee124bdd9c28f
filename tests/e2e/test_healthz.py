"""/healthz on a real 2-worker gunicorn: every worker lists the same model store, and a tampered
model makes every worker say ``degraded``, whichever one answers."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import LiveGateway, copy_model_store, start_gateway
from tests.webhook.test_health import tamper

pytestmark = pytest.mark.slow


def health_by_worker(
    gateway: LiveGateway, done: Callable[[dict[int, dict[str, Any]]], bool]
) -> dict[int, Any]:
    """The latest /healthz body of each worker (by pid), read until ``done`` holds for them
    (a fresh connection per read, so gunicorn hands reads to either worker)."""
    seen: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        body = requests.get(gateway.url + "/healthz", timeout=10).json()
        seen[body["model"]["worker"]["pid"]] = body
        if len(seen) == 2 and done(seen):
            return seen
        time.sleep(0.05)  # the gunicorn workers (other processes) have not both got there yet
    raise AssertionError(f"never saw both workers satisfy the condition: {seen}")


def test_every_worker_lists_the_same_store_and_reports_a_tampered_model(
    tmp_path: Path, model_store: Path
) -> None:
    models = copy_model_store(model_store, tmp_path / "models")
    gateway = start_gateway(tmp_path, workers=2, TVGW_ML_ENABLED="true", TVGW_MODEL_DIR=str(models))
    try:
        loaded = health_by_worker(  # each worker loads the store in the background at start
            gateway, lambda seen: all(b["model"]["worker"]["models"] == {"BTC/USDT 1h": "tiny"}
                                      for b in seen.values())
        )  # fmt: skip
        expected = [{"symbol": "BTC/USDT", "timeframe": "1h", "version": "tiny", "ok": True}]
        for body in loaded.values():
            assert body["status"] == "ok", body
            assert body["model"]["models"] == expected

        victim = tamper(models)
        degraded = health_by_worker(
            gateway, lambda seen: all(b["status"] == "degraded" for b in seen.values())
        )
        for body in degraded.values():
            (entry,) = body["model"]["models"]
            assert entry["ok"] is False and victim.name in entry["error"], body
            assert any("BTC/USDT 1h" in p for p in body["problems"]), body
        lists = [
            [(m["symbol"], m["timeframe"], m["version"]) for m in b["model"]["models"]]
            for b in degraded.values()
        ]
        assert lists[0] == lists[1]
    finally:
        gateway.stop()
