"""No alert missed in silence: each chart's feed of heartbeats and order alerts, and the gaps in it.

TradingView does not resend a webhook it failed to deliver. So the bundled scripts number what
they send (``sequence``, the bar index), say the strategy's position after each order and before
it, and can send a heartbeat at bar close every ``heartbeat_bars`` bars. Per (strategy, market,
timeframe), a *feed*, the gateway then notices three kinds of gap:

* ``heartbeat_missed``: the next heartbeat is overdue: its bar closed more than the grace ago
  (found by the clock, a background check with one owner across workers);
* ``sequence_gap``: a heartbeat arrives whose number skips some (found on arrival);
* ``position_gap``: a message says the strategy's position before it was not the one the
  message before it (in chart order: bar time, then sequence) left: an order alert between them
  was lost. A late alert that fits the hole is recorded as having ``arrived_late``.

Each gap is recorded once (``storage.feeds``) and told by whoever recorded it. The rules below
are pure functions of the marks; :class:`Continuity` reads and writes them.

The expectation assumes bars follow each other without pause, as crypto markets trade: on a
market that closes (nights, weekends) the first heartbeat after the pause is late by the pause.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import Field

from common.timeframes import canonical_interval, from_tradingview, seconds
from engine.alert import Alert
from engine.settings import FrozenSettings, StrategySettings
from storage import Connection, Storage
from storage import feeds as feed_store
from storage import timeline as step_store
from storage.feeds import Feed, FeedGap, FeedMark

__all__ = [
    "Continuity",
    "ContinuitySettings",
    "Expectation",
    "FeedStatus",
    "Finding",
    "HeartbeatOutcome",
    "Notice",
    "bar_seconds",
    "cadence",
    "chart_order",
    "expectation",
    "position_gap",
    "predecessor",
    "same_position",
    "sequence_gap",
    "utc_text",
]

#: Positions that differ by less than this share of their size are the same position (the
#: chart prints sizes with few decimals).
SAME_POSITION = 1e-6
#: Marks a new one is placed among (in chart order) to find the message before it: alerts of
#: one chart arrive at most a few out of order. Retention keeps at least these of each feed.
RECENT_MARKS = feed_store.RECENT_MARKS
#: The lease that gives the overdue-heartbeat check one owner.
OVERDUE_LEASE = "continuity-overdue-check"
#: Heartbeats whose spacing teaches a feed's cadence when the chart does not say it (at most
#: RECENT_MARKS: retention keeps that many of each feed's heartbeats).
CADENCE_SAMPLE = 10


class ContinuitySettings(FrozenSettings):
    """How the gateway watches its feeds (``TVGW_HEARTBEAT_GRACE_S``, ``TVGW_CONTINUITY_CHECK_S``,
    ``TVGW_GAP_PROBLEM_S``)."""

    #: Seconds after the expected bar closed before its heartbeat counts as missed (TradingView
    #: usually delivers within a few seconds; a strategy may set its own ``heartbeat_grace_s``).
    grace_s: float = Field(default=30.0, gt=0, le=86_400)
    #: Seconds between checks for overdue heartbeats (0: off; gaps are then found on arrival only).
    check_interval_s: float = Field(default=5.0, ge=0, le=3600)
    #: How long a gap stays a ``/healthz`` problem after it was found, unless settled first.
    problem_window_s: float = Field(default=3600.0, gt=0)


# --- pure rules --------------------------------------------------------------------------------


def bar_seconds(interval: str | None, default_timeframe: str) -> tuple[str, int]:
    """(timeframe, its length in seconds) of a chart interval: ``1`` → ``1m``, ``60`` → ``1h``,
    ``15S`` → ``15S`` (15), ``1M`` → a month counted as 31 days (never expected early)."""
    text = canonical_interval(interval)
    if text is not None and text.endswith("S") and text[:-1].isdigit() and int(text[:-1]) > 0:
        return text, int(text[:-1])
    if text is not None and text.endswith("M") and (text[:-1] or "1").isdigit():
        return text, int(text[:-1] or "1") * 31 * 86_400
    timeframe = from_tradingview(interval, default_timeframe)
    return timeframe, seconds(timeframe)


def cadence(heartbeats: Iterable[FeedMark]) -> int:
    """Bars between heartbeats: what the newest says (``heartbeat_bars``), else the smallest
    spacing of their sequence numbers, else 1. Learn it from heartbeats already on file, never
    from one that just arrived: its jump may be the very gap to find."""
    marks = sorted((m for m in heartbeats if m.sequence is not None), key=lambda m: m.id, reverse=True)
    if marks and marks[0].heartbeat_bars:
        return int(marks[0].heartbeat_bars)
    numbers = sorted({int(m.sequence) for m in marks[:CADENCE_SAMPLE] if m.sequence is not None})
    steps = [b - a for a, b in itertools.pairwise(numbers) if b > a]
    return max(1, min(steps)) if steps else 1


@dataclass(frozen=True)
class Expectation:
    """The next heartbeat a feed owes: its number, its bar, and when it is overdue."""

    sequence: int | None
    bar_time: float | None
    due_at: float
    step: int


def expectation(last: FeedMark, step: int, bar_length: int, grace: float) -> Expectation:
    """After heartbeat ``last``, the next is bar ``step`` bars later; it is sent when that bar
    closes, so it is overdue ``grace`` seconds after the close."""
    sequence = None if last.sequence is None else int(last.sequence) + step
    if last.bar_time is not None:
        bar = last.bar_time + step * bar_length
        return Expectation(sequence, bar, bar + bar_length + grace, step)
    sent = last.fired_at if last.fired_at is not None else last.received_at
    return Expectation(sequence, None, sent + step * bar_length + grace, step)


@dataclass(frozen=True)
class Finding:
    """A gap before it is recorded."""

    kind: str
    detail: str
    sequence_from: int | None = None
    sequence_to: int | None = None
    missed: int = 1
    bar_time: float | None = None
    expected_by: float | None = None


def sequence_gap(last: FeedMark | None, new: FeedMark, step: int, bar_length: int) -> Finding | None:
    """The heartbeats missing between ``last`` (the feed's highest number before) and ``new``.
    A number at or below the last is a late or renumbered one (a restarted alert): no gap."""
    if last is None or last.sequence is None or new.sequence is None:
        return None
    jump = int(new.sequence) - int(last.sequence)
    if jump <= step:
        return None
    missed = (jump - 1) // step
    first = int(last.sequence) + step
    bar = None if last.bar_time is None else last.bar_time + step * bar_length
    return Finding(
        "sequence_gap",
        f"number {new.sequence} arrived after {last.sequence} (one every {step} bar{'s' * (step > 1)})",
        sequence_from=first, sequence_to=first + (missed - 1) * step, missed=missed, bar_time=bar,
    )  # fmt: skip


_RANK = {"order": 0, "heartbeat": 1}


def chart_order(mark: FeedMark) -> tuple[float, int, int]:
    """Where a message stands in the chart's own order: its bar, then its sequence number, then
    an order fill before the heartbeat that reports the position after it."""
    when = mark.bar_time if mark.bar_time is not None else (mark.fired_at or mark.received_at)
    return (when, -1 if mark.sequence is None else int(mark.sequence), _RANK.get(mark.kind, 2))


def same_position(a: float | None, b: float | None) -> bool:
    """Whether two positions are one (within :data:`SAME_POSITION` of their size)."""
    if a is None or b is None:
        return False
    return abs(a - b) <= SAME_POSITION * max(1.0, abs(a), abs(b))


def _before(mark: FeedMark) -> float | None:
    """The position a message says the strategy held just before it (a heartbeat: its own)."""
    return mark.prev_position if mark.kind == "order" else mark.position


def predecessor(marks: Iterable[FeedMark], new: FeedMark) -> FeedMark | None:
    """The message just before ``new`` in chart order among ``marks`` that says a position. Of
    two sent on the same bar with the same number (a close and the entry after it), the one
    whose position after is ``new``'s position before comes first."""
    mine = chart_order(new)
    known = [m for m in marks if m.id != new.id and m.position is not None]
    for m in known:
        if chart_order(m) == mine and same_position(m.position, _before(new)):
            return m
    earlier = [m for m in known if chart_order(m) < mine]
    return max(earlier, key=lambda m: (chart_order(m), m.id), default=None)


def position_gap(previous: FeedMark | None, new: FeedMark) -> Finding | None:
    """An order alert lost between ``previous`` and ``new``: the position ``new`` says the
    strategy held before it is not the one ``previous`` left."""
    before = _before(new)
    if previous is None or previous.position is None or before is None:
        return None
    if same_position(previous.position, before):
        return None
    what = "order alert" if new.kind == "order" else "heartbeat"
    return Finding(
        "position_gap",
        f"the position went from {previous.position:g} (after {_describe(previous)}) to {before:g} "
        f"(before this {what})",
        bar_time=new.bar_time,
    )


def _describe(mark: FeedMark) -> str:
    what = f"alert {mark.alert_id}" if mark.alert_id is not None else "the heartbeat"
    return f"{what} of bar {utc_text(mark.bar_time)}" if mark.bar_time is not None else what


def utc_text(epoch: float | None) -> str:
    """An epoch as the UTC text the messages show (``2024-05-01T12:00:00Z``), ``?`` for none."""
    if epoch is None or not math.isfinite(epoch):
        return "?"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- what is told --------------------------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    """A gap as recorded, with its feed: what notifications, answers and /healthz say."""

    gap: FeedGap
    feed: Feed

    @property
    def text(self) -> str:
        g, f = self.gap, self.feed
        where = f"strategy {f.strategy_id} on {f.symbol} {f.timeframe}"
        if g.kind == "heartbeat_missed":
            return (
                f"MISSED heartbeat of {where}: bar {utc_text(g.bar_time)} (sequence {g.sequence_from}) "
                f"not heard by {utc_text(g.expected_by)}"
            )
        if g.kind == "position_mismatch":
            return f"POSITION MISMATCH of {where} at bar {utc_text(g.bar_time)}: {g.detail}"
        if g.kind == "sequence_gap":
            numbers = f"{g.sequence_from}" if g.missed == 1 else f"{g.sequence_from}..{g.sequence_to}"
            plural = "s" if g.missed > 1 else ""
            return (
                f"MISSED {g.missed} heartbeat{plural} of {where} from bar {utc_text(g.bar_time)} "
                f"(sequence {numbers}): {g.detail}"
            )
        return f"MISSING order alert of {where} before bar {utc_text(g.bar_time)}: {g.detail}"

    def to_dict(self) -> dict[str, Any]:
        g, f = self.gap, self.feed
        return {
            "gap_id": g.id, "kind": g.kind, "strategy_id": f.strategy_id, "symbol": f.symbol,
            "timeframe": f.timeframe, "bar_time": utc_text(g.bar_time) if g.bar_time is not None else None,
            "sequence_from": g.sequence_from, "sequence_to": g.sequence_to, "missed": g.missed,
            "expected_by": utc_text(g.expected_by) if g.expected_by is not None else None,
            "alert_id": g.alert_id, "detail": g.detail, "text": self.text,
        }  # fmt: skip


@dataclass(frozen=True)
class HeartbeatOutcome:
    """What one heartbeat did: its mark (None for a repeat), its feed, the gaps it revealed and
    what the feed owes next."""

    feed: Feed
    mark: FeedMark | None
    notices: tuple[Notice, ...]
    next: Expectation | None

    def to_dict(self) -> dict[str, Any]:
        f = self.feed
        out: dict[str, Any] = {
            "strategy_id": f.strategy_id, "symbol": f.symbol, "timeframe": f.timeframe,
            "sequence": None if self.mark is None else self.mark.sequence,
        }  # fmt: skip
        if self.next is not None:
            out["next"] = {
                "sequence": self.next.sequence, "bar_time": utc_text(self.next.bar_time)
                if self.next.bar_time is not None else None, "overdue_after": utc_text(self.next.due_at),
                "every_bars": self.next.step,
            }  # fmt: skip
        return out


@dataclass(frozen=True)
class FeedStatus:
    """One feed as the operator sees it: its newest heartbeat, what it owes next, whether that
    is overdue now, and its unsettled gaps."""

    feed: Feed
    last_heartbeat: FeedMark | None
    last_message_at: float | None
    next: Expectation | None
    overdue: bool
    gaps: tuple[Notice, ...]

    def to_dict(self) -> dict[str, Any]:
        f, last = self.feed, self.last_heartbeat
        status = "gap" if self.gaps else "overdue" if self.overdue else "ok" if last else "no_heartbeats"
        return {
            "strategy_id": f.strategy_id, "symbol": f.symbol, "timeframe": f.timeframe, "status": status,
            "last_heartbeat": None if last is None else {
                "sequence": last.sequence, "bar_time": utc_text(last.bar_time) if last.bar_time else None,
                "received_at": utc_text(last.received_at), "position": last.position,
            },
            "last_message_at": utc_text(self.last_message_at) if self.last_message_at else None,
            "next": None if self.next is None else {
                "sequence": self.next.sequence, "every_bars": self.next.step,
                "bar_time": utc_text(self.next.bar_time) if self.next.bar_time is not None else None,
                "overdue_after": utc_text(self.next.due_at),
            },
            "gaps": [n.to_dict() for n in self.gaps],
        }  # fmt: skip


# --- the feeds, on file ----------------------------------------------------------------------


class Continuity:
    """Records what each message says about its feed and finds the gaps (see the module
    docstring). ``strategies`` give each feed its default timeframe and grace."""

    def __init__(
        self,
        storage: Storage,
        settings: ContinuitySettings,
        strategies: Mapping[str, StrategySettings],
        *,
        clock: Callable[[], float] | None = None,
    ):
        import time

        self.storage = storage
        self.settings = settings
        self.strategies = strategies
        self.clock = clock or time.time
        self._known: dict[tuple[str, str, str], Feed] = {}

    def grace(self, strategy_id: str) -> float:
        strategy = self.strategies.get(strategy_id)
        own = strategy.heartbeat_grace_s if strategy is not None else None
        return own if own is not None else self.settings.grace_s

    def _feed(self, conn: Connection, alert: Alert, strategy_id: str, symbol: str) -> Feed:
        """The alert's feed; one already on file is remembered (feeds are never deleted), so a
        burst of alerts does not ask for it again (a new one is not: its row might roll back)."""
        strategy = self.strategies.get(strategy_id)
        timeframe, length = bar_seconds(alert.interval, strategy.timeframe if strategy else "1h")
        key = (strategy_id, symbol, timeframe)
        known = self._known.get(key)
        if known is not None:
            return known
        feed, created = feed_store.feed_of(
            conn, strategy_id=strategy_id, symbol=symbol, timeframe=timeframe, bar_seconds=length,
            now=self.clock(),
        )  # fmt: skip
        if not created:
            self._known[key] = feed
        return feed

    def heartbeat(
        self, alert: Alert, symbol: str, received_at: float, booked: float | None = None
    ) -> HeartbeatOutcome:
        """Record heartbeat ``alert`` of strategy ``alert.strategy_id`` on ``symbol`` (one write
        transaction) and the gaps it reveals; with ``booked`` (the account's position in the
        chart's units), a position the chart holds that the book does not is told too, once a
        problem window, never acted on: no alert came to say how to get there."""
        assert alert.strategy_id is not None
        strategy_id = alert.strategy_id
        return self.storage.write_batched(
            lambda conn: self._heartbeat(conn, alert, strategy_id, symbol, received_at, booked)
        )

    def _heartbeat(
        self,
        conn: Connection,
        alert: Alert,
        strategy_id: str,
        symbol: str,
        received_at: float,
        booked: float | None,
    ) -> HeartbeatOutcome:
        feed = self._feed(conn, alert, strategy_id, symbol)
        bar = alert.time.timestamp() if alert.time else None
        number = alert.sequence
        if number is None:  # the bar time makes one: the bar's count since 1970
            number = int((bar if bar is not None else received_at) // feed.bar_seconds)
        marks = feed_store.recent_marks(conn, feed.id, limit=RECENT_MARKS)
        last = feed_store.newest_heartbeat(conn, feed.id)
        mark = feed_store.add_mark(
            conn, feed_id=feed.id, kind="heartbeat", received_at=received_at, sequence=number, bar_time=bar,
            fired_at=alert.timenow.timestamp() if alert.timenow else None,
            heartbeat_bars=alert.heartbeat_bars, position=alert.intended_position,
        )  # fmt: skip
        if mark is None:
            return HeartbeatOutcome(feed, None, (), None)
        heartbeats = [m for m in marks if m.kind == "heartbeat"]
        step = int(mark.heartbeat_bars) if mark.heartbeat_bars else cadence(heartbeats)
        findings = []
        gap = sequence_gap(last, mark, step, feed.bar_seconds)
        if gap is not None:
            findings.append(gap)
        hole = position_gap(predecessor(marks, mark), mark)
        if hole is not None:
            findings.append(hole)
        elif (drift := self._mismatch(conn, feed, mark, booked)) is not None:
            findings.append(drift)
        notices = self._record(conn, feed, findings, mark=mark, alert_id=None)
        newest = mark if last is None or last.sequence is None or (number or 0) >= last.sequence else last
        return HeartbeatOutcome(
            feed, mark, tuple(notices), expectation(newest, step, feed.bar_seconds, self.grace(strategy_id))
        )

    def _mismatch(self, conn: Connection, feed: Feed, mark: FeedMark, booked: float | None) -> Finding | None:
        """The chart's position at this heartbeat against the booked one, once a problem window."""
        if booked is None or mark.position is None or same_position(booked, mark.position):
            return None
        since = self.clock() - self.settings.problem_window_s
        told = feed_store.gap_rows(conn, since=since, feed_id=feed.id, limit=50)
        if any(r.gap.kind == "position_mismatch" and not r.settled_by for r in told):
            return None
        return Finding(
            "position_mismatch",
            f"the chart holds {mark.position:g}, the book {booked:g}, and no alert came to move it: "
            "nothing was traded (the next alert that says its position repairs it, or set it by hand)",
            bar_time=mark.bar_time,
        )

    def order_mark(
        self, conn: Connection, alert: Alert, alert_id: int, symbol: str, received_at: float
    ) -> list[Notice]:
        """Inside the order alert's own transaction: its mark on its feed, a gap it reveals (an
        order alert lost before it), and the gaps it fills by arriving late."""
        assert alert.strategy_id is not None
        feed = self._feed(conn, alert, alert.strategy_id, symbol)
        marks = feed_store.recent_marks(conn, feed.id, limit=RECENT_MARKS)
        mark = feed_store.add_mark(
            conn, feed_id=feed.id, kind="order", received_at=received_at, alert_id=alert_id,
            sequence=alert.sequence, bar_time=alert.time.timestamp() if alert.time else None,
            fired_at=alert.timenow.timestamp() if alert.timenow else None,
            position=alert.intended_position, prev_position=alert.previous_position,
        )  # fmt: skip
        assert mark is not None  # only heartbeats are ever repeats
        self._arrived_late(conn, feed, marks, mark)
        hole = position_gap(predecessor(marks, mark), mark)
        return self._record(conn, feed, [hole] if hole else [], mark=mark, alert_id=alert_id)

    def _arrived_late(self, conn: Connection, feed: Feed, marks: list[FeedMark], new: FeedMark) -> None:
        """A position gap that ``new`` explains: a later message found the position changed
        without an order alert, and here that alert is, late. Recorded as a step of ``new``."""
        if new.position is None:
            return
        mine = chart_order(new)
        later = {
            m.id: m for m in marks
            if chart_order(m) >= mine and m.id != new.id and same_position(_before(m), new.position)
        }  # fmt: skip
        if not later:
            return
        for row in feed_store.gap_rows(conn, since=0.0, feed_id=feed.id, limit=50):
            gap = row.gap
            if gap.kind == "position_gap" and gap.mark_id in later and not row.settled_by:
                step_store.add_step(conn, int(new.alert_id or 0), "arrived_late", self.clock(), gap_id=gap.id)
                return

    def _record(
        self,
        conn: Connection,
        feed: Feed,
        findings: list[Finding],
        *,
        mark: FeedMark | None,
        alert_id: int | None,
    ) -> list[Notice]:
        notices = []
        for f in findings:
            gap = feed_store.insert_gap(
                conn, feed_id=feed.id, kind=f.kind, detected_at=self.clock(), sequence_from=f.sequence_from,
                sequence_to=f.sequence_to, missed=f.missed, bar_time=f.bar_time, expected_by=f.expected_by,
                alert_id=alert_id, mark_id=mark.id if mark else None, detail=f.detail,
            )  # fmt: skip
            if gap is not None:
                notices.append(Notice(gap, feed))
            elif f.kind == "sequence_gap" and f.sequence_from is not None and f.sequence_to is not None:
                # The clock found the first of them overdue already: now it is known how many.
                overdue = feed_store.open_gap(conn, feed.id, f.sequence_from)
                if overdue is not None:
                    feed_store.close_gap(conn, overdue.id, sequence_to=f.sequence_to, missed=f.missed)
        return notices

    def check_overdue(self, now: float | None = None) -> list[Notice]:
        """Every feed whose next heartbeat is overdue, recorded once (the first caller of each
        missing number records it; the caller tells the returned ones)."""
        now = self.clock() if now is None else now
        notices: list[Notice] = []
        for feed in feed_store.feeds(self.storage):
            last = feed_store.newest_heartbeat(self.storage, feed.id)
            if last is None:
                continue
            recent = feed_store.recent_marks(self.storage, feed.id, limit=CADENCE_SAMPLE, kind="heartbeat")
            due = expectation(last, cadence(recent), feed.bar_seconds, self.grace(feed.strategy_id))
            if now <= due.due_at:
                continue
            finding = Finding(
                "heartbeat_missed",
                f"no heartbeat since sequence {last.sequence} (bar {utc_text(last.bar_time)})",
                sequence_from=due.sequence, bar_time=due.bar_time, expected_by=due.due_at,
            )  # fmt: skip
            record = functools.partial(self._record, feed=feed, findings=[finding], mark=None, alert_id=None)
            notices += self.storage.write_batched(record)
        return notices

    def statuses(self, now: float | None = None) -> list[FeedStatus]:
        """Every feed's :class:`FeedStatus` (for the API and the dashboard)."""
        now = self.clock() if now is None else now
        problems = self.problems(now)
        out = []
        for feed in feed_store.feeds(self.storage):
            last = feed_store.newest_heartbeat(self.storage, feed.id)
            newest = feed_store.recent_marks(self.storage, feed.id, limit=1)
            due = None
            if last is not None:
                recent = feed_store.recent_marks(
                    self.storage, feed.id, limit=CADENCE_SAMPLE, kind="heartbeat"
                )
                due = expectation(last, cadence(recent), feed.bar_seconds, self.grace(feed.strategy_id))
            out.append(FeedStatus(
                feed=feed, last_heartbeat=last, last_message_at=newest[0].received_at if newest else None,
                next=due, overdue=due is not None and now > due.due_at,
                gaps=tuple(n for n in problems if n.feed.id == feed.id),
            ))  # fmt: skip
        return out

    def problems(self, now: float | None = None) -> list[Notice]:
        """Gaps found within the problem window and not settled (repaired, or the missing alert
        arrived late): what ``/healthz`` and the dashboard flag."""
        now = self.clock() if now is None else now
        rows = feed_store.gap_rows(self.storage, since=now - self.settings.problem_window_s)
        return [Notice(r.gap, r.feed) for r in rows if not r.settled_by]
