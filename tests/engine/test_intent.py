"""The strategy's intended position as the truth (engine.intent), pure: an alert its chart sent
before one already applied is superseded (a close that arrives after its reversal must not undo
it), and an alert whose position before is not the booked one repairs the gap, within a cap."""

from __future__ import annotations

from typing import Any

import pytest

from engine.alert import Alert
from engine.intent import Intent, intend, later_in_chart, mark_of
from engine.settings import StrategySettings
from storage.feeds import FeedMark

T0 = 1_714_564_800.0
STRATEGY = StrategySettings(id="default", passphrase="x" * 8)


def alert(
    action: str, after: tuple[str, float] | None, before: tuple[str, float] | None, **fields: Any
) -> Alert:
    data: dict[str, Any] = {"ticker": "BTCUSDT", "action": action, "contracts": 1.0, **fields}
    if after is not None:
        data |= {"market_position": after[0], "market_position_size": after[1]}
    if before is not None:
        data |= {"prev_market_position": before[0], "prev_market_position_size": before[1]}
    return Alert.model_validate(data)


def on_file(alert_id: int, bar: float, sequence: int, position: float, before: float) -> FeedMark:
    return FeedMark(id=alert_id, feed_id=1, kind="order", received_at=T0, alert_id=alert_id, bar_time=bar,
                    sequence=sequence, position=position, prev_position=before)  # fmt: skip


def test_a_close_arriving_after_the_reversal_it_preceded_is_superseded() -> None:
    reversal = on_file(7, T0 + 60, 11, -1.0, 0.0)  # flat -> short, applied
    close = alert("close_long", ("flat", 0), ("long", 1), time=T0, sequence=10)
    later = later_in_chart([reversal], mark_of(close))
    assert later is reversal
    intent = intend(close, STRATEGY, booked=-1.0, later=later, price=100.0, equity=10_000.0)
    assert intent.superseded_by == 7 and "alert 7" in str(intent.superseded)
    # The same two on one bar and number: the chain says which came first.
    same_bar = alert("close_long", ("flat", 0), ("long", 1), time=T0 + 60, sequence=11)
    assert later_in_chart([reversal], mark_of(same_bar)) is reversal
    entry_after = alert("sell", ("short", 1), ("flat", 0), time=T0 + 60, sequence=11)
    assert later_in_chart([on_file(8, T0 + 60, 11, 0.0, 1.0)], mark_of(entry_after)) is None
    # An entry and the stop exit that ends it, filled on one bar with one number: the exit
    # that arrives after its entry applies (the entry leads to it, though the exit could lead
    # to the entry too).
    own_entry = on_file(9, T0 + 120, 12, 1.0, 0.0)
    its_exit = alert("close_long", ("flat", 0), ("long", 1), time=T0 + 120, sequence=12)
    assert later_in_chart([own_entry], mark_of(its_exit)) is None


def test_a_bar_time_and_a_firing_time_are_not_compared() -> None:
    """A message that names its bar and one that only says when it fired do not order: the bar
    opened before the alert fired on it, so comparing them would refuse a real alert."""
    fired_late = FeedMark(id=1, feed_id=1, kind="order", received_at=T0, alert_id=1, fired_at=T0 + 3000,
                          position=1.0, prev_position=0.0)  # fmt: skip
    on_its_bar = alert("sell", ("flat", 0), ("long", 1), time=T0)  # fired later, on the bar of T0
    assert later_in_chart([fired_late], mark_of(on_its_bar)) is None
    both_fired = alert("sell", ("flat", 0), ("long", 1), timenow=T0 + 10)
    assert later_in_chart([fired_late], mark_of(both_fired)) is fired_late


def test_the_newest_alert_and_plain_buys_are_never_superseded() -> None:
    older = on_file(3, T0, 10, 1.0, 0.0)
    newer = alert("sell", ("short", 1), ("long", 1), time=T0 + 60, sequence=11)
    assert later_in_chart([older], mark_of(newer)) is None
    buy = alert("buy", None, None, time=T0 - 60, sequence=9)  # a delta: adds up in any order
    assert intend(buy, STRATEGY, booked=1.0, later=older, price=100.0, equity=1e4).superseded is None
    target_off = StrategySettings(id="d", passphrase="x" * 8, target_position=False)
    late_buy = alert("buy", ("long", 2), ("long", 1), time=T0 - 60)
    assert intend(late_buy, target_off, booked=1.0, later=older, price=100.0, equity=1e4).superseded is None
    assert intend(late_buy, STRATEGY, booked=1.0, later=older, price=100.0, equity=1e4).superseded


def test_a_missed_entry_is_repaired_by_the_next_alerts_intended_position() -> None:
    add = alert("buy", ("long", 2), ("long", 1))  # the entry to long 1 never arrived
    intent = intend(add, STRATEGY, booked=0.0, later=None, price=100.0, equity=10_000.0)
    assert intent.repair is not None and intent.refusal is None
    assert (intent.repair.before, intent.repair.booked, intent.repair.extra) == (1.0, 0.0, 1.0)
    assert "repaired a gap: booked 0 where the chart had 1" in intent.repair.text
    # Booked as the chart says: nothing to repair (so a second alert never repairs it again).
    assert intend(add, STRATEGY, booked=1.0, later=None, price=100.0, equity=10_000.0) == Intent()
    # The missed entry's own close: the gap closes itself, nothing extra to trade.
    close = alert("close_long", ("flat", 0), ("long", 1))
    closing = intend(close, STRATEGY, booked=0.0, later=None, price=100.0, equity=10_000.0)
    assert closing.repair is not None and closing.repair.extra == 0.0


@pytest.mark.parametrize(("fraction", "refused"), [(0.25, False), (0.005, True)])
def test_one_repair_trades_at_most_its_cap(fraction: float, refused: bool) -> None:
    strategy = StrategySettings(id="d", passphrase="x" * 8, max_repair_fraction=fraction)
    add = alert("buy", ("long", 2), ("long", 1))  # the repair buys 1 more, 100 quote of 10,000
    intent = intend(add, strategy, booked=0.0, later=None, price=100.0, equity=10_000.0)
    assert (intent.refusal is not None) is refused
    assert (intent.repair is None) is refused
    if refused:
        assert "over strategies.max_repair_fraction" in str(intent.refusal)


def test_a_strategy_sizing_its_own_orders_compares_sides_only() -> None:
    kelly = StrategySettings(id="k", passphrase="x" * 8, sizing="kelly")
    add = alert("buy", ("long", 2), ("long", 1))
    assert intend(add, kelly, booked=0.37, later=None, price=100.0, equity=1e4).repair is None
    gap = intend(add, kelly, booked=0.0, later=None, price=100.0, equity=1e4)
    assert gap.repair is not None and gap.repair.extra is None
