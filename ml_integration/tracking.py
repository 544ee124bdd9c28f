"""Outcome tracking (the design's ``MLPerformanceTracker``): what happened after each
prediction, and how good the predictions have been. The prediction itself is logged in the
alert's transaction by :mod:`ml_integration.serving`; here it is resolved and scored.

The resolver fills ``actual_direction`` (1 up, 0 not up), ``actual_magnitude`` (close at the
target bar over the close at prediction, minus one) and ``prediction_accuracy`` (1 when the
predicted side, P(up) ≥ 0.5, matched) once the target candle has closed and is in the candle
store. It is idempotent and safe with several workers: each UPDATE is guarded by
``resolved_at IS NULL``.

``evaluate_recent_performance`` reports accuracy next to its naive baselines (majority class,
base-rate Brier) with a 95% Wilson interval, so a model with no edge is seen to have none.
The metrics themselves live in :mod:`ml_integration.evaluation`, the project's one metrics
module. ``drift_report`` reads a bounded window and :class:`DriftMonitor` caches it per worker,
so a health check costs the same on day 300 as on day 1.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from common.timeframes import seconds
from ml_integration.evaluation import brier_score, rank_auc, wilson_interval
from storage import Storage
from storage import candles as candle_store
from storage import predictions as prediction_store
from storage import reports as report_store
from storage.leases import start_owned_job

__all__ = [
    "DriftMonitor",
    "DriftThresholds",
    "drift_report",
    "evaluate_recent_performance",
    "resolve_outcomes",
    "start_outcome_resolver",
]

log = logging.getLogger(__name__)


def resolve_outcomes(storage: Storage, now: float | None = None) -> int:
    """Fill the outcome of every prediction whose target candle has closed; returns how many."""
    clock = time.time() if now is None else now
    done = 0
    for row in prediction_store.unresolved_due(storage, clock):
        step = seconds(row["timeframe"])
        if row["target_time"] + step > clock:
            continue  # the target candle is still open
        target = candle_store.close_at(
            storage, row["symbol"], row["timeframe"], int(row["target_time"] * 1000)
        )
        price = row["price_at_prediction"]
        if target is None or not price:
            continue  # the store lacks that candle (yet): try again next run
        magnitude = target / price - 1.0
        direction = 1 if magnitude > 0 else 0
        predicted_up = (row["direction_prob"] or 0.5) >= 0.5
        with storage.transaction() as conn:
            done += prediction_store.resolve_prediction(
                conn, row["id"], actual_direction=direction, actual_magnitude=magnitude,
                prediction_accuracy=1.0 if predicted_up == bool(direction) else 0.0,
            )  # fmt: skip
    return done


def evaluate_recent_performance(
    storage: Storage, symbol: str | None = None, days: float = 30, now: float | None = None
) -> dict[str, Any]:
    """Accuracy of the resolved predictions of the last ``days`` days, with baselines.

    Every figure comes from :mod:`ml_integration.evaluation` (the one metrics module), so this
    AUC is the training report's AUC; the rank AUC keeps it O(n log n) in the window size.
    """
    clock = time.time() if now is None else now
    rows = prediction_store.resolved_since(storage, clock - days * 86_400, symbol)
    n = len(rows)
    out: dict[str, Any] = {"symbol": symbol, "days": days, "total_predictions": n}
    if n == 0:
        return {**out, "direction_accuracy": None, "avg_magnitude_error": None, "avg_confidence": None,
                "auc": None, "brier_score": None, "base_rate": None, "base_rate_brier": None,
                "majority_accuracy": None, "accuracy_ci95": None,
                "note": "no resolved predictions in the window yet"}  # fmt: skip
    probs = np.array([r["direction_prob"] if r["direction_prob"] is not None else 0.5 for r in rows], float)
    labels = np.array([r["actual_direction"] for r in rows], float)
    hits = float(sum(float(r["prediction_accuracy"]) for r in rows))
    base = float(labels.mean())
    errors = [
        abs(r["magnitude_pred"] - r["actual_magnitude"]) for r in rows if r["magnitude_pred"] is not None
    ]
    auc = rank_auc(labels, probs)
    low, high = wilson_interval(hits, n)
    return {
        **out,
        "direction_accuracy": round(hits / n, 4),
        "accuracy_ci95": (round(low, 4), round(high, 4)),
        "majority_accuracy": round(max(base, 1 - base), 4),
        "avg_magnitude_error": round(sum(errors) / len(errors), 6) if errors else None,
        "avg_confidence": round(sum(float(r["confidence"] or 0) for r in rows) / n, 4),
        "auc": None if auc is None else round(auc, 4),
        "brier_score": round(brier_score(labels, probs), 4),
        "base_rate": round(base, 4),
        "base_rate_brier": round(base * (1 - base), 4),
        "synthetic_predictions": sum(int(r["synthetic"]) for r in rows),
    }


#: The drift report reads at most this many of the newest resolved predictions: enough for a
#: stable accuracy and Sharpe, and a fixed cost on day 300 as on day 1.
DRIFT_MAX_SAMPLES = 2_000


@dataclass(frozen=True)
class DriftThresholds:
    """When a model is flagged for retraining (``TVGW_DRIFT_*``)."""

    min_accuracy: float
    max_drawdown: float
    min_sharpe: float
    days: float = 7
    min_samples: int = 20

    @classmethod
    def from_settings(cls, settings: _DriftSettings) -> DriftThresholds:
        """The thresholds the operator configured (``TVGW_DRIFT_*``)."""
        return cls(
            min_accuracy=settings.drift_min_accuracy, max_drawdown=settings.drift_max_drawdown,
            min_sharpe=settings.drift_min_sharpe, days=settings.drift_window_days,
        )  # fmt: skip


class _DriftSettings(Protocol):
    """What the drift thresholds need from the composed settings (no import of ``tvgw``)."""

    @property
    def drift_min_accuracy(self) -> float: ...
    @property
    def drift_max_drawdown(self) -> float: ...
    @property
    def drift_min_sharpe(self) -> float: ...
    @property
    def drift_window_days(self) -> float: ...


def drift_report(
    storage: Storage,
    *,
    min_accuracy: float,
    max_drawdown: float,
    min_sharpe: float,
    days: float = 7,
    min_samples: int = 20,
    now: float | None = None,
    max_samples: int = DRIFT_MAX_SAMPLES,
) -> dict[str, Any]:
    """Does the model need retraining? Judged on the last ``days`` of resolved predictions,
    at most the newest ``max_samples`` of them (read with a LIMIT, newest first, so the cost
    does not grow with the table).

    The return series is what trading each prediction's side would have earned:
    ``r = sign(P(up) − 0.5) × actual_magnitude``. Drawdown is the worst fall of its cumulative
    sum; Sharpe is ``mean / std × sqrt(n per year)``, the year counted over the span the
    samples cover. Below ``min_samples`` nothing is flagged: a handful of outcomes says
    nothing either way.
    """
    clock = time.time() if now is None else now
    rows = prediction_store.recent_outcomes(storage, clock - days * 86_400, max_samples)
    n = len(rows)
    capped = n >= max_samples
    span_days = (clock - rows[0]["timestamp"]) / 86_400 if capped and rows else days
    accuracy = round(sum(float(r["prediction_accuracy"]) for r in rows) / n, 4) if n else None
    returns = [_side(r["direction_prob"]) * r["actual_magnitude"] for r in rows]
    drawdown = _max_drawdown(returns)
    sharpe = _sharpe(returns, per_year=n * 365 / max(span_days, 1e-9))
    reasons = []
    if n >= min_samples:
        if accuracy is not None and accuracy < min_accuracy:
            reasons.append(f"accuracy {accuracy:.2f} < {min_accuracy:.2f}")
        if drawdown > max_drawdown:
            reasons.append(f"drawdown {drawdown:.1%} > {max_drawdown:.0%}")
        if sharpe is not None and sharpe < min_sharpe:
            reasons.append(f"Sharpe {sharpe:.2f} < {min_sharpe:.2f}")
    return {
        "needs_retraining": bool(reasons), "reasons": reasons, "samples": n, "days": days,
        "capped": capped, "accuracy": accuracy, "drawdown": round(drawdown, 6),
        "sharpe": None if sharpe is None else round(sharpe, 3), "computed_at": round(clock, 3),
    }  # fmt: skip


def _side(direction_prob: float | None) -> int:
    """+1 long, -1 short, 0 no view: the side a prediction of P(up) would have traded."""
    p = 0.5 if direction_prob is None else direction_prob
    return 1 if p > 0.5 else -1 if p < 0.5 else 0


def _max_drawdown(returns: list[float]) -> float:
    """The worst fall of the cumulative return from its running peak (0 when it never fell)."""
    equity, peak, drawdown = 0.0, 0.0, 0.0
    for r in returns:
        equity += r
        peak = max(peak, equity)
        drawdown = max(drawdown, peak - equity)
    return drawdown


def _sharpe(returns: list[float], *, per_year: float) -> float | None:
    """Annualised mean over standard deviation; None when undefined (n < 2 or no spread)."""
    if len(returns) < 2:
        return None
    mean = sum(returns) / len(returns)
    std = math.sqrt(sum((r - mean) ** 2 for r in returns) / (len(returns) - 1))
    return mean / std * math.sqrt(per_year) if std > 0 else None


#: The drift report's name among the store's shared reports.
DRIFT_REPORT = "drift"


class DriftMonitor:
    """The drift report every worker of every host serves, recomputed at most once per ``ttl_s``.

    ``/healthz`` is polled by load balancers and uptime checks, often every few seconds per
    worker; the report changes only when outcomes resolve (every ``TVGW_RESOLVE_INTERVAL_S``,
    60 s by default). The report is kept in the store (:mod:`storage.reports`) with the time it
    was computed: a health check reads it (one keyed row), and the first worker to find it older
    than ``ttl_s`` computes and stores a new one, so two hosts behind one proxy answer alike. It
    stays correct when the resolver is off, and adds one small write per ``ttl_s`` to the store.
    ``clock`` is wall-clock time shared by the hosts (epoch seconds).
    """

    def __init__(
        self,
        storage: Storage,
        thresholds: DriftThresholds,
        *,
        ttl_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ):
        self.storage = storage
        self.thresholds = thresholds
        self.ttl_s = ttl_s
        self.clock = clock
        self._lock = threading.Lock()

    def report(self) -> dict[str, Any]:
        """The stored report, or a fresh one when it is older than ``ttl_s`` (one computation
        at a time in this worker: concurrent health checks wait for it rather than repeat it)."""
        with self._lock:
            now = self.clock()
            stored = report_store.get_report(self.storage, DRIFT_REPORT)
            if stored is None or not 0 <= now - stored[0] < self.ttl_s:
                t = self.thresholds
                report = drift_report(
                    self.storage, min_accuracy=t.min_accuracy, max_drawdown=t.max_drawdown,
                    min_sharpe=t.min_sharpe, days=t.days, min_samples=t.min_samples,
                )  # fmt: skip
                if report["needs_retraining"]:  # once per computation, not once per health check
                    log.warning("model needs retraining: %s", "; ".join(report["reasons"]))
                report_store.put_report(self.storage, DRIFT_REPORT, now, report)
                stored = report_store.get_report(self.storage, DRIFT_REPORT) or (now, report)
            return dict(stored[1])


def start_outcome_resolver(
    storage: Storage,
    interval_s: float,
    stop: threading.Event | None = None,
    *,
    review: Callable[[], object] | None = None,
) -> threading.Thread:
    """Resolve due outcomes every ``interval_s`` seconds in one worker of all hosts (the lease
    holder; the ``resolved_at IS NULL`` guard would make two safe, the lease makes them not
    read the same candles twice), then run ``review`` (the champion/challenger review of the
    outcomes: its changes are guarded too, so a second reviewer would only repeat the work),
    until ``stop`` is set (a worker's exit, a test's teardown: never after its database is gone)."""

    def resolve() -> None:
        count = resolve_outcomes(storage)
        if count:
            log.info("resolved %d prediction outcomes", count)
        if review is not None:
            review()

    return start_owned_job(storage, "outcome-resolver", interval_s, resolve, stop=stop)
