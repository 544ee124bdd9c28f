"""``GET /metrics`` in Prometheus text format.

Counters and histograms (alerts, latency, orders, exchange errors, notifications) are counted
where they happen, in whichever gunicorn worker handled the request. prometheus-client's
multiprocess mode adds them up across workers: ``PROMETHEUS_MULTIPROC_DIR`` is set by
gunicorn.conf.py in the master before any worker imports prometheus_client (without it, as in
the Flask test client, the process's own registry is served). Model accuracy, Brier score and
drift are not counted at all: they are read from SQLite at scrape time, so every worker reports
the same, current values.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ml_integration.tracking import evaluate_recent_performance
from webhook import current_gateway
from webhook.events import AlertEvent, drift_now

__all__ = [
    "ALERTS", "EXIT_WATCHER_PASSES", "FEED_GAPS", "NOTIFICATIONS", "bp", "observe_alert", "observe_gaps",
]  # fmt: skip

bp = Blueprint("metrics", __name__)

ALERTS = Counter("tvgw_alerts", "Alerts answered, by status and refusal/risk code", ["status", "code"])
WEBHOOK_SECONDS = Histogram(
    "tvgw_webhook_seconds", "Time to answer POST /webhook",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0),
)  # fmt: skip
ENRICHMENT_SECONDS = Histogram(
    "tvgw_enrichment_seconds", "Time the ML enrichment of an alert took",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)  # fmt: skip
ORDERS = Counter("tvgw_orders", "Orders sent, by outcome (the fill status, or failed)", ["outcome"])
EXCHANGE_ERRORS = Counter("tvgw_exchange_errors", "Alerts whose order the exchange failed")
NOTIFICATIONS = Counter("tvgw_notifications", "Notifications, by channel and outcome", ["channel", "outcome"])
#: Per worker (a ``pid`` label under gunicorn, live workers only): a watcher whose count stops
#: growing has stopped acting on exits.
EXIT_WATCHER_PASSES = Gauge(
    "tvgw_exit_watcher_passes", "Passes of this worker's exit watcher since it started, by outcome",
    ["outcome"], multiprocess_mode="liveall",
)  # fmt: skip
FEED_GAPS = Counter(
    "tvgw_feed_gaps", "Chart messages found missing (heartbeat_missed, sequence_gap, position_gap)", ["kind"]
)


def observe_gaps(gaps: Any) -> None:
    """Count the gaps a run of the overdue check or an answer recorded."""
    for gap in gaps:
        FEED_GAPS.labels(kind=str(gap.get("kind"))).inc()


def observe_alert(event: AlertEvent) -> None:
    """Count one webhook answer (a listener of :func:`webhook.events.watch_webhook`)."""
    ALERTS.labels(status=event.status, code=event.code).inc()
    WEBHOOK_SECONDS.observe(event.seconds)
    if event.enrichment_ms is not None:
        ENRICHMENT_SECONDS.observe(event.enrichment_ms / 1000)
    if event.has_order:
        ORDERS.labels(
            outcome=event.fill_status or ("failed" if event.status == "failed" else "unknown")
        ).inc()
    if event.status == "failed":
        EXCHANGE_ERRORS.inc()
    if event.account_failures:  # accounts that failed beside one that filled
        EXCHANGE_ERRORS.inc(len(event.account_failures))
    observe_gaps(event.gaps)


class FeedHealth(Collector):
    """The gaps each feed has open (found within the problem window, not settled), read from
    SQLite at scrape time, so every worker reports the same: one series per feed that has any."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        problems = current_gateway().continuity.problems()
        family = GaugeMetricFamily(
            "tvgw_feed_open_gaps", "Unsettled missing messages per chart feed (within TVGW_GAP_PROBLEM_S)",
            labels=["strategy", "symbol", "timeframe", "kind"],
        )  # fmt: skip
        counts: dict[tuple[str, str, str, str], int] = {}
        for notice in problems:
            key = (notice.feed.strategy_id, notice.feed.symbol, notice.feed.timeframe, notice.gap.kind)
            counts[key] = counts.get(key, 0) + notice.gap.missed
        for key, count in sorted(counts.items()):
            family.add_metric(list(key), count)
        yield family


class ModelQuality(Collector):
    """Accuracy, Brier score and drift flags of the live predictions, read at scrape time."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gateway = current_gateway()
        settings = gateway.settings
        perf = evaluate_recent_performance(gateway.storage, None, settings.drift_window_days)
        drift = drift_now(gateway.storage, settings)
        yield _gauge("tvgw_model_accuracy", "Direction accuracy of resolved predictions (drift window)",
                     perf["direction_accuracy"])  # fmt: skip
        yield _gauge(
            "tvgw_model_brier", "Brier score of resolved predictions (drift window)", perf["brier_score"]
        )
        yield _gauge("tvgw_model_resolved_predictions", "Resolved predictions in the drift window",
                     perf["total_predictions"])  # fmt: skip
        yield _gauge("tvgw_model_needs_retraining", "1 when the drift checks advise retraining",
                     int(drift["needs_retraining"]))  # fmt: skip
        flags = GaugeMetricFamily("tvgw_model_drift_flag", "1 per drift check that fails", labels=["check"])
        for check in ("accuracy", "drawdown", "sharpe"):
            flags.add_metric([check], int(any(r.lower().startswith(check) for r in drift["reasons"])))
        yield flags


def _gauge(name: str, documentation: str, value: Any) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float("nan") if value is None else float(value))


def _registry() -> CollectorRegistry:
    """Every worker's counters (multiprocess mode) or this process's, plus the model gauges."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        for collector in (
            ALERTS,
            WEBHOOK_SECONDS,
            ENRICHMENT_SECONDS,
            ORDERS,
            EXCHANGE_ERRORS,
            NOTIFICATIONS,
            FEED_GAPS,
            EXIT_WATCHER_PASSES,
        ):
            registry.register(collector)
    registry.register(ModelQuality())
    registry.register(FeedHealth())
    return registry


@bp.get("/metrics")
def metrics() -> Response:
    """Unauthenticated, like most exporters: it holds counts, never a row, a reason or a secret.
    Keep it off the public internet at the proxy if even counts are private."""
    return Response(generate_latest(_registry()), mimetype=CONTENT_TYPE_LATEST)
