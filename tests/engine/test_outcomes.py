"""Outcome resolution, accuracy against baselines, and drift flags, on a real SQLite file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.outcomes import drift_report, evaluate_recent_performance, resolve_outcomes
from storage import Storage
from storage.candles import upsert_candles
from storage.predictions import insert_prediction
from tests.conftest import ROOT, base_environ

HOUR = 3600
T0 = 1_700_000_000 // HOUR * HOUR


def seed(storage: Storage, outcomes: list[tuple[float, float]]) -> None:
    """One prediction per (P(up), realised return); its target candle holds the return."""
    with storage.transaction() as conn:
        for i, (p, _ret) in enumerate(outcomes):
            candle = T0 + i * HOUR
            insert_prediction(
                conn, timestamp=candle + 60, symbol="BTC/USDT", timeframe="1h", model_version="v1",
                direction_prob=p, magnitude_pred=0.001, confidence=abs(p - 0.5) * 2, horizon=5,
                candle_time=candle, target_time=candle + 5 * HOUR, price_at_prediction=100.0,
            )  # fmt: skip
    upsert_candles(storage, "BTC/USDT", "1h",
                   [[(T0 + (i + 5) * HOUR) * 1000, 100, 101, 99, 100 * (1 + ret), 1] for i, (_, ret) in
                    enumerate(outcomes)], "test")  # fmt: skip


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    s = Storage(tmp_path / "tvgw.sqlite")
    s.migrate()
    return s


def test_resolution_waits_for_the_target_candle_to_close(storage: Storage) -> None:
    seed(storage, [(0.7, 0.01)])
    target = T0 + 5 * HOUR
    assert resolve_outcomes(storage, now=target + HOUR - 1) == 0  # the target candle is still open
    assert resolve_outcomes(storage, now=target + HOUR) == 1
    row = storage.query_one("SELECT * FROM ml_predictions")
    assert (row["actual_direction"], row["prediction_accuracy"]) == (1, 1.0)
    assert row["actual_magnitude"] == pytest.approx(0.01)


def test_accuracy_auc_brier_and_baselines(storage: Storage) -> None:
    outcomes = [(0.8, 0.01), (0.7, 0.02), (0.6, -0.01), (0.3, -0.02), (0.2, 0.01), (0.4, -0.03)]
    seed(storage, outcomes)
    now = T0 + 20 * HOUR
    assert resolve_outcomes(storage, now=now) == 6
    report = evaluate_recent_performance(storage, "BTC/USDT", days=30, now=now)
    assert report["total_predictions"] == 6
    assert report["direction_accuracy"] == pytest.approx(4 / 6, abs=1e-4)
    assert report["base_rate"] == pytest.approx(0.5) and report["majority_accuracy"] == pytest.approx(0.5)
    labels = [1 if r > 0 else 0 for _, r in outcomes]
    brier = sum((p - y) ** 2 for (p, _), y in zip(outcomes, labels, strict=True)) / 6
    assert report["brier_score"] == pytest.approx(brier, abs=1e-4)
    assert report["base_rate_brier"] == pytest.approx(0.25)
    assert report["auc"] == pytest.approx(6 / 9, abs=1e-4)  # 6 of the 9 (up, down) pairs ranked right
    low, high = report["accuracy_ci95"]
    assert low < 4 / 6 < high


def test_drift_flags_a_losing_model_and_not_a_small_sample(storage: Storage) -> None:
    seed(storage, [(0.8, -0.01)] * 25)  # confidently wrong, 25 times
    now = T0 + 40 * HOUR
    resolve_outcomes(storage, now=now)
    flags = drift_report(storage, min_accuracy=0.5, max_drawdown=0.15, min_sharpe=0.5, days=30, now=now)
    assert flags["needs_retraining"]
    assert any("accuracy" in r for r in flags["reasons"]) and any("drawdown" in r for r in flags["reasons"])
    few = drift_report(
        storage, min_accuracy=0.5, max_drawdown=0.15, min_sharpe=0.5, days=30, min_samples=100, now=now
    )
    assert not few["needs_retraining"]


def test_cli_resolve_and_accuracy(tmp_path: Path) -> None:
    env = {**base_environ(tmp_path), "PATH": "/usr/bin:/bin"}
    storage = Storage(tmp_path / "tvgw.sqlite")
    storage.migrate()
    seed(storage, [(0.9, 0.02), (0.1, -0.02)])  # long resolved already (T0 is in 2023)
    run = [sys.executable, "-m", "tvgw.cli"]
    resolved = subprocess.run(
        [*run, "resolve"], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "resolved 2 prediction outcomes" in resolved.stdout
    report = subprocess.run(
        [*run, "accuracy", "--days", "100000"], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    body = json.loads(report.stdout)
    assert body["total_predictions"] == 2 and body["direction_accuracy"] == 1.0
    assert "drift" in body
