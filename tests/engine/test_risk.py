"""Each risk rule refuses or reduces with its reason and code; exits always go through."""

from __future__ import annotations

import dataclasses
import math

import pytest

from engine.risk import DEFAULT_STOP_FRACTION, PortfolioState, RiskManager, TradeProposal
from tvgw.config import RiskSettings

NOW = 1_700_000_000.0


def limits(**overrides: float) -> RiskSettings:
    base: dict[str, float] = {
        "risk_per_trade": 0.02,
        "max_portfolio_risk": 0.10,
        "max_drawdown": 0.20,
        "max_position_fraction": 0.25,
        "max_open_positions": 3,
        "daily_loss_limit": 0.05,
        "cooldown_seconds": 0.0,
        "max_leverage": 3.0,
    }
    base.update(overrides)
    return RiskSettings(**base)


def state(**overrides: object) -> PortfolioState:
    values: dict[str, object] = {
        "equity": 10_000.0,
        "peak_equity": 10_000.0,
        "day_start_equity": 10_000.0,
        "positions": {},
        "position_notional": {},
        "open_risk": 0.0,
        "last_trade_at": {},
        "now": NOW,
    }
    values.update(overrides)
    return PortfolioState(**values)  # type: ignore[arg-type]


def buy(amount: float, *, price: float = 100.0, stop: float | None = 98.0, symbol: str = "BTC/USDT", **kw):
    return TradeProposal(symbol=symbol, side="buy", amount=amount, price=price, stop_loss=stop, **kw)


def sell(amount: float, *, price: float = 100.0, stop: float | None = None, symbol: str = "BTC/USDT", **kw):
    return TradeProposal(symbol=symbol, side="sell", amount=amount, price=price, stop_loss=stop, **kw)


def test_order_within_all_limits_passes_unchanged() -> None:
    # 10 units at 100 = 1000 notional (10% of equity); risk 10 * 2 = 20 (0.2% of equity).
    verdict = RiskManager(limits()).check(buy(10), state())
    assert verdict.allowed
    assert verdict.amount == 10
    assert verdict.codes == ()
    assert verdict.reasons == ()


@pytest.mark.parametrize("amount", [0.0, -1.0, math.nan, math.inf])
def test_no_size_is_refused(amount: float) -> None:
    verdict = RiskManager(limits()).check(buy(amount), state())
    assert not verdict.allowed
    assert verdict.amount == 0
    assert verdict.codes == ("no_size",)
    assert "not a positive size" in verdict.reasons[0]


def test_drawdown_breaker_refuses_new_exposure_with_the_numbers() -> None:
    verdict = RiskManager(limits()).check(
        buy(1), state(equity=7_900.0, peak_equity=10_000.0, day_start_equity=7_900.0)
    )
    assert not verdict.allowed
    assert verdict.codes == ("drawdown",)
    assert "drawdown 21.0%" in verdict.reasons[0]
    assert "20.0% limit" in verdict.reasons[0]


def test_drawdown_just_below_the_limit_passes() -> None:
    verdict = RiskManager(limits()).check(
        buy(1), state(equity=8_100.0, peak_equity=10_000.0, day_start_equity=8_100.0)
    )
    assert verdict.allowed
    assert "drawdown" not in verdict.codes


@pytest.mark.parametrize("position", [5.0, -5.0])
def test_exits_are_allowed_even_in_a_breached_drawdown_and_daily_loss(position: float) -> None:
    broken = state(
        equity=5_000.0,
        peak_equity=10_000.0,
        day_start_equity=9_000.0,
        positions={"BTC/USDT": position},
        open_risk=10_000.0,
        last_trade_at={"BTC/USDT": NOW - 1},
    )
    manager = RiskManager(limits(cooldown_seconds=3600, max_open_positions=1))
    exit_order = sell(5) if position > 0 else buy(5, stop=None)
    verdict = manager.check(exit_order, broken)
    assert verdict.allowed
    assert verdict.amount == 5
    assert verdict.codes == ()
    # The same state refuses anything that adds exposure.
    more = buy(1) if position > 0 else sell(1, stop=110.0)
    assert not manager.check(more, broken).allowed


def test_a_partial_exit_is_allowed_too() -> None:
    verdict = RiskManager(limits()).check(
        sell(2), state(equity=1_000.0, peak_equity=10_000.0, positions={"BTC/USDT": 5.0})
    )
    assert verdict.allowed and verdict.amount == 2 and verdict.codes == ()


