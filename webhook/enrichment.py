"""The ML seam of the webhook path: what the ML strategy thinks of this alert's market.

With ML disabled (``TVGW_ML_ENABLED=false``) the gateway runs on its strategies' rules alone and
says so in ``ml_analysis``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from engine.alert import Alert
from engine.decision import MLOpinion
from tvgw.config import Settings, StrategySettings

__all__ = ["Enricher", "Enrichment"]


@dataclass(frozen=True)
class Enrichment:
    opinion: MLOpinion | None
    analysis: dict[str, Any] | None
    candles: Any = None
    prediction: dict[str, Any] | None = None


class Enricher:
    def __init__(self, settings: Settings):
        self.settings = settings

    def enrich(self, alert: Alert, strategy: StrategySettings) -> Enrichment:
        if not self.settings.ml_enabled:
            return Enrichment(None, {"error": "ML is disabled (TVGW_ML_ENABLED=false)"})
        return Enrichment(None, {"error": "no model loaded"})

    def status(self) -> dict[str, Any]:
        """For /healthz: is a model loaded, which version, does it need retraining."""
        return {"enabled": self.settings.ml_enabled, "loaded": False}

    def log_prediction(self, conn: sqlite3.Connection, alert_id: int, enrichment: Enrichment) -> None:
        """Write the prediction row for a new alert (inside the alert's transaction)."""
