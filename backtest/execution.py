"""The seam between the backtest and the engine: the ONLY backtest module that touches it.

Every replayed alert goes through :meth:`EngineReplay.submit`, which walks the same steps as
``webhook.gateway.Gateway._process`` on a real SQLite file of its own, with the paper broker
(fees and slippage from the command line) and the risk manager on:

    price check → snapshot → in one transaction: decide → mark → claim the alert → record the
    intent (pending order) → send once → settle → finish the alert row

What differs from the webhook is what the engine's coming door, ``TradingEngine.process_signal``,
takes as collaborators: the *clock* is the replayed bar's time and the *market price* is the
replayed price (the bar's open for an entry, the stop or target level for an exit), given as a
:class:`ReferencePrice` instead of read from the candle store at wall-clock time. When that door
exists, the body of :meth:`submit` becomes one ``process_signal`` call and nothing else in
``backtest/`` changes.

Where the current engine still reads the wall clock (to be handed the clock by the door):

* the drawdown limit's equity snapshots: recorded here at the simulated time, once per alert,
  instead of ``TradingEngine.note_equity`` (which throttles on wall time);
* the daily loss limit (``storage.orders.equity_marks`` takes "today" from the wall clock, so
  it finds no snapshot of a simulated day and does not act in a replay);
* the cooldown (``positions.updated_at`` and the portfolio's ``now`` are wall time), so a
  replay runs with ``cooldown_seconds = 0`` and says so in its summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.alert import Alert
from engine.brokers.paper import PaperBroker
from engine.decision import Decision, MLOpinion
from engine.engine import TradingEngine
from engine.exceptions import PriceCheckError
from engine.market import ReferencePrice, check_alert_price
from storage import Storage
from storage import alerts as alert_store
from storage import marks as mark_store
from storage import orders as order_store
from storage import state as state_store
from tvgw.config import Settings

__all__ = ["Account", "EngineReplay", "replay_settings"]

#: Where a replayed price comes from, as the decision and the marks record it.
PRICE_SOURCE = "backtest replay"


@dataclass(frozen=True)
class Account:
    """The paper book after an alert: the ledger's cash, the position and the fees so far."""

    cash: float
    position: float
    fees: float


def replay_settings(
    settings: Settings, database: Path, *, mode: str, fee_rate: float, slippage_bps: float
) -> Settings:
    """``settings`` for one arm: its own database, the paper broker with the run's costs, the
    default strategy in ``mode`` sized by the alert's own contracts, and no cooldown (see the
    module docstring: the engine measures it on the wall clock)."""
    strategy = settings.strategies[settings.default_strategy]
    return settings.model_copy(
        update={
            "database": str(database),
            "broker": "paper",
            "paper": settings.paper.model_copy(update={"fee_rate": fee_rate, "slippage_bps": slippage_bps}),
            "risk": settings.risk.model_copy(update={"cooldown_seconds": 0.0}),
            "strategies": {
                **settings.strategies,
                strategy.id: strategy.model_copy(update={"mode": mode, "sizing": "alert"}),
            },
        }
    )


class EngineReplay:
    """One arm's book: a SQLite file, a paper broker, the engine. Decides replayed alerts."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.storage = Storage(settings.database, synchronous="OFF")  # a scratch file: speed over durability
        self.storage.migrate()
        self.broker = PaperBroker(self.storage, settings.paper, max_leverage=settings.risk.max_leverage)
        self.engine = TradingEngine(settings, self.storage, self.broker)
        self.fees = 0.0

    def close(self) -> None:
        self.storage.close()

    def submit(
        self,
        alert: Alert,
        *,
        price: float,
        at: float,
        opinion: MLOpinion | None = None,
        candles: Any = None,
        analysis: dict[str, Any] | None = None,
    ) -> Decision:
        """Decide ``alert`` at simulated time ``at`` with the market at ``price``; record it and,
        when the decision places an order, fill it on the paper book. ``analysis`` is what the
        alert row's ``ml_analysis`` says (the opinion's source)."""
        strategy = self.settings.strategies[alert.strategy_id or self.settings.default_strategy]
        alert = alert.model_copy(update={"strategy_id": strategy.id})
        symbol = self.broker.resolve_symbol(alert.ticker, alert.exchange)
        key = alert.idempotency_key(datetime.fromtimestamp(at, UTC), symbol)
        reference = ReferencePrice(price, PRICE_SOURCE)
        fields = alert.record_fields()
        try:
            for name, claimed in (("price", alert.price), ("close", alert.close)):
                if claimed is not None:
                    check_alert_price(name, claimed, reference, self.settings.max_price_deviation)
        except PriceCheckError as exc:
            alert_store.insert_refused(
                self.storage, received_at=at, source_ip=None, http_status=422, error_code=exc.code,
                reason=exc.message, payload=_payload(alert), fields=fields,
            )  # fmt: skip
            return Decision(
                status="rejected", mode=strategy.mode, action=alert.action.value, reason=exc.message
            )
        snapshot = self.engine.snapshot(alert, strategy, candles, reference)
        with self.storage.transaction() as conn:
            if snapshot.equity is not None:
                order_store.record_equity(conn, self.broker.name, snapshot.equity, at=at)
            decision = self.engine.decide(conn, alert, strategy, snapshot, opinion)
            if decision.symbol:
                mark_store.set_mark(conn, self.broker.name, decision.symbol, price, PRICE_SOURCE, at=at)
            outcome = None
            if decision.order is None:
                outcome = {"http_status": 200, "reason": decision.reason, "decision": decision.as_json(),
                           "ml_analysis": analysis}  # fmt: skip
            alert_id = alert_store.claim_alert(
                conn, idempotency_key=key, received_at=at, source_ip=None, payload=_payload(alert),
                fields={**fields, "symbol": decision.symbol}, status=decision.status, outcome=outcome,
            )  # fmt: skip
            if alert_id is None:
                return Decision(status="annotated", mode=strategy.mode, action=alert.action.value,
                                reason="duplicate of an alert already replayed")  # fmt: skip
            stamp = alert.timenow or alert.time
            if decision.symbol and stamp is not None:
                state_store.set_last_alert_time(conn, strategy.id, decision.symbol, stamp.timestamp())
            if decision.order is not None:
                client_order_id = f"tvgw-{alert_id}-{int(at) % 100000}"
                order_store.create_pending_order(
                    conn, alert_id=alert_id, client_order_id=client_order_id, broker=self.broker.name,
                    symbol=decision.order.symbol, side=decision.order.side, order_type="market",
                    amount=decision.order.amount, price=decision.order.price,
                )  # fmt: skip
                decision = self.engine.send(decision, client_order_id)
                self.engine.settle(conn, decision)
                alert_store.finish_alert(
                    conn, alert_id, status=decision.status, http_status=200, reason=decision.reason,
                    decision=decision.as_json(), ml_analysis=analysis, symbol=decision.symbol,
                )  # fmt: skip
        if decision.result is not None:
            self.fees += decision.result.fee
        return decision

    def account(self, symbol: str) -> Account:
        """Cash, the position in ``symbol`` and the fees paid, from the ledger (the truth)."""
        held = next((p.amount for p in order_store.list_positions(self.storage, self.broker.name)
                     if p.symbol == symbol), 0.0)  # fmt: skip
        return Account(cash=self.broker.cash(), position=held, fees=self.fees)


def _payload(alert: Alert) -> dict[str, Any]:
    return alert.model_dump(mode="json", exclude_none=True, exclude={"passphrase"})
