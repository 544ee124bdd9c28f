"""The operator's ML API: model versions, predictions, training jobs and per-strategy analytics.

Every route is token-protected (``token_required``, the same check as the rest of ``/api``),
answers JSON through :func:`webhook.api_json.api_response` (ISO times, rounded amounts), and
refuses bad input with a 400 that names the field. Request bodies are pydantic models.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Literal, TypeVar

from flask import Blueprint
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from common.timeframes import seconds
from ml_integration import champions
from ml_integration.evaluation import wilson_interval
from ml_integration.exceptions import ModelIntegrityError
from ml_integration.store import list_versions, model_key, version_metadata
from settings import Settings
from storage import analytics
from storage import champions as role_store
from storage import models as model_store
from storage import predictions as prediction_store
from storage.database import is_url
from storage.models import ACTIVE_JOB_STATES
from webhook import current_gateway
from webhook.api import MAX_ROW_ID, token_required
from webhook.api_json import (
    api_response,
    json_body,
    query_bool,
    query_choice,
    query_float,
    query_int,
    query_limit,
    query_text,
)
from webhook.errors import ApiError
from webhook.gateway import _validation_error

__all__ = ["bp"]

bp = Blueprint("ml_api", __name__, url_prefix="/api/ml")
log = logging.getLogger(__name__)

#: The project checkout: the training runner is ``python -m tvgw.cli train --job ID`` from here.
ROOT = Path(__file__).resolve().parents[1]
MODEL_TYPES = ("trees", "trees_lstm")
JOB_STATES = ("queued", "running", "cancelling", "done", "failed", "cancelled", "interrupted")


# --- request bodies ----------------------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Market(_Body):
    """A market the model store knows: ``BTC/USDT`` and a timeframe such as ``1h``."""

    symbol: str = Field(pattern=r"^[A-Za-z0-9]{1,20}/[A-Za-z0-9]{1,20}(:[A-Za-z0-9]{1,20})?$")
    timeframe: str = Field(default="1h", pattern=r"^[0-9]{1,4}[mhdwM]$")

    @field_validator("timeframe")
    @classmethod
    def _known_timeframe(cls, value: str) -> str:
        seconds(value)  # raises ValueError naming the timeframe
        return value


class ModelVersion(Market):
    version: str = Field(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")


class ModelChange(ModelVersion):
    """``activate`` makes the version champion at once (a human's promotion, recorded with
    ``reason``); ``retire`` stops a challenger shadowing, or retires any version but the champion."""

    action: Literal["activate", "retire"]
    reason: str = Field(default="changed through the operator API", min_length=1, max_length=500)


class Outcome(_Body):
    id: int = Field(ge=1, le=MAX_ROW_ID)
    actual_direction: Literal[0, 1]
    actual_magnitude: float = Field(ge=-10, le=10, allow_inf_nan=False)


class TrainingRequest(Market):
    days: float = Field(default=365.0, gt=0, le=3650, allow_inf_nan=False)
    synthetic: bool = False
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    horizon: int = Field(default=5, ge=1, le=100)
    quick: bool = False
    #: False trains the tree models only (type ``trees``): minutes faster, no TensorFlow needed.
    lstm: bool = True


class JobChange(_Body):
    id: int = Field(ge=1, le=MAX_ROW_ID)
    action: Literal["cancel"]


class StrategyAction(Market):
    """``backtest``: a walk-forward backtest of the strategy's mode on the candle store's history
    of ``symbol``/``timeframe`` (``tvgw backtest``), run in its own process."""

    strategy_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    action: Literal["backtest"]
    train_days: int = Field(default=180, ge=7, le=3650)
    test_days: int = Field(default=30, ge=1, le=365)
    fees: float = Field(default=0.001, ge=0, lt=0.1, allow_inf_nan=False)
    slippage_bps: float = Field(default=5.0, ge=0, lt=1000, allow_inf_nan=False)
    #: Small models (a smoke run in seconds, not for decisions).
    quick: bool = False


B = TypeVar("B", bound=BaseModel)


def _parse(model: type[B]) -> B:
    try:
        return model.model_validate(json_body())
    except ValidationError as exc:
        raise _validation_error(exc) from None


# --- models ------------------------------------------------------------------------------------------
def _role(row: dict[str, Any], roles: role_store.MarketRoles | None) -> str:
    if roles is not None and row["version"] == roles.champion:
        return "champion"
    if roles is not None and row["version"] == roles.challenger:
        return "challenger"
    return "retired" if row["retired_at"] is not None else "inactive"


def _model_view(
    row: dict[str, Any], roles: role_store.MarketRoles | None, live: dict[str, Any] | None
) -> dict[str, Any]:
    model_type = "trees_lstm" if row.get("has_lstm") else "trees"
    role = _role(row, roles)
    return {
        "symbol": row["symbol"], "timeframe": row["timeframe"], "version": row["version"],
        "type": model_type, "role": role, "active": role == "champion",
        "retired": row["retired_at"] is not None, "retired_at": row["retired_at"],
        "created_at": row["created_at"], "synthetic": row["synthetic"],
        "holdout": row["metrics"], "live": live or {"predictions": 0, "resolved": 0, "accuracy": None,
                                                    "brier": None},
    }  # fmt: skip


def _has_lstm(settings: Settings, row: dict[str, Any]) -> bool:
    return (Path(row["path"]) / "lstm.npz").is_file() or (
        Path(settings.model_dir) / model_key(row["symbol"], row["timeframe"]) / row["version"] / "lstm.npz"
    ).is_file()


@bp.get("/models")
@token_required
def models() -> Any:
    """Registered versions with their role; ``?symbol=&timeframe=&type=trees|trees_lstm&active=true``
    (active: the champion)."""
    model_type, active_only = query_choice("type", MODEL_TYPES), query_bool("active")
    views = model_views(
        symbol=query_text("symbol"), timeframe=query_text("timeframe"),
        limit=query_limit(100),
    )  # fmt: skip
    return api_response(
        [
            v
            for v in views
            if (model_type is None or v["type"] == model_type)
            and (active_only is None or v["active"] == active_only)
        ]
    )


def model_views(
    *, symbol: str | None = None, timeframe: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Registered versions as the API and the dashboard show them: their role (champion,
    challenger, retired, inactive), hold-out metrics from training and live accuracy/Brier from
    the prediction log (a challenger's are its shadow predictions)."""
    gateway = current_gateway()
    rows = model_store.list_models(gateway.storage, symbol=symbol, timeframe=timeframe, limit=limit)
    live = analytics.model_live_stats(gateway.storage)
    roles = {(r.symbol, r.timeframe): r for r in role_store.list_roles(gateway.storage)}
    views = []
    for row in rows:
        row["has_lstm"] = _has_lstm(gateway.settings, row)
        market = (row["symbol"], row["timeframe"])
        views.append(_model_view(row, roles.get(market), live.get((*market, row["version"]))))
    return views