def test_a_flip_keeps_its_closing_part_when_new_exposure_is_refused() -> None:
    verdict = RiskManager(limits()).check(
        sell(8, stop=102.0),
        state(equity=7_000.0, peak_equity=10_000.0, day_start_equity=7_000.0, positions={"BTC/USDT": 3.0}),
    )
    assert verdict.allowed
    assert verdict.amount == 3
    assert verdict.codes == ("drawdown", "flip_limited")
    assert "closing 3 is always allowed" in verdict.reasons[1]


def test_a_flip_within_limits_goes_through_whole() -> None:
    verdict = RiskManager(limits()).check(sell(8, stop=102.0), state(positions={"BTC/USDT": 3.0}))
    assert verdict.allowed and verdict.amount == 8 and verdict.codes == ()


def test_daily_loss_limit_refuses_until_midnight() -> None:
    verdict = RiskManager(limits()).check(
        buy(1), state(equity=9_470.0, peak_equity=10_000.0, day_start_equity=10_000.0)
    )
    assert not verdict.allowed
    assert verdict.codes == ("daily_loss",)
    assert verdict.reasons[0] == (
        "daily loss 5.3% reached the 5.0% limit; new exposure refused until 00:00 UTC"
    )


def test_max_open_positions_refuses_a_new_symbol_but_not_adding_to_an_open_one() -> None:
    full = state(
        positions={"BTC/USDT": 1.0, "ETH/USDT": -2.0, "SOL/USDT": 3.0, "XRP/USDT": 0.0},
        position_notional={"BTC/USDT": 100.0, "ETH/USDT": 200.0, "SOL/USDT": 300.0},
    )
    manager = RiskManager(limits(max_open_positions=3))
    refused = manager.check(buy(1, symbol="ADA/USDT"), full)
    assert not refused.allowed
    assert refused.codes == ("max_open_positions",)
    assert "3 positions are open, the limit is 3" in refused.reasons[0]
    # A flat entry (XRP at 0) does not count as open.
    assert manager.check(buy(1, symbol="BTC/USDT"), full).allowed


def test_cooldown_refuses_within_and_allows_after() -> None:
    manager = RiskManager(limits(cooldown_seconds=300))
    recent = state(last_trade_at={"BTC/USDT": NOW - 120})
    verdict = manager.check(buy(1), recent)
    assert not verdict.allowed
    assert verdict.codes == ("cooldown",)
    assert "traded 120s ago" in verdict.reasons[0] and "another 180s" in verdict.reasons[0]
    assert manager.check(buy(1), state(last_trade_at={"BTC/USDT": NOW - 301})).allowed
    # Another symbol is not cooling down.
    assert manager.check(buy(1, symbol="ETH/USDT"), recent).allowed


def test_leverage_above_the_limit_is_refused() -> None:
    verdict = RiskManager(limits(max_leverage=3)).check(buy(1, leverage=5), state())
    assert not verdict.allowed
    assert verdict.codes == ("leverage",)
    assert "5x is above the 3x limit" in verdict.reasons[0]
    assert RiskManager(limits(max_leverage=3)).check(buy(1, leverage=3), state()).allowed


def test_all_hard_limits_that_apply_are_reported() -> None:
    verdict = RiskManager(limits(cooldown_seconds=60)).check(
        buy(1, leverage=9),
        state(equity=7_000.0, day_start_equity=8_000.0, last_trade_at={"BTC/USDT": NOW}),
    )
    assert verdict.codes == ("leverage", "drawdown", "daily_loss", "cooldown")
    assert len(verdict.reasons) == 4


def test_position_cap_reduces_to_fit() -> None:
    # 40 units at 100 = 4000 notional; cap 25% of 10000 = 2500 -> 25 units.
    # Stop 1 away keeps the risk rules out of the way (25 * 1 = 25 quote).
    verdict = RiskManager(limits()).check(buy(40, stop=99.0), state())
    assert verdict.allowed
    assert verdict.amount == pytest.approx(25.0)
    assert verdict.codes == ("position_cap",)
    assert "reduced from 40 to 25" in verdict.reasons[0]


def test_position_cap_counts_what_is_already_held() -> None:
    held = state(positions={"BTC/USDT": 20.0}, position_notional={"BTC/USDT": 2_000.0})
    verdict = RiskManager(limits()).check(buy(10, stop=99.0), held)
    assert verdict.amount == pytest.approx(5.0)
    assert verdict.codes == ("position_cap",)


