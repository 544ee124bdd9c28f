"""The rules that find a missing alert (engine.continuity), pure and on the selected store: a
feed's cadence, when its next heartbeat is overdue, a skipped number, an order alert lost
between two that arrived (and the late one that explains it), the overdue check's single owner,
and the daily summary."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from engine.alert import Action, Alert
from engine.continuity import (
    Continuity,
    ContinuitySettings,
    bar_seconds,
    cadence,
    expectation,
    position_gap,
    predecessor,
    sequence_gap,
)
from engine.settings import StrategySettings
from storage import Storage
from storage.database import query_one
from storage.feeds import FeedMark
from storage.leases import lease_holder
from storage.timeline import add_step, daily_summary
from tests.conftest import store_target, wait_until
from webhook.continuity import start_continuity_watch

T0 = 1_714_564_800.0  # a bar open, 2024-05-01T12:00:00Z


def mark(i: int, kind: str = "heartbeat", **fields: Any) -> FeedMark:
    return FeedMark(id=i, feed_id=1, kind=kind, received_at=T0 + i, **fields)


def test_bar_lengths_of_tradingview_intervals() -> None:
    assert bar_seconds("1", "1h") == ("1m", 60)
    assert bar_seconds("60", "1h") == ("1h", 3600)
    assert bar_seconds("1D", "1h") == ("1d", 86_400)
    assert bar_seconds("15S", "1h") == ("15S", 15)
    assert bar_seconds(None, "4h") == ("4h", 14_400)
    assert bar_seconds("1M", "1h")[1] == 31 * 86_400


def test_cadence_is_what_the_chart_says_else_learned_from_its_numbers() -> None:
    assert cadence([]) == 1
    assert cadence([mark(1, sequence=10), mark(2, sequence=13), mark(3, sequence=16)]) == 3
    assert cadence([mark(1, sequence=10), mark(2, sequence=16), mark(3, sequence=13)]) == 3  # late one
    assert cadence([mark(1, sequence=10, heartbeat_bars=5), mark(2, sequence=12, heartbeat_bars=2)]) == 2


def test_the_next_heartbeat_is_due_when_its_bar_closes_plus_the_grace() -> None:
    due = expectation(mark(1, sequence=7, bar_time=T0), step=2, bar_length=60, grace=5)
    # Heartbeat 7 closed bar T0; number 9 is the bar two later, which closes at T0 + 180.
    assert (due.sequence, due.bar_time, due.due_at) == (9, T0 + 120, T0 + 185)
    no_bar = expectation(mark(1, sequence=7, fired_at=T0 + 60), step=1, bar_length=60, grace=5)
    assert no_bar.due_at == T0 + 125


def test_a_skipped_heartbeat_number_is_a_gap_naming_the_first_missed_bar() -> None:
    last = mark(1, sequence=10, bar_time=T0)
    assert sequence_gap(last, mark(2, sequence=11, bar_time=T0 + 60), 1, 60) is None
    one = sequence_gap(last, mark(2, sequence=12, bar_time=T0 + 120), 1, 60)  # 11 never came
    assert one is not None and (one.sequence_from, one.sequence_to, one.missed) == (11, 11, 1)
    gap = sequence_gap(last, mark(2, sequence=14, bar_time=T0 + 240), 1, 60)
    assert gap is not None
    assert (gap.kind, gap.sequence_from, gap.sequence_to, gap.missed, gap.bar_time) == (
        "sequence_gap", 11, 13, 3, T0 + 60
    )  # fmt: skip
    every_2 = sequence_gap(last, mark(2, sequence=16), 2, 60)
    assert every_2 is not None and (every_2.sequence_from, every_2.missed) == (12, 2)
    # A number at or below the last: late, repeated or renumbered (an alert restarted): no gap.
    assert sequence_gap(last, mark(2, sequence=9), 1, 60) is None
    assert sequence_gap(last, mark(2, sequence=3), 1, 60) is None


def test_an_order_alert_lost_between_two_is_found_from_the_positions() -> None:
    entry = mark(1, "order", bar_time=T0, sequence=5, position=1.0, prev_position=0.0)
    close = mark(2, "order", bar_time=T0 + 60, sequence=6, position=0.0, prev_position=1.0)
    short = mark(3, "order", bar_time=T0 + 120, sequence=7, position=-1.0, prev_position=0.0)
    assert position_gap(predecessor([entry], close), close) is None
    lost = position_gap(predecessor([entry], short), short)  # the close never came
    assert lost is not None and lost.kind == "position_gap" and "from 1 " in lost.detail
    # A heartbeat says the position too: one that moved with no order alert is a gap as well.
    beat = mark(4, bar_time=T0 + 120, sequence=7, position=1.0)
    assert position_gap(predecessor([entry], beat), beat) is None
    assert position_gap(predecessor([close], beat), beat) is not None


def test_of_two_alerts_on_one_bar_the_one_whose_position_leads_to_the_other_comes_first() -> None:
    """A close and the entry after it, both on bar T0 with number 5: whichever arrives first,
    the chain is close then entry, so neither looks like a gap once both are in."""
    entry = mark(1, "order", bar_time=T0 - 60, sequence=4, position=1.0, prev_position=0.0)
    close = mark(2, "order", bar_time=T0, sequence=5, position=0.0, prev_position=1.0)
    short = mark(3, "order", bar_time=T0, sequence=5, position=-1.0, prev_position=0.0)
    assert predecessor([entry, short], close) == entry  # the short is after it, though it came first
    assert predecessor([entry, close], short) == close


def test_contradicting_sizes_are_refused_and_heartbeat_is_an_action() -> None:
    base = {"ticker": "BTCUSDT", "action": "heartbeat"}
    assert Alert.model_validate(base).action is Action.HEARTBEAT
    with pytest.raises(
        ValidationError, match=r"'market_position_size' is 0\.5 but 'market_position' is flat"
    ):
        Alert.model_validate({**base, "market_position": "flat", "market_position_size": 0.5})
    with pytest.raises(ValidationError, match="needs 'prev_market_position'"):
        Alert.model_validate({**base, "prev_market_position_size": 0.5})
    with pytest.raises(ValidationError, match="sequence"):
        Alert.model_validate({**base, "sequence": 1.5})
    alert = Alert.model_validate(
        {**base, "market_position": "short", "market_position_size": "0.5", "prev_market_position": "long",
         "prev_market_position_size": 0.25, "sequence": "17"}
    )  # fmt: skip
    assert (alert.intended_position, alert.previous_position, alert.sequence) == (-0.5, 0.25, 17)


# --- on file ----------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    db = Storage(store_target(tmp_path))
    db.migrate()
    return db


def watcher(storage: Storage, clock: Clock, grace: float = 10.0) -> Continuity:
    strategies = {"default": StrategySettings(id="default", passphrase="x" * 8)}
    return Continuity(storage, ContinuitySettings(grace_s=grace), strategies, clock=clock)


def beat(sequence: int, bar_open: float, **fields: Any) -> Alert:
    return Alert.model_validate({
        "strategy_id": "default", "ticker": "BTCUSDT", "interval": "1", "action": "heartbeat",
        "sequence": sequence, "time": bar_open, "timenow": bar_open + 60, "market_position": "flat", **fields,
    })  # fmt: skip


def test_an_overdue_heartbeat_is_recorded_once_and_closed_when_the_feed_resumes(storage: Storage) -> None:
    clock = Clock(T0 + 61)
    feeds = watcher(storage, clock)
    first = feeds.heartbeat(beat(100, T0), "BTC/USDT", clock())
    assert first.next is not None and first.next.due_at == T0 + 120 + 10
    clock.now = T0 + 130
    assert feeds.check_overdue() == []  # due, not yet overdue
    clock.now = T0 + 131
    (notice,) = feeds.check_overdue()
    assert (notice.gap.kind, notice.gap.sequence_from, notice.gap.bar_time) == (
        "heartbeat_missed",
        101,
        T0 + 60,
    )
    assert "MISSED heartbeat of strategy default on BTC/USDT 1m: bar 2024-05-01T12:01:00Z" in notice.text
    assert feeds.check_overdue() == []  # told once
    assert [n.gap.id for n in feeds.problems()] == [notice.gap.id]
    # The feed resumes at 104: the overdue gap now says how many were missed, and is not told again.
    clock.now = T0 + 300
    resumed = feeds.heartbeat(beat(104, T0 + 240), "BTC/USDT", clock())
    assert resumed.notices == ()
    (gap,) = [n.gap for n in feeds.problems()]
    assert (gap.kind, gap.sequence_from, gap.sequence_to, gap.missed) == ("heartbeat_missed", 101, 103, 3)


class Told:
    """A notifier's stand-in: the gaps it was given to tell."""

    def __init__(self) -> None:
        self.facts: list[dict[str, Any]] = []

    def gaps(self, facts: list[dict[str, Any]]) -> None:
        self.facts.extend(facts)


