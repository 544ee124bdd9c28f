"""``GET /metrics``: Prometheus text that adds up every gunicorn worker (multiprocess mode),
and the model-quality gauges read from SQLite."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from storage import Storage
from storage.predictions import insert_prediction, resolve_prediction
from tests.conftest import LiveGateway, make_settings, market_app, sample_alert, start_gateway


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_alerts_orders_and_latency(client: Any) -> None:
    before = client.get("/metrics").text
    client.post("/webhook", data=json.dumps(sample_alert()))
    client.post("/webhook", data="not json")
    after = client.get("/metrics")
    assert after.status_code == 200 and after.mimetype == "text/plain"
    text = after.text
    for name, labels in (
        ("tvgw_alerts_total", {"status": "executed", "code": "none"}),
        ("tvgw_alerts_total", {"status": "refused", "code": "invalid_json"}),
        ("tvgw_orders_total", {"outcome": "filled"}),
    ):
        assert value(text, name, **labels) == value(before, name, **labels) + 1, (name, labels)
    assert value(text, "tvgw_webhook_seconds_count") == value(before, "tvgw_webhook_seconds_count") + 2
    assert value(text, "tvgw_exchange_errors_total") == value(before, "tvgw_exchange_errors_total")


def test_model_gauges_come_from_the_prediction_log(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    client = market_app(settings).test_client()
    assert value(client.get("/metrics").text, "tvgw_model_resolved_predictions") == 0
    storage = Storage(settings.database)
    now = time.time()
    with storage.transaction() as conn:
        for i in range(25):
            pid = insert_prediction(conn, timestamp=now - 600 + i, symbol="BTC/USDT", timeframe="1h",
                                    direction_prob=0.9, horizon=5, target_time=now)  # fmt: skip
            right = i < 5
            resolve_prediction(
                conn, pid, actual_direction=int(right), actual_magnitude=0.01 if right else -0.01,
                prediction_accuracy=float(right),
            )  # fmt: skip
    text = client.get("/metrics").text
    assert value(text, "tvgw_model_resolved_predictions") == 25
    assert value(text, "tvgw_model_accuracy") == pytest.approx(0.2)
    assert value(text, "tvgw_model_brier") == pytest.approx((5 * 0.01 + 20 * 0.81) / 25, abs=1e-4)
    assert value(text, "tvgw_model_needs_retraining") == 1
    assert value(text, "tvgw_model_drift_flag", check="accuracy") == 1


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[LiveGateway]:
    live = start_gateway(tmp_path, workers=2)
    yield live
    live.stop()


@pytest.mark.slow
def test_every_gunicorn_worker_is_counted(two_workers: LiveGateway) -> None:
    total = 40
    for i in range(total):
        # A new connection each time, so both workers get their share.
        answer = requests.post(two_workers.url + "/webhook", data=json.dumps(sample_alert(order_id=f"o{i}")),
                               headers={"Connection": "close"}, timeout=10)  # fmt: skip
        assert answer.status_code == 200
    for _ in range(5):
        text = requests.get(two_workers.url + "/metrics", timeout=10).text
        counted = sum(v for (name, _), v in samples(text).items() if name == "tvgw_alerts_total")
        # The same sum whichever worker answers the scrape (without multiprocess mode each
        # worker reports only its own share, about half).
        assert counted == total


def test_enrichment_latency_is_observed_when_the_model_ran(ml_api: Any) -> None:
    before = value(ml_api.get("/metrics").text, "tvgw_enrichment_seconds_count")
    answer = ml_api.post("/webhook", data=json.dumps(sample_alert()))
    assert answer.json["ml_analysis"].get("latency_ms") is not None, answer.json["ml_analysis"]
    assert value(ml_api.get("/metrics").text, "tvgw_enrichment_seconds_count") == before + 1