def _sealed(settings: Settings, body: ModelVersion) -> dict[str, Any]:
    """The version's verified metadata, or a 404/409 that says what is wrong with it."""
    try:
        return version_metadata(settings.model_dir, body.symbol, body.timeframe, body.version)
    except FileNotFoundError:
        known = list_versions(settings.model_dir, body.symbol, body.timeframe)
        raise ApiError(
            404, "no_such_version",
            f"no saved version {body.version!r} of {body.symbol} {body.timeframe} in the model store; "
            f"saved versions: {known[-10:] or 'none (train one first)'}", where="version",
        ) from None  # fmt: skip
    except ModelIntegrityError as exc:
        raise ApiError(409, "model_altered", f"refused: {exc}", where="version") from None


@bp.post("/models")
@token_required
def register_model() -> Any:
    """Register a version already saved in the model store (its hashes are checked first). The
    store's newest version of that market is enrolled too (champion when the market has none,
    else challenger), as a worker would on its next look at the store."""
    gateway = current_gateway()
    body = _parse(ModelVersion)
    metadata = _sealed(gateway.settings, body)
    champions.register_version(
        gateway.storage, gateway.settings.model_dir, body.symbol, body.timeframe, body.version, metadata
    )
    try:
        champions.enroll_latest(gateway.storage, gateway.settings.model_dir, body.symbol, body.timeframe)
    except (OSError, ModelIntegrityError) as exc:  # the newest is another version: told by /healthz
        log.warning("newest model of %s %s not enrolled: %s", body.symbol, body.timeframe, exc)
    return _one_model(gateway.settings, body, 201)


def _one_model(settings: Settings, body: ModelVersion, status: int = 200) -> Any:
    gateway = current_gateway()
    row = model_store.get_model(gateway.storage, body.symbol, body.timeframe, body.version)
    assert row is not None
    row["has_lstm"] = _has_lstm(settings, row)
    live = analytics.model_live_stats(gateway.storage).get((body.symbol, body.timeframe, body.version))
    roles = role_store.get_roles(gateway.storage, body.symbol, body.timeframe)
    return api_response(_model_view(row, roles, live), status)