def test_position_cap_refuses_when_nothing_fits() -> None:
    held = state(positions={"BTC/USDT": 30.0}, position_notional={"BTC/USDT": 3_000.0})
    verdict = RiskManager(limits()).check(buy(1, stop=99.0), held)
    assert not verdict.allowed
    assert verdict.amount == 0
    assert verdict.codes == ("position_cap",)
    assert "already 3000.00" in verdict.reasons[0]


def test_risk_per_trade_reduces_to_fit() -> None:
    # Stop 10 away: 20 units risk 200 = 2% of equity exactly; 24 units (2400 notional, under
    # the cap) would risk 240.
    verdict = RiskManager(limits()).check(buy(24, stop=90.0), state())
    assert verdict.allowed
    assert verdict.amount == pytest.approx(20.0)
    assert verdict.codes == ("risk_per_trade",)
    assert "240.00 would exceed 2.0% of equity = 200.00" in verdict.reasons[0]


def test_an_order_without_a_stop_assumes_the_default_stop_distance() -> None:
    # No stop: assumed distance 5% of 100 = 5 per unit, so 200 / 5 = 40 units max by risk,
    # but the position cap (25 units) binds first; with a higher cap the risk rule binds.
    manager = RiskManager(limits(max_position_fraction=1.0))
    verdict = manager.check(buy(60, stop=None), state())
    assert verdict.amount == pytest.approx(0.02 * 10_000 / (DEFAULT_STOP_FRACTION * 100))
    assert verdict.codes == ("risk_per_trade",)


def test_portfolio_risk_reduces_then_refuses() -> None:
    manager = RiskManager(limits())
    # Room: 10% of 10000 = 1000, minus 900 open = 100; stop 2 away -> 50 units... but the cap
    # allows 25, so use a wide stop: 10 away -> 10 units fit.
    reduced = manager.check(buy(15, stop=90.0), state(open_risk=900.0))
    assert reduced.allowed
    assert reduced.amount == pytest.approx(10.0)
    assert reduced.codes == ("portfolio_risk",)
    full = manager.check(buy(1, stop=90.0), state(open_risk=1_000.0))
    assert not full.allowed
    assert full.codes == ("portfolio_risk",)


def test_several_reductions_stack_in_order() -> None:
    # 100 units: cap -> 25; stop 10 away: risk 250 > 200 -> 20; open risk 850: room 150 -> 15.
    verdict = RiskManager(limits()).check(buy(100, stop=90.0), state(open_risk=850.0))
    assert verdict.amount == pytest.approx(15.0)
    assert verdict.codes == ("position_cap", "risk_per_trade", "portfolio_risk")


@pytest.mark.parametrize(("side", "stop"), [("buy", 100.0), ("buy", 105.0), ("sell", 95.0)])
def test_a_stop_on_the_wrong_side_refuses_new_exposure(side: str, stop: float) -> None:
    proposal = TradeProposal(symbol="BTC/USDT", side=side, amount=1, price=100.0, stop_loss=stop)  # type: ignore[arg-type]
    verdict = RiskManager(limits()).check(proposal, state())
    assert not verdict.allowed
    assert verdict.codes == ("invalid_stop",)


def test_a_wrong_side_stop_on_an_exit_does_not_trap_the_trader() -> None:
    # An exit alert carrying the long's own stop (below the price) still closes the position.
    verdict = RiskManager(limits()).check(sell(2, stop=95.0), state(positions={"BTC/USDT": 2.0}))
    assert verdict.allowed and verdict.amount == 2


def test_no_equity_refuses_new_exposure() -> None:
    verdict = RiskManager(limits()).check(buy(1), state(equity=0.0, peak_equity=0.0, day_start_equity=0.0))
    assert not verdict.allowed
    assert verdict.codes == ("no_equity",)


