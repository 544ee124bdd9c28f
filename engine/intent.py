"""The strategy's intended position as the truth (issue 20): which alerts of a chart still
apply, whether moving to an alert's intended position repairs a gap, and a flip as one step.
The rules (:func:`intend`, :func:`split_flip`) are pure; the door (:mod:`engine.engine`) calls
:func:`chart_marks` and :func:`record_steps` inside the alert's transaction around them.

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
* **Flip.** Long to short (or back) is one step of two orders: a reduce-only close of the booked
  position first, then the opening order (:mod:`engine.settlement` sends the second only once
  the first filled whole), so the opening order never acts on a position that is not there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from engine.alert import Alert
from engine.continuity import RECENT_MARKS, bar_seconds, chart_order, same_position, utc_text
from engine.decide import EPSILON, Book, order_matters
from engine.decision import Decision, MarketSnapshot
from engine.settings import StrategySettings
from storage import Connection
from storage import feeds as feed_store
from storage import timeline as step_store
from storage.feeds import FeedMark

__all__ = [
    "Intent",
    "Repair",
    "applied",
    "chart_marks",
    "for_account",
    "intend",
    "later_in_chart",
    "mark_of",
    "record_steps",
    "refused",
    "split_flip",
]


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
    is ``new``'s position after (the entry that followed this close) while its position after
    is not ``new``'s before (then it is the entry this close ends)."""
    for m in marks:
        if m.kind != "order" or m.alert_id is None:
            continue
        mine, theirs = _comparable(new, m)
        if mine is None or theirs is None:
            continue  # told in different ways (bar time, or only when fired): no order to judge
        if theirs > mine:
            return m
        # One bar, one number (an entry and its stop's exit fill on the same bar): ``m`` came
        # after ``new`` when it starts where ``new`` ends, unless ``new`` starts where it ends.
        follows = same_position(m.prev_position, new.position)
        if theirs == mine and follows and not same_position(m.position, new.prev_position):
            return m
    return None


def _comparable(a: FeedMark, b: FeedMark) -> tuple[tuple[float, int] | None, tuple[float, int] | None]:
    """The chart order of two messages by what both say: their bars (then numbers) when both
    name a bar, else when both fired; else nothing (a bar's open and a firing time do not
    compare: the alert fired on a bar opens after it)."""
    if a.bar_time is not None and b.bar_time is not None:
        return chart_order(a)[:2], chart_order(b)[:2]
    if a.fired_at is not None and b.fired_at is not None and a.bar_time is None and b.bar_time is None:
        return (a.fired_at, -1 if a.sequence is None else a.sequence), (
            b.fired_at,
            -1 if b.sequence is None else b.sequence,
        )
    return None, None


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
    if later is not None and order_matters(alert, strategy):
        where = f"bar {utc_text(later.bar_time)}, sequence {later.sequence}"
        return Intent(
            superseded=f"out of order: alert {later.alert_id} ({where}), which its chart sent after this "
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


# --- around the rules, in the alert's transaction --------------------------------------------


def chart_marks(
    conn: Connection, alert: Alert, strategy: StrategySettings, symbol: str | None
) -> list[FeedMark]:
    """The newest order alerts on file of the chart that sent ``alert`` (its feed)."""
    if symbol is None or alert.strategy_id is None:
        return []
    timeframe, _ = bar_seconds(alert.interval, strategy.timeframe)
    return feed_store.chart_marks(conn, alert.strategy_id, symbol, timeframe, limit=RECENT_MARKS)


def for_account(
    alert: Alert,
    terms: StrategySettings,
    symbol: str | None,
    book: Book,
    snapshot: MarketSnapshot,
    chart: Iterable[FeedMark],
) -> Intent:
    """:func:`intend` on one account's book as the alert's transaction reads it (an annotating
    strategy, which books nothing, has none)."""
    if symbol is None or terms.mode == "annotate":
        return Intent()
    held = next((p.amount for p in book.positions if p.symbol == symbol), 0.0)
    price = snapshot.price.price if snapshot.price is not None else None
    return intend(
        alert, terms, booked=held + book.pending, later=later_in_chart(chart, mark_of(alert)), price=price,
        equity=snapshot.equity,
    )  # fmt: skip


def applied(intent: Intent, decision: Decision) -> Decision:
    """``decision`` with what the intent says about it: a repair it carried out, in its details
    and its reason (an order to place, or already at the intended position)."""
    if intent.repair is None or decision.status not in ("processing", "annotated"):
        return decision
    return decision.with_result(
        reason=f"{decision.reason}; {intent.repair.text}",
        details={**decision.details, "repair": intent.repair.to_dict()},
    )


def refused(intent: Intent, decision: Decision) -> Decision:
    """The decision of an alert its intent stops (superseded, or a repair over its cap)."""
    if intent.superseded is not None:
        details = {**decision.details, "superseded_by": intent.superseded_by}
        return decision.with_result(status="rejected", reason=intent.superseded, details=details)
    assert intent.refusal is not None
    return decision.with_result(
        status="rejected",
        reason=intent.refusal,
        risk_codes=("repair_over_cap",),
        risk_reasons=(intent.refusal,),
    )


def split_flip(decision: Decision, fit: Callable[[float], tuple[float, str | None]]) -> Decision:
    """A decision whose order crosses from one side to the other, as its reduce-only close of
    the booked position (``close_first``) and the opening order of what is left, ``fit`` to the
    market; a rest too small to trade leaves the close alone, saying so. A booked position the
    market could not close by itself (dust below its minimum amount, left by rounding) is no
    flip: the one order crosses it, as the decision planned (a close of it alone would fail, and
    stop the flip with it)."""
    order, before = decision.order, decision.current_position or 0.0
    if order is None or order.reduce_only or abs(before) <= EPSILON:
        return decision
    after = before + (order.amount if order.side == "buy" else -order.amount)
    if abs(after) <= EPSILON or (after > 0) == (before > 0):
        return decision
    if fit(abs(before))[1] is not None:
        return decision
    close = replace(order, amount=abs(before), reduce_only=True, exits=None, stop_loss=None, leverage=None,
                    margin_mode=None)  # fmt: skip
    rest, problem = fit(order.amount - abs(before))
    flip = {"close": abs(before), "open": rest if problem is None else 0.0}
    if problem is not None or rest <= EPSILON:
        return decision.with_result(
            order=close, reason=f"{decision.reason}; the flip's opening order is not sent: {problem}",
            details={**decision.details, "flip": flip},
        )  # fmt: skip
    return decision.with_result(
        order=replace(order, amount=rest), close_first=close, details={**decision.details, "flip": flip}
    )


def record_steps(conn: Connection, alert_id: int, decisions: Iterable[Decision], now: float) -> None:
    """Each account's repair (linked to the gap its chart's marks showed for this alert, else to
    a position mismatch told on its chart, when there is one) and each supersession, as steps of
    the alert: the repair is on file once, with the alert that made it, and settles that gap."""
    gaps = [g for g in feed_store.gaps_for_alert(conn, alert_id) if g.kind == "position_gap"]
    gaps += feed_store.open_mismatches(conn, alert_id)
    for decision in decisions:
        repair = decision.details.get("repair")
        if repair is not None:
            step_store.add_step(
                conn, alert_id, "repaired", now, gap_id=gaps[0].id if gaps else None,
                detail={"account": decision.account, **repair},
            )  # fmt: skip
        elif decision.details.get("superseded_by") is not None:
            step_store.add_step(
                conn, alert_id, "superseded", now,
                detail={"account": decision.account, "by_alert": decision.details["superseded_by"]},
            )  # fmt: skip