def test_the_overdue_check_runs_in_the_lease_holder_and_moves_when_it_stops(storage: Storage) -> None:
    clock = Clock(T0 + 61)
    workers = {
        name: (watcher(storage, clock), Told(), threading.Event()) for name in ("host-a:1", "host-b:2")
    }
    checks: list[str] = []  # which worker ran each check

    def counted(feeds: Continuity, name: str) -> None:
        original = feeds.check_overdue

        def check(now: float | None = None) -> list[Any]:
            checks.append(name)
            return original(now)

        feeds.check_overdue = check  # type: ignore[method-assign]

    for name, (feeds, _, _) in workers.items():
        counted(feeds, name)
    workers["host-a:1"][0].heartbeat(beat(1, T0), "BTC/USDT", clock())
    clock.now = T0 + 1000  # number 2 (bar T0 + 60) is long overdue
    try:
        for name, (feeds, told, stop) in workers.items():
            # A term of 2 s: long beside the 0.1 s period, so a busy machine's stalls keep the owner.
            start_continuity_watch(feeds, told, 0.1, owner=name, stop=stop, ttl_s=2.0)  # type: ignore[arg-type]
        wait_until(lambda: len(checks) >= 6, 60, "six runs of the overdue check")
        holder = checks[0]
        assert set(checks) == {holder}  # one worker checks, however many run the loop
        assert lease_holder(storage, "continuity-overdue-check").owner == holder  # type: ignore[union-attr]
        other = next(name for name in workers if name != holder)
        (gap,) = workers[holder][1].facts  # told once, by the holder
        assert (gap["kind"], gap["sequence_from"]) == ("heartbeat_missed", 2) and workers[other][
            1
        ].facts == []
        # The holder stops (a dead worker stops renewing the same way); number 2 arrives late, then
        # number 3 is overdue: the other worker takes the check over and tells that one.
        workers[holder][2].set()
        workers[other][0].heartbeat(beat(2, T0 + 60), "BTC/USDT", clock())
        wait_until(lambda: workers[other][1].facts, 60, "the other worker telling the next gap")
        assert [g["sequence_from"] for g in workers[other][1].facts] == [3]
    finally:
        for _, _, stop in workers.values():
            stop.set()


