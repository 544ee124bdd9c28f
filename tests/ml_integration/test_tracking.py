"""Outcome resolution, accuracy against baselines, and drift flags, on a real SQLite file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ml_integration.tracking import (
    DriftMonitor,
    DriftThresholds,
    drift_report,
    evaluate_recent_performance,
    resolve_outcomes,
)
from storage import Storage
from storage.candles import upsert_candles
from storage.database import query_one
from storage.predictions import insert_prediction
from tests.conftest import ROOT, ManualClock, base_environ

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
    row = query_one(storage, "SELECT * FROM ml_predictions")
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


def test_accuracy_auc_is_the_pairwise_auc_with_ties(storage: Storage) -> None:
    """The outcome AUC is the metrics module's rank AUC: ties between up and down count half."""
    outcomes = [(0.6, 0.01), (0.6, -0.01), (0.6, 0.02), (0.4, -0.01), (0.4, 0.01), (0.9, 0.03)]
    seed(storage, outcomes)
    now = T0 + 20 * HOUR
    resolve_outcomes(storage, now=now)
    report = evaluate_recent_performance(storage, "BTC/USDT", days=30, now=now)
    ups = [p for p, r in outcomes if r > 0]
    downs = [p for p, r in outcomes if r <= 0]
    pairs = [(u > d) + 0.5 * (u == d) for u in ups for d in downs]
    assert report["auc"] == pytest.approx(sum(pairs) / len(pairs), abs=1e-4)


def test_drift_reads_only_the_newest_window(storage: Storage) -> None:
    """Old losing outcomes beyond ``max_samples`` do not count: the newest winning ones decide."""
    seed(storage, [(0.8, -0.01)] * 30 + [(0.8, 0.01)] * 25)  # 30 old losers, then 25 winners
    now = T0 + 80 * HOUR
    assert resolve_outcomes(storage, now=now) == 55
    thresholds = {"min_accuracy": 0.5, "max_drawdown": 0.15, "min_sharpe": 0.5, "days": 30}
    everything = drift_report(storage, **thresholds, now=now)
    assert everything["samples"] == 55 and not everything["capped"]
    assert everything["accuracy"] == pytest.approx(25 / 55, abs=1e-4) and everything["needs_retraining"]
    newest = drift_report(storage, **thresholds, now=now, max_samples=25)
    assert newest["samples"] == 25 and newest["capped"]
    assert newest["accuracy"] == 1.0 and not newest["needs_retraining"], newest


def test_drift_monitor_computes_once_per_ttl(storage: Storage) -> None:
    clock = ManualClock(1000.0)
    monitor = DriftMonitor(
        storage, DriftThresholds(min_accuracy=0.5, max_drawdown=0.15, min_sharpe=0.5, days=10_000),
        ttl_s=60, clock=clock,
    )  # fmt: skip
    first = monitor.report()
    assert first["samples"] == 0
    seed(storage, [(0.8, -0.01)] * 25)
    resolve_outcomes(storage, now=T0 + 40 * HOUR)
    clock.now += 59
    assert monitor.report() == first  # within the TTL: the cached report, not a new query
    clock.now += 1
    fresh = monitor.report()
    assert fresh["samples"] == 25 and fresh["needs_retraining"]


def test_every_worker_and_host_serves_the_one_stored_drift_report(storage: Storage) -> None:
    """Two monitors (two hosts' workers) on one store: the second serves the report the first
    stored, not one of its own, until it is older than the TTL; then one fresh report for both."""
    clock = ManualClock(1000.0)
    thresholds = DriftThresholds(min_accuracy=0.5, max_drawdown=0.15, min_sharpe=0.5, days=10_000)
    host_a = DriftMonitor(storage, thresholds, ttl_s=60, clock=clock)
    host_b = DriftMonitor(storage, thresholds, ttl_s=60, clock=clock)
    first = host_a.report()
    seed(storage, [(0.8, -0.01)] * 25)
    resolve_outcomes(storage, now=T0 + 40 * HOUR)
    clock.now += 30
    assert host_b.report() == first  # host b computed nothing: it read host a's
    clock.now += 30
    fresh = host_b.report()
    assert fresh["samples"] == 25
    assert host_a.report() == fresh
