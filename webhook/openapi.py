"""The OpenAPI 3.1 document of the JSON API, served at ``/api/openapi.json``.

Written by hand from the routes and the pydantic bodies they parse (the bodies' JSON Schemas are
generated from those models, so a field added there appears here; 3.1 is JSON Schema 2020-12,
which is what pydantic writes). Tests validate the document
and fuzz every operation against it (schemathesis), so a route that drifts from it fails.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from flask import Blueprint, jsonify

__all__ = ["bp", "openapi_document"]

bp = Blueprint("openapi", __name__)

_ERROR = {"$ref": "#/components/schemas/Error"}
_ID = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}


def _param(name: str, schema: dict[str, Any], description: str, where: str = "query") -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": schema,
        "description": description,
    }


def _text(name: str, description: str) -> dict[str, Any]:
    return _param(name, {"type": "string", "pattern": r"^[A-Za-z0-9/_:.\-]{1,64}$"}, description)


_LIMIT = _param("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}, "rows at most")


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "bad parameter or body: the message says what to change, ``where`` names it",
        401: "missing or wrong bearer token",
        404: "no such row, or the API is disabled (TVGW_API_TOKEN unset)",
        409: "the request conflicts with the current state (the message says which)",
    }
    return {
        str(c): {"description": text[c], "content": {"application/json": {"schema": _ERROR}}}
        for c in (401, 404, *codes)
    }


def _ok(description: str, schema: dict[str, Any], status: int = 200) -> dict[str, Any]:
    return {str(status): {"description": description, "content": {"application/json": {"schema": schema}}}}


def _body(model: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}},
    }


def _op(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": responses, **extra}


_OBJ: dict[str, Any] = {"type": "object"}
_LIST: dict[str, Any] = {"type": "array", "items": {"type": "object"}}


def _paths() -> dict[str, Any]:
    return {
        "/api/alerts": {"get": _op("Recent alerts, newest first, accepted or refused", {
            **_ok("alerts", _LIST), **_errors(400)},
            parameters=[_LIMIT, _text("status", "only alerts with this status")])},
        "/api/alerts/{alert_id}": {"get": _op("One alert with its orders", {**_ok("the alert", _ref("Alert")),
            **_errors(400)}, parameters=[_param("alert_id", _ID, "alert id", "path")])},
        "/api/alerts/{alert_id}/timeline": {"get": _op(
            "One alert's timeline: fired, received, decided, ordered, each fill and exit, with latencies",
            {**_ok("the timeline", _ref("Timeline")), **_errors(400)},
            parameters=[_param("alert_id", _ID, "alert id", "path")])},
        "/api/feeds": {"get": _op(
            "Each chart feed (strategy, market, timeframe): newest heartbeat, next expected, open gaps",
            {**_ok("feeds", _list_of("Feed")), **_errors()})},
        "/api/feeds/daily": {"get": _op(
            "Per strategy and day: alerts expected, received, missed, repaired; median latencies",
            {**_ok("days", _list_of("DailySummary")), **_errors(400)}, parameters=[
                _text("strategy_id", "only this strategy"),
                _param("days", {"type": "number", "exclusiveMinimum": 0, "maximum": 3650},
                       "window in days (default 7)")])},
        "/api/orders": {"get": _op("Recent orders", {**_ok("orders", _LIST), **_errors(400)},
                                   parameters=[_LIMIT])},
        "/api/positions": {"get": _op(
            "Open positions and stops: the default account's, and every account's under accounts", {
            **_ok("positions", _OBJ), **_errors()})},
        "/api/accuracy": {"get": _op("Prediction accuracy with its baselines", {
            **_ok("accuracy", _OBJ), **_errors(400)}, parameters=[
                _text("symbol", "market, e.g. BTC/USDT"),
                _param("days", {"type": "number", "exclusiveMinimum": 0, "maximum": 3650},
                       "window in days (default 30)")])},
        "/api/ml/models": {
            "get": _op("Model versions (filter by type, active only)",
                       {**_ok("models", _list_of("Model")), **_errors(400)},
                       parameters=[_text("symbol", "market"), _text("timeframe", "bar size"), _LIMIT,
                                   _param("type", {"type": "string", "enum": ["trees", "trees_lstm"]},
                                          "model family"),
                                   _param("active", {"type": "boolean"}, "only the active version(s)")]),
            "post": _op("Register a version saved in the model store (hashes checked)", {
                **_ok("registered", _ref("Model"), 201), **_errors(400, 409)},
                requestBody=_body("ModelVersion")),
            "put": _op("Activate (champion now, on every worker's next alert; recorded with its reason) or "
                       "retire a version", {
                **_ok("changed", _ref("Model")), **_errors(400, 409)}, requestBody=_body("ModelChange")),
        },
        "/api/ml/champions": {
            "get": _op("Per market: the champion and why, the challenger's paired test, ML-driven sizing",
                       {**_ok("markets", _list_of("Champion")), **_errors(400)},
                       parameters=[_text("symbol", "market"), _text("timeframe", "bar size")]),
        },
        "/api/ml/predictions": {
            "get": _op("The prediction log", {**_ok("predictions", _list_of("Prediction")), **_errors(400)},
                       parameters=[
                _text("symbol", "market"), _text("timeframe", "bar size"), _text("model_version", "version"),
                _param("resolved", {"type": "boolean"}, "only resolved (true) or open (false) predictions"),
                _param("days", {"type": "number", "minimum": 0.0001, "maximum": 3650},
                       "made in the last days"),
                _param("after_id", {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                       "only rows newer than this id (live feeds)"), _LIMIT]),
            "post": _op("A prediction on demand for a market (logged; no order)", {
                **_ok("the prediction and its analysis", _OBJ, 201), **_errors(400, 409)},
                requestBody=_body("Market")),
            "put": _op("Record or correct a prediction's outcome", {
                **_ok("the prediction", _ref("Prediction")), **_errors(400)}, requestBody=_body("Outcome")),
        },
        "/api/ml/training": {
            "get": _op("Training jobs, newest first",
                       {**_ok("jobs", _list_of("TrainingJob")), **_errors(400)},
                       parameters=[
                _param("status", {"type": "string", "enum": ["queued", "running", "cancelling", "done",
                       "failed", "cancelled", "interrupted"]}, "only jobs in this state"), _LIMIT]),
            "post": _op("Start a training job (runs in its own process; answered at once)", {
                **_ok("the queued job", _ref("TrainingJob"), 202), **_errors(400, 409)},
                requestBody=_body("TrainingRequest")),
            "put": _op("Cancel a job", {**_ok("the job", _ref("TrainingJob")), **_errors(400, 409)},
                       requestBody=_body("JobChange")),
        },
        "/api/ml/strategies": {
            "get": _op("Per-strategy analytics: alerts, decisions, orders, paper P&L, accuracy, calibration",
                       {**_ok("strategies", _list_of("Strategy")), **_errors(400)},
                       parameters=[_text("strategy_id", "only this strategy")]),
            "post": _op("Strategy actions: `backtest` starts a walk-forward backtest (202 at once)",
                        {"202": {"description": "the backtest started", "content": {"application/json": {
                            "schema": {"type": "object"}}}}, **_errors(400, 404, 409)},
                        requestBody=_body("StrategyAction")),
        },
        "/api/ml/strategies/backtests": {
            "get": _op("Backtests started from the API: running, done (trading figures per arm) or failed",
                       {"200": {"description": "backtests, newest first", "content": {"application/json": {
                           "schema": {"type": "array", "items": {"type": "object"}}}}}}),
        },
    }  # fmt: skip


def _schemas() -> dict[str, Any]:
    from webhook import ml_api

    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["status", "error"],
            "properties": {
                "status": {"type": "string"},
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "where": {"type": "string"},
                        "details": {"type": "array", "items": {"type": "object"}},
                    },
                },
            },
        }
    }
    schemas.update(_record_schemas())
    for model in (ml_api.Market, ml_api.ModelVersion, ml_api.ModelChange, ml_api.Outcome,
                  ml_api.TrainingRequest, ml_api.JobChange, ml_api.StrategyAction):  # fmt: skip
        schemas[model.__name__] = _closed(model.model_json_schema())
    return schemas


def _nullable(kind: str) -> dict[str, Any]:
    return {"type": [kind, "null"]}


_TIME = {"type": ["string", "null"], "format": "date-time"}


def _object(properties: dict[str, Any], *required: str) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": properties}


_STR, _INT, _NUM, _BOOL = ({"type": t} for t in ("string", "integer", "number", "boolean"))
_MAP = {"type": "object"}
JOB_STATES = ["queued", "running", "cancelling", "done", "failed", "cancelled", "interrupted"]


def _record_schemas() -> dict[str, Any]:
    """The rows the ML routes answer with: required keys and their types, so the fuzzing checks
    the answers too, not only the status codes."""
    model = {
        "symbol": _STR, "timeframe": _STR, "version": _STR, "type": {"enum": ["trees", "trees_lstm"]},
        "role": {"enum": ["champion", "challenger", "retired", "inactive"]}, "active": _BOOL,
        "retired": _BOOL, "retired_at": _TIME, "created_at": _TIME, "synthetic": _BOOL, "holdout": _MAP,
        "live": _MAP,
    }  # fmt: skip
    prediction = {
        "id": _INT, "timestamp": _TIME, "symbol": _STR, "timeframe": _STR, "alert_id": _nullable("integer"),
        "model_version": _nullable("string"), "direction_prob": _nullable("number"), "horizon": _INT,
        "target_time": _TIME, "actual_direction": _nullable("integer"), "resolved_at": _TIME,
        "prediction_accuracy": _nullable("number"),
    }  # fmt: skip
    job = {
        "id": _INT, "symbol": _STR, "timeframe": _STR, "status": {"enum": JOB_STATES}, "params": _MAP,
        "started_at": _TIME, "finished_at": _TIME, "stage": _nullable("string"), "progress": _NUM,
        "model_version": _nullable("string"), "error": _nullable("string"),
    }  # fmt: skip
    strategy = {
        "strategy_id": _STR, "alerts": _MAP, "decisions": _MAP, "orders": _MAP, "pnl": _NUM,
        "accuracy": _MAP, "calibration": {"type": "array", "items": _MAP},
    }  # fmt: skip
    champion = {
        "symbol": _STR, "timeframe": _STR, "champion": _MAP, "challenger": {"type": ["object", "null"]},
        "ml_sizing": _MAP, "rules": _MAP, "events": {"type": "array", "items": _MAP},
    }  # fmt: skip
    return {
        **_decision_schemas(),
        **_continuity_schemas(),
        "Model": _object(model, *model),
        "Champion": _object(champion, *champion),
        "Prediction": _object(prediction, "id", "timestamp", "symbol", "timeframe", "horizon", "target_time"),
        "TrainingJob": _object(
            job, "id", "symbol", "timeframe", "status", "params", "started_at", "progress"
        ),
        "Strategy": _object(strategy, *strategy),
    }


def _decision_schemas() -> dict[str, Any]:
    """The decision an alert's row keeps (the webhook answers with the same JSON): the leading
    account's decision, and every account's outcome in ``accounts`` (docs/accounts.md)."""
    number, text = _nullable("number"), _nullable("string")
    outcome = {
        "account": _STR,
        "status": {"enum": ["executed", "placed", "annotated", "rejected", "failed", "processing"]},
        "reason": _STR, "symbol": text, "side": {"enum": ["buy", "sell", None]}, "amount": number,
        "client_order_id": text, "filled": number, "average": number,
        "risk_codes": {"type": "array", "items": _STR},
    }  # fmt: skip
    decision = {
        "status": _STR, "mode": _STR, "action": _STR, "reason": _STR, "symbol": text,
        "current_position": number, "target_position": number, "order": _MAP, "fill": _MAP, "risk": _MAP,
        "details": _MAP, "account": _STR, "accounts": _list_of("AccountOutcome"),
    }  # fmt: skip
    alert = {"id": _INT, "status": _STR, "decision": {"anyOf": [_ref("Decision"), {"type": "null"}]},
             "orders": {"type": "array", "items": _MAP}}  # fmt: skip
    return {
        "AccountOutcome": _object(
            outcome, "account", "status", "reason", "client_order_id", "filled", "average"
        ),
        "Decision": _object(decision, "status", "reason"),
        "Alert": _object(alert, "id", "status", "orders"),
    }


def _continuity_schemas() -> dict[str, Any]:
    """An alert's timeline, the chart feeds and the daily summary (docs/heartbeats.md)."""
    number, text = _nullable("number"), _nullable("string")
    step = {"step": _STR, "at": _TIME, "step_ms": number, "since_received_ms": _NUM, "detail": _MAP}
    timeline = {
        "alert_id": _INT, "strategy_id": text, "symbol": text, "action": text, "status": _STR,
        "alert_price": number, "steps": {"type": "array", "items": _object(step, *step)},
    }  # fmt: skip
    maybe = {"type": ["object", "null"]}
    feed = {
        "strategy_id": _STR, "symbol": _STR, "timeframe": _STR,
        "status": {"enum": ["ok", "overdue", "gap", "no_heartbeats"]}, "last_heartbeat": maybe,
        "last_message_at": text, "next": maybe, "gaps": {"type": "array", "items": _MAP},
    }  # fmt: skip
    day = {
        "day": _STR, "strategy_id": _STR, "expected": _INT, "received": _INT, "missed": _INT,
        "repaired": _INT, "fired_to_received_ms": number, "received_to_filled_ms": number,
    }  # fmt: skip
    return {
        "Timeline": _object(timeline, *timeline),
        "Feed": _object(feed, *feed),
        "DailySummary": _object(day, *day),
    }


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _list_of(name: str) -> dict[str, Any]:
    return {"type": "array", "items": _ref(name)}


def _closed(schema: dict[str, Any]) -> dict[str, Any]:
    """The bodies refuse unknown fields (``extra="forbid"``); say so in the document."""
    return {**schema, "additionalProperties": False}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tvgw operator API",
            "version": version("tvgw"),
            "description": "What the gateway recorded, and the ML operations. Send "
            "`Authorization: Bearer <TVGW_API_TOKEN>`. Times are ISO 8601 UTC; errors are JSON whose "
            "message says what to change.",
        },
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(),
        },
        "paths": _paths(),
    }


@bp.get("/api/openapi.json")
def openapi_json() -> tuple[Any, int]:
    """Public: describing the API tells nothing a token protects."""
    return jsonify(openapi_document()), 200
