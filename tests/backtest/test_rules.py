"""The Pine script's rules replayed: indicators from common.indicators, entries at the next
bar's open, stops and targets on later bars, and nothing read from the future."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backtest.rules import PineInputs, pine_signals, replay_orders
from common.indicators import atr, rsi


def test_signals_use_the_one_indicator_module(walk_candles):
    signals = pine_signals(walk_candles)
    h, lo, c = (walk_candles[k].to_numpy() for k in ("high", "low", "close"))
    np.testing.assert_array_equal(signals["atr"].to_numpy(), atr(h, lo, c, 14))
    checks = signals[["long_checks", "short_checks"]]
    assert checks.min().min() >= 0 and checks.max().max() <= 9
    # the proxy is the script's logistic of the check difference
    edge = (signals["long_checks"] - signals["short_checks"]) / 9.0 * 0.8
    np.testing.assert_allclose(signals["p_long"], 1 / (1 + np.exp(-3 * edge)))
    assert not (signals["long_signal"] & signals["short_signal"]).any()
    assert np.isfinite(rsi(c)).sum() > 0


def test_orders_fill_at_the_next_open_and_exits_inside_a_later_bar(walk_candles):
    orders = replay_orders(walk_candles, 300, len(walk_candles))
    assert len(orders) > 20
    o, h, lo = (walk_candles[k].to_numpy() for k in ("open", "high", "low"))
    position = 0.0
    for order in orders:
        assert order.prev_position == pytest.approx(position)
        if order.action in ("buy", "sell", "reverse"):
            assert order.signal_bar == order.bar - 1 and order.price == o[order.bar]
            assert order.at == walk_candles.index[order.bar]
        else:
            assert lo[order.bar] - 1e-9 <= order.price <= h[order.bar] + 1e-9 or order.price == o[order.bar]
            assert order.position_size == 0.0 and order.at > walk_candles.index[order.bar]
        if order.action == "reverse":
            assert np.sign(order.position_size) == -np.sign(order.prev_position) != 0
        position = order.position_size


def test_a_stop_acts_only_on_a_later_bar_and_at_the_open_when_gapped():
    """A long entered at bar 61's open with a stop below: bar 62 gaps under the stop, so the exit
    fills at bar 62's open (not at the stop, which the market never traded)."""
    n = 70
    close = np.linspace(100, 80, n)  # a decline: RSI low, price under the bands
    close[58:62] = [80.5, 81.5, 82.5, 83.5]  # turning up: the long checks fire at bar 60
    frame = pd.DataFrame(
        {"open": close + 0.1, "high": close + 0.6, "low": close - 0.6, "close": close, "volume": 10.0},
        index=pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC"),
    )
    frame.loc[frame.index[60], "open"] = 81.9
    signals = pine_signals(frame, PineInputs(confidence_threshold=0.55))
    assert signals["long_signal"].iat[60]
    frame.loc[frame.index[62], ["open", "high", "low", "close"]] = [60.0, 61.0, 59.0, 60.5]
    orders = replay_orders(frame, 60, n, PineInputs(confidence_threshold=0.55))
    entry, exit_ = orders[0], orders[1]
    assert (entry.action, entry.bar, entry.price) == ("buy", 61, frame["open"].iat[61])
    assert (exit_.action, exit_.bar, exit_.price) == ("close_long", 62, 60.0)


def test_no_order_before_bar_k_moves_when_the_future_changes(walk_candles):
    """Rewrite every bar after k: the orders up to k (and their sizes, prices, stops) stay."""
    k = 1500
    baseline = replay_orders(walk_candles, 300, len(walk_candles))
    changed = walk_candles.copy()
    changed.iloc[k + 1 :, :4] *= 1.5
    moved = replay_orders(changed, 300, len(changed))
    before = [o for o in baseline if o.bar <= k]
    assert before == [o for o in moved if o.bar <= k]
    assert [o for o in baseline if o.bar > k] != [o for o in moved if o.bar > k]  # the rewrite mattered