@bp.put("/models")
@token_required
def change_model() -> Any:
    """``activate`` makes the version champion now, on every worker's next alert (a human's
    promotion: no paired test needed, ``reason`` is recorded with it; the champion it replaces is
    retired); ``retire`` stops a challenger shadowing or retires any version but the champion."""
    gateway = current_gateway()
    body = _parse(ModelChange)
    if model_store.get_model(gateway.storage, body.symbol, body.timeframe, body.version) is None:
        raise ApiError(
            404, "not_registered",
            f"version {body.version!r} of {body.symbol} {body.timeframe} is not registered: POST it to "
            "/api/ml/models first", where="version",
        )  # fmt: skip
    roles = role_store.get_roles(gateway.storage, body.symbol, body.timeframe)
    try:
        if body.action == "retire":
            champions.retire(gateway.storage, body.symbol, body.timeframe, body.version, actor="operator API",
                             reason=body.reason)  # fmt: skip
        elif roles is not None and roles.champion == body.version:
            _sealed(gateway.settings, body)  # already champion: nothing to change, but say if altered
            model_store.unretire_model(gateway.storage, body.symbol, body.timeframe, body.version)
        else:
            _sealed(gateway.settings, body)
            rules = champions.ChampionRules.from_settings(gateway.settings)
            champions.promote(
                gateway.storage, gateway.settings.model_dir, body.symbol, body.timeframe, body.version,
                actor="operator API", reason=body.reason, rules=rules,
            )  # fmt: skip
    except champions.ChampionError as exc:
        raise ApiError(409, "model_active" if body.action == "retire" else "roles_changed", str(exc),
                       where="version") from None  # fmt: skip
    return _one_model(gateway.settings, body)


@bp.get("/champions")
@token_required
def champion_reports() -> Any:
    """Per market: the champion and why (the event that made it, with its test), the challenger's
    paired test as it stands (n, the log-loss difference and its interval, the verdict), the
    champion's test against the base rate (ML-driven sizing on or off), and the newest events.
    ``?symbol=&timeframe=``."""
    gateway = current_gateway()
    symbol, timeframe = query_text("symbol"), query_text("timeframe")
    rules = champions.ChampionRules.from_settings(gateway.settings)
    return api_response([
        champions.market_report(gateway.storage, roles, rules)
        for roles in role_store.list_roles(gateway.storage)
        if symbol in (None, roles.symbol) and timeframe in (None, roles.timeframe)
    ])  # fmt: skip


# --- predictions -------------------------------------------------------------------------------------
@bp.get("/predictions")
@token_required
def predictions() -> Any:
    """The prediction log; ``?symbol=&timeframe=&model_version=&resolved=&days=&after_id=&limit=``."""
    days = query_float("days", None, low=0.0001, high=3650)
    rows = prediction_store.list_predictions(
        current_gateway().storage, symbol=query_text("symbol"), timeframe=query_text("timeframe"),
        model_version=query_text("model_version"), resolved=query_bool("resolved"),
        since=None if days is None else time.time() - days * 86_400,
        after_id=query_int("after_id", None, low=0, high=MAX_ROW_ID),
        limit=query_limit(),
    )  # fmt: skip
    return api_response(rows)


@bp.post("/predictions")
@token_required
def predict() -> Any:
    """A prediction on demand for a symbol and timeframe, logged like an alert's (no order)."""
    gateway = current_gateway()
    body = _parse(Market)
    if not gateway.settings.ml_enabled:
        raise ApiError(409, "ml_disabled", "ML is disabled on this gateway: set TVGW_ML_ENABLED=true")
    served = gateway.signals.serve(body.symbol, body.timeframe)
    prediction = served.prediction_row()
    if prediction is None:
        error = served.error or "no prediction"
        raise ApiError(409, "no_prediction", f"no prediction for {body.symbol} {body.timeframe}: {error}")
    with gateway.storage.transaction() as conn:
        prediction_id = prediction_store.insert_prediction(conn, timestamp=time.time(), **prediction)
    row = prediction_store.get_prediction(gateway.storage, prediction_id)
    return api_response({"prediction": row, "ml_analysis": served.analysis()}, 201)


@bp.put("/predictions")
@token_required
def record_outcome() -> Any:
    """Record or correct what happened after a prediction (``actual_direction`` 1 = up)."""
    gateway = current_gateway()
    body = _parse(Outcome)
    if not prediction_store.set_outcome(
        gateway.storage,
        body.id,
        actual_direction=body.actual_direction,
        actual_magnitude=body.actual_magnitude,
    ):
        raise ApiError(404, "not_found", f"no prediction {body.id}", where="id")
    return api_response(prediction_store.get_prediction(gateway.storage, body.id))


