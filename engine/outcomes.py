"""What happened after each prediction, and how good the predictions have been.

The resolver fills ``actual_direction`` (1 up, 0 not up), ``actual_magnitude`` (close at the
target bar over the close at prediction, minus one) and ``prediction_accuracy`` (1 when the
predicted side, P(up) ≥ 0.5, matched) once the target candle has closed and is in the candle
store. It is idempotent and safe with several workers: each UPDATE is guarded by
``resolved_at IS NULL``.

``evaluate_recent_performance`` reports accuracy next to its naive baselines (majority class,
base-rate Brier) with a 95% Wilson interval, so a model with no edge is seen to have none.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

from engine.timeframes import seconds
from storage import Storage
from storage import predictions as prediction_store

__all__ = ["drift_report", "evaluate_recent_performance", "resolve_outcomes", "start_outcome_resolver"]

log = logging.getLogger(__name__)


def resolve_outcomes(storage: Storage, now: float | None = None) -> int:
    """Fill the outcome of every prediction whose target candle has closed; returns how many."""
    clock = time.time() if now is None else now
    done = 0
    for row in prediction_store.unresolved_due(storage, clock):
        step = seconds(row["timeframe"])
        if row["target_time"] + step > clock:
            continue  # the target candle is still open
        target = storage.query_one(
            "SELECT close FROM candles WHERE symbol = ? AND timeframe = ? AND ts_ms = ?",
            (row["symbol"], row["timeframe"], int(row["target_time"] * 1000)),
        )
        price = row["price_at_prediction"]
        if target is None or not price:
            continue  # the store lacks that candle (yet): try again next run
        magnitude = target["close"] / price - 1.0
        direction = 1 if magnitude > 0 else 0
        predicted_up = (row["direction_prob"] or 0.5) >= 0.5
        with storage.transaction() as conn:
            done += prediction_store.resolve_prediction(
                conn, row["id"], actual_direction=direction, actual_magnitude=magnitude,
                prediction_accuracy=1.0 if predicted_up == bool(direction) else 0.0,
            )  # fmt: skip
    return done


def _wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float] | None:
    if n == 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (round(centre - half, 4), round(centre + half, 4))


def _auc(probs: list[float], labels: list[int]) -> float | None:
    """Rank AUC (Mann-Whitney); None when only one class occurred."""
    pos = [p for p, y in zip(probs, labels, strict=True) if y == 1]
    neg = [p for p, y in zip(probs, labels, strict=True) if y == 0]
    if not pos or not neg:
        return None
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def evaluate_recent_performance(
    storage: Storage, symbol: str | None = None, days: float = 30, now: float | None = None
) -> dict[str, Any]:
    """Accuracy of the resolved predictions of the last ``days`` days, with baselines."""
    clock = time.time() if now is None else now
    rows = prediction_store.resolved_since(storage, clock - days * 86_400, symbol)
    n = len(rows)
    out: dict[str, Any] = {"symbol": symbol, "days": days, "total_predictions": n}
    if n == 0:
        return {**out, "direction_accuracy": None, "avg_magnitude_error": None, "avg_confidence": None,
                "auc": None, "brier_score": None, "base_rate": None, "base_rate_brier": None,
                "majority_accuracy": None, "accuracy_ci95": None,
                "note": "no resolved predictions in the window yet"}  # fmt: skip
    probs = [float(r["direction_prob"] if r["direction_prob"] is not None else 0.5) for r in rows]
    labels = [int(r["actual_direction"]) for r in rows]
    hits = sum(float(r["prediction_accuracy"]) for r in rows)
    base = sum(labels) / n
    errors = [
        abs(r["magnitude_pred"] - r["actual_magnitude"]) for r in rows if r["magnitude_pred"] is not None
    ]
    auc = _auc(probs, labels)
    return {
        **out,
        "direction_accuracy": round(hits / n, 4),
        "accuracy_ci95": _wilson(hits, n),
        "majority_accuracy": round(max(base, 1 - base), 4),
        "avg_magnitude_error": round(sum(errors) / len(errors), 6) if errors else None,
        "avg_confidence": round(sum(float(r["confidence"] or 0) for r in rows) / n, 4),
        "auc": None if auc is None else round(auc, 4),
        "brier_score": round(sum((p - y) ** 2 for p, y in zip(probs, labels, strict=True)) / n, 4),
        "base_rate": round(base, 4),
        "base_rate_brier": round(base * (1 - base), 4),
        "synthetic_predictions": sum(int(r["synthetic"]) for r in rows),
    }


def drift_report(
    storage: Storage,
    *,
    min_accuracy: float,
    max_drawdown: float,
    min_sharpe: float,
    days: float = 7,
    min_samples: int = 20,
    now: float | None = None,
) -> dict[str, Any]:
    """Does the model need retraining? Judged on the last ``days`` of resolved predictions.

    The return series is what trading each prediction's side would have earned:
    ``r = sign(P(up) − 0.5) × actual_magnitude``. Drawdown is the worst fall of its cumulative
    sum; Sharpe is ``mean / std × sqrt(n per year)``. Below ``min_samples`` nothing is flagged:
    a handful of outcomes says nothing either way.
    """
    clock = time.time() if now is None else now
    rows = prediction_store.resolved_since(storage, clock - days * 86_400)
    perf = evaluate_recent_performance(storage, None, days, now=clock)
    returns = [
        (1 if (r["direction_prob"] or 0.5) > 0.5 else -1 if (r["direction_prob"] or 0.5) < 0.5 else 0)
        * r["actual_magnitude"]
        for r in rows
    ]
    equity, peak, drawdown = 0.0, 0.0, 0.0
    for r in returns:
        equity += r
        peak = max(peak, equity)
        drawdown = max(drawdown, peak - equity)
    sharpe = None
    if len(returns) > 1:
        mean = sum(returns) / len(returns)
        std = math.sqrt(sum((r - mean) ** 2 for r in returns) / (len(returns) - 1))
        per_year = len(returns) * 365 / days
        sharpe = mean / std * math.sqrt(per_year) if std > 0 else None
    reasons = []
    if len(returns) >= min_samples:
        if perf["direction_accuracy"] is not None and perf["direction_accuracy"] < min_accuracy:
            reasons.append(f"accuracy {perf['direction_accuracy']:.2f} < {min_accuracy:.2f}")
        if drawdown > max_drawdown:
            reasons.append(f"drawdown {drawdown:.1%} > {max_drawdown:.0%}")
        if sharpe is not None and sharpe < min_sharpe:
            reasons.append(f"Sharpe {sharpe:.2f} < {min_sharpe:.2f}")
    return {
        "needs_retraining": bool(reasons), "reasons": reasons, "samples": len(returns), "days": days,
        "accuracy": perf["direction_accuracy"], "drawdown": round(drawdown, 6),
        "sharpe": None if sharpe is None else round(sharpe, 3),
    }  # fmt: skip


def start_outcome_resolver(storage: Storage, interval_s: float) -> threading.Thread:
    """A daemon thread per worker that resolves due outcomes every ``interval_s`` seconds."""

    def loop() -> None:
        while True:
            time.sleep(interval_s)
            try:
                count = resolve_outcomes(storage)
            except Exception:
                log.exception("outcome resolver failed; retrying in %.0f s", interval_s)
                continue
            if count:
                log.info("resolved %d prediction outcomes", count)

    thread = threading.Thread(target=loop, name="tvgw-outcomes", daemon=True)
    thread.start()
    return thread
