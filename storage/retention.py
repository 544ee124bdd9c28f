"""Retention: what the store keeps, and for how long, so it does not grow without bound.

Under a steady alert stream five kinds of rows pile up without being read again after a while:
equity snapshots (one per order), resolved predictions (one per enriched alert), once-only
notification keys, the raw bodies of alerts, and the marks each chart's messages leave on its
feed (one per heartbeat: a chart sending one every bar is a steady stream of its own).
:func:`prune` removes what is older than the :class:`RetentionPolicy` says, and never what the
gateway still reads:

* equity: each account's peak (the drawdown limit measures from the peak ever) and its newest
  snapshot are kept whatever their age; the start-of-day equity is always within the period;
* predictions: only resolved ones (an unresolved one is still waiting for its outcome); the
  policy's minimum keeps the drift window and the dashboard's 30 days of accuracy;
* notifications: keys name their day, so an old key is never claimed again;
* alerts: the row stays (its idempotency key keeps refusing a replay; its status, reason and
  decision are the record, and its orders point at it); its raw ``payload`` and its
  ``ml_analysis`` (the signal's detail, whose figures the prediction log keeps) are cleared;
* feed marks: each feed's newest :data:`storage.feeds.RECENT_MARKS` of each kind (what the
  continuity rules read: the message before a new one, the cadence), its highest-numbered
  heartbeat (the one the next is expected after) and every mark a gap names are kept whatever
  their age. The gaps themselves and ``alert_steps`` stay: a gap is a missed message, rare, and
  an alert's steps (one or two per order alert) are its timeline, kept with the alert's orders.

Each batch is a short transaction of its own: a backlog of a year is pruned without holding the
store's one write lock for longer than a batch, so alerts keep their latency meanwhile.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from storage.database import Storage
from storage.feeds import RECENT_MARKS

__all__ = ["BATCH", "Pruned", "RetentionPolicy", "prune"]

DAY = 86_400.0

#: Rows removed per transaction (a few milliseconds of the write lock).
BATCH = 2_000


@dataclass(frozen=True)
class RetentionPolicy:
    """Days each kind of row is kept (0: forever). The defaults keep a year of equity and
    predictions (the dashboard's curves and every accuracy window), 30 days of notification
    keys, 90 days of raw alert bodies (and their ML analysis) and 30 days of feed marks (the
    daily continuity summary counts heartbeats from them)."""

    equity_days: float = 365.0
    predictions_days: float = 365.0
    notifications_days: float = 30.0
    alert_bodies_days: float = 90.0
    feed_marks_days: float = 30.0


@dataclass(frozen=True)
class Pruned:
    """How many rows one :func:`prune` removed (or, for alerts, emptied)."""

    equity_snapshots: int = 0
    predictions: int = 0
    notifications: int = 0
    alert_bodies: int = 0
    feed_marks: int = 0

    def total(self) -> int:
        return sum(dataclasses.astuple(self))


#: One batch of each kind: ``?`` is the cutoff (epoch seconds), then the batch size.
_EQUITY = (
    "DELETE FROM equity_snapshots WHERE id IN (SELECT e.id FROM equity_snapshots e WHERE e.at < ?"
    " AND e.id <> (SELECT p.id FROM equity_snapshots p WHERE p.broker = e.broker"
    " ORDER BY p.equity DESC, p.id LIMIT 1)"
    " AND e.id <> (SELECT n.id FROM equity_snapshots n WHERE n.broker = e.broker"
    " ORDER BY n.at DESC, n.id DESC LIMIT 1) LIMIT ?)"
)
_PREDICTIONS = (
    "DELETE FROM ml_predictions WHERE id IN (SELECT id FROM ml_predictions"
    " WHERE resolved_at IS NOT NULL AND timestamp < ? LIMIT ?)"
)
_NOTIFICATIONS = (
    "DELETE FROM notifications_sent WHERE key IN"
    " (SELECT key FROM notifications_sent WHERE sent_at < ? LIMIT ?)"
)
_ALERT_BODIES = (
    "UPDATE alerts SET payload = NULL, ml_analysis = NULL WHERE id IN (SELECT id FROM alerts"
    " WHERE payload IS NOT NULL AND received_at < ? LIMIT ?)"
)
#: Older than the cutoff, and not among its feed's newest RECENT_MARKS of its kind (the mark that
#: many back, or none when there are fewer), not its feed's highest-numbered heartbeat, and named
#: by no gap (``feed_gaps.mark_id`` refers to it).
_FEED_MARKS = (
    "DELETE FROM feed_marks WHERE id IN (SELECT m.id FROM feed_marks m WHERE m.received_at < ?"
    " AND m.id < (SELECT k.id FROM feed_marks k WHERE k.feed_id = m.feed_id AND k.kind = m.kind"
    f" ORDER BY k.id DESC LIMIT 1 OFFSET {RECENT_MARKS - 1})"
    " AND (m.kind <> 'heartbeat' OR m.sequence < (SELECT MAX(h.sequence) FROM feed_marks h"
    " WHERE h.feed_id = m.feed_id AND h.kind = 'heartbeat'))"
    " AND NOT EXISTS (SELECT 1 FROM feed_gaps g WHERE g.mark_id = m.id) LIMIT ?)"
)


def prune(
    storage: Storage, policy: RetentionPolicy, *, now: float | None = None, batch: int = BATCH
) -> Pruned:
    """Remove what ``policy`` no longer keeps, in batches of ``batch`` rows; how many of each."""
    now = time.time() if now is None else now
    counts = {}
    for kind, statement, days in (
        ("equity_snapshots", _EQUITY, policy.equity_days),
        ("predictions", _PREDICTIONS, policy.predictions_days),
        ("notifications", _NOTIFICATIONS, policy.notifications_days),
        ("alert_bodies", _ALERT_BODIES, policy.alert_bodies_days),
        ("feed_marks", _FEED_MARKS, policy.feed_marks_days),
    ):
        counts[kind] = 0 if days <= 0 else _in_batches(storage, statement, now - days * DAY, batch)
    return Pruned(**counts)


def _in_batches(storage: Storage, statement: str, cutoff: float, batch: int) -> int:
    total = 0
    while True:
        with storage.transaction() as conn:
            done = int(conn.execute(statement, (cutoff, batch)).rowcount)
        total += done
        if done < batch:
            return total