# --- training jobs -----------------------------------------------------------------------------------
@bp.get("/training")
@token_required
def training_jobs() -> Any:
    rows = model_store.list_training_jobs(
        current_gateway().storage, status=query_choice("status", JOB_STATES),
        limit=query_limit(),
    )  # fmt: skip
    return api_response(rows)


@bp.post("/training")
@token_required
def start_training() -> Any:
    """Queue a job and start its runner process; the answer (202) does not wait for training."""
    gateway = current_gateway()
    body = _parse(TrainingRequest)
    busy = [
        j
        for j in model_store.list_training_jobs(gateway.storage, limit=20)
        if j["status"] in ACTIVE_JOB_STATES
    ]
    if busy:
        # One at a time: a fit already uses every core, two would only both be slow.
        raise ApiError(
            409, "training_busy",
            f"training job {busy[0]['id']} is still {busy[0]['status']}: wait for it or cancel it "
            "(PUT /api/ml/training {\"id\": ..., \"action\": \"cancel\"})",
        )  # fmt: skip
    params = {
        "days": body.days, "synthetic": body.synthetic, "seed": body.seed, "quick": body.quick,
        "lstm": body.lstm,
        "strategy": {"target_periods": body.horizon},
    }  # fmt: skip
    job_id = model_store.queue_training_job(
        gateway.storage, symbol=body.symbol, timeframe=body.timeframe, params=params
    )
    _launch_runner(gateway.settings, job_id)
    return api_response(model_store.get_training_job(gateway.storage, job_id), 202)


def _launch_runner(settings: Settings, job_id: int) -> None:
    """``tvgw train --job ID`` in its own process (training holds the GIL and both cores for
    minutes; a gunicorn worker must keep answering). A thread reaps it so no zombie is left."""
    import os

    env = {
        **os.environ, "TVGW_DATABASE": str(settings.database), "TVGW_MODEL_DIR": str(settings.model_dir),
        "TVGW_LOG_LEVEL": settings.log_level,
    }  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "tvgw.cli", "train", "--job", str(job_id)],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip

    def reap() -> None:
        _, err = process.communicate()
        if process.returncode:
            log.warning("training job %d exited with %d: %s", job_id, process.returncode, err.decode()[-500:])

    threading.Thread(target=reap, name=f"tvgw-train-{job_id}", daemon=True).start()


@bp.put("/training")
@token_required
def change_training() -> Any:
    """``cancel``: a queued job stops at once, a running one at its next stage."""
    gateway = current_gateway()
    body = _parse(JobChange)
    job = model_store.get_training_job(gateway.storage, body.id)
    if job is None:
        raise ApiError(404, "not_found", f"no training job {body.id}", where="id")
    status = model_store.request_cancel(gateway.storage, body.id)
    if job["status"] not in ACTIVE_JOB_STATES or status not in ("cancelled", "cancelling"):
        raise ApiError(409, "job_finished", f"training job {body.id} is already {status}", where="id")
    return api_response(model_store.get_training_job(gateway.storage, body.id))


# --- strategies --------------------------------------------------------------------------------------
def _strategy_view(strategy_id: str) -> dict[str, Any]:
    gateway = current_gateway()
    storage = gateway.storage
    counts = analytics.strategy_counts(storage, strategy_id)
    pnl = 0.0
    for fill in analytics.strategy_fills(storage, strategy_id, gateway.broker.name):
        mark = fill["mark"] if fill["mark"] is not None else fill["last_fill"]
        pnl += fill["cash"] + fill["amount"] * (mark or 0.0)
    resolved, hits = analytics.strategy_hits(storage, strategy_id)
    return {
        "strategy_id": strategy_id, **counts, "pnl": pnl, "broker": gateway.broker.name,
        "accuracy": {
            "resolved": resolved, "direction_accuracy": round(hits / resolved, 4) if resolved else None,
            "ci95": list(wilson_interval(hits, resolved)) if resolved else None,
        },
        "calibration": analytics.calibration_bins(storage, strategy_id=strategy_id),
    }  # fmt: skip


