"""The strategy's intended position as the truth (issue 20): which alerts of a chart still
apply, and whether moving to an alert's intended position repairs a gap. Pure: the door reads
what it needs (the account's booked position, the chart's marks) inside the alert's transaction
and hands it in.

* **Order.** Alerts of one chart (strategy, market, timeframe) are applied in the chart's order
  (bar time, then sequence number; see :func:`engine.continuity.chart_order`), not in the order
  they arrive. An alert that says a position (or closes or reverses) is *superseded* when a
  message the chart sent after it was already applied: the close that arrives after the reversal
  it preceded must not undo the reversal. Buys and sells without a position add up in any order
  and are never superseded.
* **Repair.** An alert that says the position before it and after it is sized to reach the
  position after it (the strategy's ``target_position`` mode). When the booked position is not
  the position before it, a message was lost (or refused) and moving to the intended position
  *repairs* that gap: the answer says so, and the repair is recorded once, with the alert. One
  repair may trade at most ``max_repair_fraction`` of equity beyond the alert's own order; a
  larger one is refused and told, never guessed at.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from engine.alert import Action, Alert
from engine.continuity import chart_order, same_position, utc_text
from engine.settings import StrategySettings
from storage.feeds import FeedMark

__all__ = ["Intent", "Repair", "intend", "later_in_chart", "mark_of"]


@dataclass(frozen=True)
class Repair:
    """A gap the alert's intended position closes: the chart's position before the alert, the
    booked one, and what the move trades beyond the alert's own order (chart units; None when
    the strategy sizes its own orders, so the units differ)."""

    before: float
    booked: float
    extra: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"chart_before": self.before, "booked_before": self.booked, "extra_traded": self.extra}

    @property
    def text(self) -> str:
        extra = "" if self.extra is None else f", trading {self.extra:g} beyond the alert's own order"
        return f"repaired a gap: booked {self.booked:g} where the chart had {self.before:g}{extra}"


@dataclass(frozen=True)
class Intent:
    """What the alert's intended position means for one account: superseded (``superseded_by``,
    the later message's alert id, and why), refused (``refusal``), or a repair to report."""

    superseded: str | None = None
    superseded_by: int | None = None
    repair: Repair | None = None
    refusal: str | None = None


def mark_of(alert: Alert) -> FeedMark:
    """The alert as a mark of its chart (not on file: id 0)."""
    return FeedMark(
        id=0, feed_id=0, kind="order", received_at=0.0, sequence=alert.sequence,
        bar_time=alert.time.timestamp() if alert.time else None,
        fired_at=alert.timenow.timestamp() if alert.timenow else None,
        position=alert.intended_position, prev_position=alert.previous_position,
    )  # fmt: skip


def later_in_chart(marks: Iterable[FeedMark], new: FeedMark) -> FeedMark | None:
    """An order alert of the chart already on file that the chart sent after ``new``: one on a
    later bar or with a later number, or one on the same bar and number whose position before
    is ``new``'s position after (the entry that followed this close)."""
    mine = chart_order(new)
    for m in marks:
        if m.kind != "order" or m.alert_id is None:
            continue
        order = chart_order(m)
        if order[:2] > mine[:2] or (order[:2] == mine[:2] and same_position(m.prev_position, new.position)):
            return m
    return None


def _order_matters(alert: Alert, strategy: StrategySettings) -> bool:
    """A position (or a close or a reversal) is overtaken by a later one; a buy or sell of
    some contracts adds up with the others in any order."""
    if strategy.target_position and alert.intended_position is not None:
        return True
    return alert.action not in (Action.BUY, Action.SELL)


def intend(
    alert: Alert,
    strategy: StrategySettings,
    *,
    booked: float,
    later: FeedMark | None,
    price: float | None,
    equity: float | None,
) -> Intent:
    """The alert's :class:`Intent` on an account holding ``booked`` (its position and pending
    orders), given ``later``, a message of its chart sent after it already on file (see
    :func:`later_in_chart`), and the price and equity the decision uses (for the repair's cap)."""
    if later is not None and _order_matters(alert, strategy):
        where = f"bar {utc_text(later.bar_time)}, sequence {later.sequence}"
        return Intent(
            superseded=f"superseded: alert {later.alert_id} ({where}), which its chart sent after this "
            "one, was already applied; acting on this one would undo it",
            superseded_by=later.alert_id,
        )
    intended, before = alert.intended_position, alert.previous_position
    if not strategy.target_position or intended is None or before is None:
        return Intent()
    if strategy.sizing != "alert":  # the account sizes its own orders: only the side compares
        if _side(booked) == _side(before):
            return Intent()
        return Intent(repair=Repair(before=before, booked=booked, extra=None))
    if same_position(booked, before) or abs(booked - before) <= 1e-12:
        return Intent()
    extra = max(0.0, abs(intended - booked) - abs(intended - before))
    cap = strategy.max_repair_fraction * (equity or 0.0)
    if extra > 0 and price is not None and math.isfinite(price) and extra * price > cap:
        return Intent(
            refusal=f"gap not repaired: booked {booked:g} where the chart had {before:g}; reaching "
            f"{intended:g} would trade {extra:g} ({extra * price:.2f} quote) beyond the alert's own order, "
            f"over strategies.max_repair_fraction ({strategy.max_repair_fraction:g} of equity, "
            f"{cap:.2f}): the position is left as it is for you to set"
        )
    return Intent(repair=Repair(before=before, booked=booked, extra=extra))


def _side(amount: float) -> int:
    return 0 if abs(amount) <= 1e-12 else (1 if amount > 0 else -1)