def test_a_late_order_alert_settles_the_gap_its_absence_opened(storage: Storage) -> None:
    clock = Clock(T0 + 500)
    feeds = watcher(storage, clock)

    def order(
        alert_id: int, sequence: int, bar: float, after: tuple[str, float], before: tuple[str, float]
    ) -> list[Any]:
        alert = Alert.model_validate({
            "strategy_id": "default", "ticker": "BTCUSDT", "interval": "1", "action": "buy",
            "sequence": sequence, "time": bar, "market_position": after[0], "market_position_size": after[1],
            "prev_market_position": before[0], "prev_market_position_size": before[1],
        })  # fmt: skip
        with storage.transaction() as conn:
            conn.execute(
                "INSERT INTO alerts (id, received_at, updated_at, status, strategy_id)"
                " VALUES (?, ?, ?, 'executed', 'default')",
                (alert_id, clock(), clock()),
            )
            return feeds.order_mark(conn, alert, alert_id, "BTC/USDT", clock())

    assert order(1, 10, T0, ("long", 1), ("flat", 0)) == []
    # The short arrives first: its position before (flat) is not the long the entry left.
    (hole,) = order(3, 12, T0 + 120, ("short", 1), ("flat", 0))
    assert hole.gap.kind == "position_gap" and [n.gap.id for n in feeds.problems()] == [hole.gap.id]
    # Then the close it came after: no gap of its own, and the short's gap is settled.
    assert order(2, 11, T0 + 60, ("flat", 0), ("long", 1)) == []
    assert feeds.problems() == []
    (day,) = daily_summary(storage, since=0)
    assert (day.received, day.missed, day.expected) == (3, 0, 3)


def test_the_daily_summary_counts_per_strategy_and_day(storage: Storage) -> None:
    clock = Clock(T0 + 61)
    feeds = watcher(storage, clock)
    feeds.heartbeat(beat(1, T0), "BTC/USDT", T0 + 61.5)  # fired at T0 + 60: 1.5 s on the way
    feeds.heartbeat(beat(4, T0 + 180), "BTC/USDT", T0 + 242)  # 2 and 3 missed
    gap_id = query_one(storage, "SELECT id FROM feed_gaps")["id"]
    with storage.transaction() as conn:
        conn.execute(
            "INSERT INTO alerts (id, received_at, updated_at, status, strategy_id, timenow)"
            " VALUES (1, ?, ?, 'executed', 'default', ?)", (T0 + 300.2, T0 + 300.2, T0 + 300),
        )  # fmt: skip
        conn.execute(
            "INSERT INTO orders (alert_id, client_order_id, broker, symbol, side, order_type, amount, status,"
            " filled, created_at, updated_at) VALUES (1, 'c1', 'paper', 'BTC/USDT', 'buy', 'market', 1,"
            " 'filled', 1, ?, ?)", (T0 + 300.25, T0 + 300.3),
        )  # fmt: skip
        add_step(conn, 1, "repaired", T0 + 300.21, gap_id=gap_id)
    (day,) = daily_summary(storage, since=0)
    assert day.day == datetime.fromtimestamp(T0, UTC).strftime("%Y-%m-%d") and day.strategy_id == "default"
    assert (day.expected, day.received, day.missed, day.repaired) == (5, 3, 2, 1)
    assert day.fired_to_received_ms == pytest.approx(1500)  # median of 1500, 2000, 200
    assert day.received_to_filled_ms == pytest.approx(100)
    assert daily_summary(storage, since=0, strategy_id="other") == []
