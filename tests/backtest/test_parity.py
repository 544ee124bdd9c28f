"""The same alerts give the same decisions in a backtest and through the live webhook.

The backtest's own alerts (the Pine replay's first orders) are decided by the backtest's arm,
then posted one by one to the Flask app on a fresh database, its market seeded at each alert's
replayed price (the gateway fills at its own market price, as the backtest does). Status, side,
amount, fill price and fee must agree alert for alert. The test goes through the public faces
only (``run_arm`` and ``/webhook``), so it keeps holding when ``backtest.execution`` becomes
one ``process_signal`` call.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backtest.execution import replay_settings
from backtest.replay import Arm, build_alert, run_arm
from backtest.rules import replay_orders
from tests.conftest import PASSPHRASE, make_settings, seed_market
from webhook import create_app

N_ALERTS = 10


@pytest.mark.parametrize("mode", ["execute", "hybrid"])
def test_backtest_and_webhook_decide_the_same_alerts_alike(tmp_path: Path, walk_candles, mode):
    orders = replay_orders(walk_candles, 300, len(walk_candles))[:N_ALERTS]
    assert {o.action for o in orders} >= {"buy", "sell"} or len({o.action for o in orders}) >= 3
    last = orders[-1].bar + 1
    settings = make_settings(
        tmp_path / "live", TVGW_STRATEGY_MODE=mode, TVGW_PAPER_FEE_RATE="0.002", TVGW_PAPER_SLIPPAGE_BPS="7"
    )
    backtest = run_arm(
        Arm("rules", "rules", mode),
        walk_candles,
        orders,
        first=300,
        last=last,
        settings=replay_settings(settings, tmp_path / "bt.sqlite", mode=mode, fee_rate=0.002, slippage_bps=7),
        symbol="BTC/USDT",
        timeframe="1h",
    )

    client = create_app(settings).test_client()
    start = datetime.now(UTC) - timedelta(seconds=N_ALERTS + 5)
    live = []
    for i, order in enumerate(orders):
        seed_market(settings.database, {"BTC/USDT": order.price})
        alert = build_alert(order, symbol="BTC/USDT", timeframe="1h", strategy_id="default")
        body = alert.model_dump(mode="json", exclude_none=True)
        body.update(passphrase=PASSPHRASE, timenow=(start + timedelta(seconds=i)).isoformat())
        response = client.post("/webhook", json=body)
        assert response.status_code == 200, response.json
        live.append(response.json["decision"])

    assert [d["status"] for d in backtest.decisions] == [d["status"] for d in live]
    assert any(d["status"] == "executed" for d in live)
    for replayed, posted in zip(backtest.decisions, live, strict=True):
        assert replayed["reason"] == posted["reason"]
        assert replayed.get("target_position") == pytest.approx(posted.get("target_position"))
        if "order" in posted:
            assert replayed["order"]["side"] == posted["order"]["side"]
            assert replayed["order"]["amount"] == pytest.approx(posted["order"]["amount"], rel=1e-12)
        if "fill" in posted:
            assert replayed["fill"]["average"] == pytest.approx(posted["fill"]["average"], rel=1e-12)
            assert replayed["fill"]["fee"] == pytest.approx(posted["fill"]["fee"], rel=1e-12)