def test_kelly_size() -> None:
    manager = RiskManager(limits(max_position_fraction=0.25))
    assert manager.kelly_size(0.1, 10_000.0, 100.0) == pytest.approx(10.0)
    assert manager.kelly_size(0.6, 10_000.0, 100.0) == pytest.approx(25.0)  # capped at 25% of equity
    assert manager.kelly_size(0.0, 10_000.0, 100.0) == 0.0
    assert manager.kelly_size(-0.2, 10_000.0, 100.0) == 0.0
    assert manager.kelly_size(0.1, 0.0, 100.0) == 0.0
    with pytest.raises(ValueError, match="price must be positive"):
        manager.kelly_size(0.1, 10_000.0, 0.0)
    with pytest.raises(ValueError, match="kelly_fraction must be a finite number"):
        manager.kelly_size(math.nan, 10_000.0, 100.0)


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"TradeProposal.price must be positive"):
        buy(1, price=0.0)
    with pytest.raises(ValueError, match=r"TradeProposal.side must be 'buy' or 'sell'"):
        TradeProposal(symbol="X", side="long", amount=1, price=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"PortfolioState.equity must be a finite number"):
        state(equity=math.nan)
    with pytest.raises(ValueError, match=r"positions\['BTC/USDT'\] must be a finite number"):
        state(positions={"BTC/USDT": math.inf})
    with pytest.raises(ValueError, match="open_risk cannot be negative"):
        state(open_risk=-1.0)


# --- each limit at its exact boundary: "reached" refuses, "up to" fits -----------------------


@pytest.mark.parametrize(
    ("equity", "peak", "day_start", "code"),
    [
        (8_000.0, 10_000.0, 8_000.0, "drawdown"),  # (10 000 - 8 000) / 10 000 = 20% exactly
        (9_500.0, 9_500.0, 10_000.0, "daily_loss"),  # (10 000 - 9 500) / 10 000 = 5% exactly
    ],
)
def test_a_loss_limit_reached_exactly_refuses(
    equity: float, peak: float, day_start: float, code: str
) -> None:
    verdict = RiskManager(limits()).check(
        buy(1), state(equity=equity, peak_equity=peak, day_start_equity=day_start)
    )
    assert not verdict.allowed and verdict.codes == (code,)
    just_short = state(equity=equity + 0.01, peak_equity=max(peak, equity + 0.01), day_start_equity=day_start)
    if code == "drawdown":
        just_short = state(equity=equity + 0.01, peak_equity=peak, day_start_equity=equity + 0.01)
    assert RiskManager(limits()).check(buy(1), just_short).allowed


def test_the_cooldown_ends_exactly_when_its_seconds_have_passed() -> None:
    manager = RiskManager(limits(cooldown_seconds=300))
    assert manager.check(buy(1), state(last_trade_at={"BTC/USDT": NOW - 300})).allowed
    assert manager.check(buy(1), state(last_trade_at={"BTC/USDT": NOW - 299.999})).codes == ("cooldown",)


def test_one_position_below_the_open_positions_limit_may_open_another() -> None:
    two = state(positions={"BTC/USDT": 1.0, "ETH/USDT": -2.0})
    assert RiskManager(limits(max_open_positions=3)).check(buy(1, symbol="SOL/USDT"), two).allowed
    assert RiskManager(limits(max_open_positions=2)).check(buy(1, symbol="SOL/USDT"), two).codes == (
        "max_open_positions",
    )


def test_leverage_just_above_the_limit_is_refused() -> None:
    assert RiskManager(limits(max_leverage=3)).check(buy(1, leverage=3.01), state()).codes == ("leverage",)


@pytest.mark.parametrize(
    ("proposal", "open_risk", "code"),
    [
        (buy(25, stop=99.0), 0.0, "position_cap"),  # 25 at 100 = 2 500 = 25% of equity
        (buy(20, stop=90.0), 0.0, "risk_per_trade"),  # 20 * 10 = 200 = 2% of equity
        (buy(10, stop=90.0), 900.0, "portfolio_risk"),  # 900 + 10 * 10 = 1 000 = 10% of equity
        (sell(25, stop=101.0), 0.0, "position_cap"),  # the short side's cap, the same 25
        (sell(20, stop=110.0), 0.0, "risk_per_trade"),
    ],
)
def test_an_order_exactly_at_a_sizing_limit_goes_through_whole_and_one_step_more_is_cut_to_it(
    proposal: TradeProposal, open_risk: float, code: str
) -> None:
    manager = RiskManager(limits())
    at_limit = manager.check(proposal, state(open_risk=open_risk))
    assert at_limit.allowed and at_limit.amount == proposal.amount and at_limit.codes == ()
    more = dataclasses.replace(proposal, amount=proposal.amount + 0.001)
    over = manager.check(more, state(open_risk=open_risk))
    assert over.codes == (code,) and over.amount == pytest.approx(proposal.amount)
