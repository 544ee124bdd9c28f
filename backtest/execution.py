"""The seam between the backtest and the engine: the ONLY backtest module that touches it.

Every replayed alert goes through :meth:`EngineReplay.submit`, which is one call of the engine's
one door, :meth:`engine.engine.TradingEngine.process_signal`, the very code a live alert walks
(price check, decide under the risk limits, claim the alert, record the intent, fill once on the
paper book, record the result), on a SQLite file of its own with the paper broker (fees and
slippage from the command line). Only the door's collaborators differ from the webhook's: the
*clock* is the replayed bar's time, and the *market price* is the replayed price (the bar's open
for an entry, the stop or target level for an exit). The risk limits that read time (daily loss,
cooldown, drawdown snapshots) therefore run on simulated time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.alert import Alert
from engine.brokers.paper import PaperBroker
from engine.decision import Decision, Receipt, SignalPort
from engine.engine import TradingEngine
from engine.exceptions import PriceCheckError
from engine.market import ReferencePrice
from settings import Settings
from storage import Storage
from storage import alerts as alert_store
from storage import orders as order_store

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
    """``settings`` for one arm: its own database, the paper broker with the run's costs, and the
    default strategy in ``mode`` sized by the alert's own contracts."""
    strategy = settings.strategies[settings.default_strategy]
    return settings.model_copy(
        update={
            "database": str(database),
            "broker": "paper",
            "paper": settings.paper.model_copy(update={"fee_rate": fee_rate, "slippage_bps": slippage_bps}),
            "strategies": {
                **settings.strategies,
                strategy.id: strategy.model_copy(update={"mode": mode, "sizing": "alert"}),
            },
        }
    )


@dataclass
class ReplayClock:
    """The replayed bar's time: the engine's clock in a backtest."""

    t: float = 0.0

    def now(self) -> float:
        return self.t


@dataclass
class ReplayPrice:
    """The replayed market price: the engine's price source in a backtest."""

    price: float = 0.0

    def reference(self, symbol: str, timeframe: str) -> ReferencePrice | None:
        return ReferencePrice(self.price, PRICE_SOURCE) if self.price > 0 else None

    def last_known(self, symbol: str) -> ReferencePrice | None:
        return self.reference(symbol, "")


class EngineReplay:
    """One arm's book: a SQLite file, a paper broker, the engine. Decides replayed alerts."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.storage = Storage(settings.database, synchronous="OFF")  # a scratch file: speed over durability
        self.storage.migrate()
        self.broker = PaperBroker(self.storage, settings.paper, max_leverage=settings.risk.max_leverage)
        self.clock, self.price = ReplayClock(), ReplayPrice()
        self.engine = TradingEngine(settings, self.storage, self.broker, clock=self.clock, prices=self.price)
        self.fees = 0.0

    def close(self) -> None:
        self.storage.close()

    def submit(
        self, alert: Alert, *, price: float, at: float, signal: SignalPort | None = None,
        analysis: dict[str, Any] | None = None,
    ) -> Decision:  # fmt: skip
        """Decide ``alert`` at simulated time ``at`` with the market at ``price``, through the
        engine's one door. ``signal`` is what the arm's model said (the ML layer's own type), and
        ``analysis`` what the alert row's ``ml_analysis`` keeps of it."""
        self.clock.t, self.price.price = at, price
        strategy = self.settings.strategies[alert.strategy_id or self.settings.default_strategy]
        alert = alert.model_copy(update={"strategy_id": strategy.id})
        receipt = Receipt(received_at=at, payload=json.dumps(_payload(alert)), ml_analysis=analysis)
        try:
            decision = self.engine.process_signal(alert, signal, receipt=receipt)
        except PriceCheckError as exc:  # recorded as the webhook records it: a refusal
            alert_store.insert_refused(
                self.storage, received_at=at, source_ip=None, http_status=422, error_code=exc.code,
                reason=exc.message, payload=_payload(alert), fields=alert.record_fields(),
            )  # fmt: skip
            return Decision(
                status="rejected", mode=strategy.mode, action=alert.action.value, reason=exc.message
            )
        if decision.duplicate_of is not None:
            return Decision(status="annotated", mode=strategy.mode, action=alert.action.value,
                            reason="duplicate of an alert already replayed")  # fmt: skip
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