@bp.get("/strategies")
@token_required
def strategies() -> Any:
    """Per strategy: alerts by status, decisions by action, orders by status, paper P&L (fills
    marked at the newest candle close), prediction accuracy with its 95% interval, calibration."""
    gateway = current_gateway()
    wanted = query_text("strategy_id")
    ids = sorted(set(gateway.settings.strategies) | set(analytics.strategy_ids(gateway.storage)))
    if wanted is not None:
        if wanted not in ids:
            raise ApiError(404, "not_found", f"no strategy {wanted!r}; known: {ids}", where="strategy_id")
        ids = [wanted]
    return api_response([_strategy_view(i) for i in ids])


@bp.post("/strategies")
@token_required
def strategy_action() -> Any:
    """``backtest``: start a walk-forward backtest of the strategy (202 at once; one at a time).
    Its HTML report and JSON summary appear under ``GET /api/ml/strategies/backtests``."""
    gateway = current_gateway()
    body = _parse(StrategyAction)
    strategy = gateway.settings.strategies.get(body.strategy_id)
    if strategy is None:
        known = sorted(gateway.settings.strategies)
        raise ApiError(
            404, "not_found", f"no strategy {body.strategy_id!r}; known: {known}", where="strategy_id"
        )
    running = [b for b in backtest_runs(gateway.settings) if b["status"] == "running"]
    if running:
        raise ApiError(409, "backtest_busy", f"backtest {running[0]['id']} is still running: wait for it")
    run = start_backtest(
        gateway.settings, body, mode=strategy.mode if strategy.mode != "annotate" else "hybrid"
    )
    return api_response(run, 202)


@bp.get("/strategies/backtests")
@token_required
def backtests() -> Any:
    """Backtests started from the API, newest first: running, done (with the summary's trading
    figures per arm) or failed (with the reason the command gave)."""
    return api_response(backtest_runs(current_gateway().settings))


def _backtest_dir(settings: Settings) -> Path:
    """Beside the SQLite file; beside the model store when the store is a PostgreSQL server."""
    if is_url(settings.database):
        return Path(settings.model_dir).resolve().parent / "backtests"
    return Path(settings.database).parent / "backtests"


def start_backtest(settings: Settings, body: StrategyAction, *, mode: str) -> dict[str, Any]:
    """``tvgw backtest`` on the candle store, in its own process (it trains a model per window:
    minutes of both cores), writing ``<id>.html``/``<id>.json`` and its log beside them."""
    import os

    folder = _backtest_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    run_id = f"{body.strategy_id}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    argv = [
        sys.executable, "-m", "tvgw.cli", "backtest", "--symbol", body.symbol, "--timeframe", body.timeframe,
        "--train-window", f"{body.train_days}d", "--test-window", f"{body.test_days}d",
        "--fees", str(body.fees), "--slippage-bps", str(body.slippage_bps), "--mode", mode, "--no-lstm",
        "--no-progress", "--report", str(folder / f"{run_id}.html"), *(["--quick"] if body.quick else []),
    ]  # fmt: skip
    env = {**os.environ, "TVGW_DATABASE": str(settings.database), "TVGW_MODEL_DIR": str(settings.model_dir)}
    with open(folder / f"{run_id}.log", "wb") as out:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    (folder / f"{run_id}.pid").write_text(str(process.pid))
    threading.Thread(target=process.wait, name=f"tvgw-backtest-{run_id}", daemon=True).start()
    return {"id": run_id, "status": "running", "strategy_id": body.strategy_id, "mode": mode,
            "symbol": body.symbol, "timeframe": body.timeframe}  # fmt: skip


def backtest_runs(settings: Settings) -> list[dict[str, Any]]:
    """What the backtest folder holds, read from the files (every worker sees the same)."""
    folder = _backtest_dir(settings)
    runs = []
    for log_file in sorted(folder.glob("*.log"), reverse=True) if folder.is_dir() else []:
        run_id = log_file.stem
        summary_file = folder / f"{run_id}.json"
        run: dict[str, Any] = {"id": run_id, "started_at": log_file.stat().st_mtime}
        if summary_file.exists():
            summary = json.loads(summary_file.read_text())
            run.update(status="done", report=str(folder / f"{run_id}.html"), arms=summary.get("arms"),
                       trading=summary.get("trading"))  # fmt: skip
        elif _alive(folder / f"{run_id}.pid"):
            run["status"] = "running"
        else:
            tail = log_file.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            run.update(status="failed", error=tail[0][-500:])
        runs.append(run)
    return runs


def _alive(pid_file: Path) -> bool:
    """Whether the process that ``pid_file`` names still runs (and is not a zombie)."""
    try:
        pid = int(pid_file.read_text())
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][:1] not in ("Z", "X")
    except (OSError, ValueError):
        return False
