"""The JSON users see, produced from the typed objects in one place."""

from __future__ import annotations

from typing import Any

from engine.decision import Decision

__all__ = ["alert_response"]


def alert_response(alert_id: int, decision: Decision, ml_analysis: dict[str, Any] | None) -> dict[str, Any]:
    """The webhook's answer for an alert that passed the gate; a decision that refused what the
    alert asks for (answered 422) also says, as every refusal does, the code and the field."""
    body = {
        "alert_id": alert_id,
        "status": decision.status,
        "decision": decision.as_json(),
        "ml_analysis": ml_analysis,
    }
    if decision.refusal is not None:
        code, field = decision.refusal
        body["error"] = {"code": code, "message": decision.reason, "where": field}
    return body
