"""The ML REST API through the real app: models, predictions, training jobs, strategies."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from storage import Storage
from storage import models as model_store
from tests.conftest import make_settings, market_app, sample_alert, wait_until
from tests.operator.conftest import AUTH, TOKEN
from webhook.recovery import recover

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")

ROUTES = [
    ("GET", "/api/ml/models"), ("POST", "/api/ml/models"), ("PUT", "/api/ml/models"),
    ("GET", "/api/ml/predictions"), ("POST", "/api/ml/predictions"), ("PUT", "/api/ml/predictions"),
    ("GET", "/api/ml/training"), ("POST", "/api/ml/training"), ("PUT", "/api/ml/training"),
    ("GET", "/api/ml/strategies"), ("POST", "/api/ml/strategies"), ("GET", "/api/ml/champions"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_ml_route_wants_the_token(api: Any, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-token"}):
        response = api.open(path, method=method, headers=headers, json={})
        assert response.status_code == 401, (headers, response.json)
        assert response.json["error"]["code"] == "unauthorized"


def _register(client: Any, version: str) -> Any:
    return client.post("/api/ml/models", headers=AUTH, json={"symbol": "BTC/USDT", "timeframe": "1h",
                                                             "version": version})  # fmt: skip


def _change(client: Any, version: str, action: str, **extra: str) -> Any:
    body = {"symbol": "BTC/USDT", "timeframe": "1h", "version": version, "action": action, **extra}
    return client.put("/api/ml/models", headers=AUTH, json=body)


def test_models_register_list_activate_retire(ml_api: Any, store: dict[str, Any]) -> None:
    first = _register(ml_api, "v1")
    assert first.status_code == 201, first.json
    assert first.json["type"] == "trees" and first.json["synthetic"] is True
    assert ISO.match(first.json["created_at"])
    # Registering enrolls the store's newest version (v2): the market's first model, so champion.
    assert first.json["active"] is False and first.json["role"] == "inactive"
    second = _register(ml_api, "v2").json
    assert second["active"] is True and second["role"] == "champion"
    listed = ml_api.get("/api/ml/models", headers=AUTH).json
    assert sorted(m["version"] for m in listed) == ["v1", "v2"]
    assert [m["version"] for m in ml_api.get("/api/ml/models?active=true", headers=AUTH).json] == ["v2"]
    assert ml_api.get("/api/ml/models?type=trees_lstm", headers=AUTH).json == []
    assert len(ml_api.get("/api/ml/models?type=trees", headers=AUTH).json) == 2

    activated = _change(ml_api, "v1", "activate", reason="v1 held up better live")
    assert activated.status_code == 200 and activated.json["active"] is True
    assert activated.json["role"] == "champion"
    # The store's pointer still names what was trained last; the database names what is served.
    assert (store["model_dir"] / "BTC_USDT_1h" / "latest").read_text().strip() == "v2"
    roles = {m["version"]: m["role"] for m in ml_api.get("/api/ml/models", headers=AUTH).json}
    assert roles == {"v1": "champion", "v2": "retired"}
    why = ml_api.get("/api/ml/champions?symbol=BTC/USDT", headers=AUTH).json[0]["champion"]["why"]
    assert (why["kind"], why["actor"], why["reason"], why["previous"]) == (
        "promote", "operator API", "v1 held up better live", "v2"
    )
    assert ml_api.get("/api/ml/champions?symbol=ETH/USDT", headers=AUTH).json == []

    refused = _change(ml_api, "v1", "retire")
    assert refused.status_code == 409 and "activate another version first" in refused.json["error"]["message"]
    retired = _change(ml_api, "v2", "retire")
    assert (
        retired.status_code == 200
        and retired.json["retired"] is True
        and ISO.match(retired.json["retired_at"])
    )
    assert _change(ml_api, "v2", "activate").json["retired"] is False  # activating on purpose un-retires
    assert _change(ml_api, "v2", "activate").status_code == 200  # already champion: nothing to do


def test_models_refuse_what_is_not_in_the_store(ml_api: Any, store: dict[str, Any]) -> None:
    missing = _register(ml_api, "v9")
    assert missing.status_code == 404 and "v1" in missing.json["error"]["message"]
    assert missing.json["error"]["where"] == "version"
    assert _change(ml_api, "v1", "activate").status_code == 404  # not registered yet
    assert _register(ml_api, "v1").status_code == 201
    (store["model_dir"] / "BTC_USDT_1h" / "v1" / "forest.npz").write_bytes(b"tampered")
    altered = _change(ml_api, "v1", "activate")
    assert altered.status_code == 409 and altered.json["error"]["code"] == "model_altered"
    assert (store["model_dir"] / "BTC_USDT_1h" / "latest").read_text().strip() == "v2"
    bad = ml_api.post("/api/ml/models", headers=AUTH, json={"symbol": "BTCUSDT", "version": "v1"})
    assert bad.status_code == 400 and bad.json["error"]["where"] == "symbol"
    assert (
        ml_api.post(
            "/api/ml/models", headers=AUTH, json={"symbol": "BTC/USDT", "version": "../x"}
        ).status_code
        == 400
    )
    extra = ml_api.post(
        "/api/ml/models", headers=AUTH, json={"symbol": "BTC/USDT", "version": "v1", "path": "/"}
    )
    assert extra.status_code == 400 and extra.json["error"]["where"] == "path"
    not_json = ml_api.post("/api/ml/models", headers=AUTH, data="{", content_type="application/json")
    assert not_json.status_code == 400 and "JSON object" in not_json.json["error"]["message"]


def test_predictions_on_demand_follow_the_active_model(
    ml_api: Any, store: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import ml_integration.serving

    monkeypatch.setattr(ml_integration.serving, "RELOAD_CHECK_S", 0.0)  # see an activation at once
    made = ml_api.post("/api/ml/predictions", headers=AUTH, json={"symbol": "BTC/USDT", "timeframe": "1h"})
    assert made.status_code == 201, made.json
    prediction = made.json["prediction"]
    assert prediction["model_version"] == "v2" and prediction["alert_id"] is None
    assert ISO.match(prediction["timestamp"]) and ISO.match(prediction["target_time"])
    assert made.json["ml_analysis"]["model_version"] == "v2"
    _register(ml_api, "v1")
    _register(ml_api, "v2")
    _change(ml_api, "v1", "activate")
    again = ml_api.post("/api/ml/predictions", headers=AUTH, json={"symbol": "BTC/USDT", "timeframe": "1h"})
    assert again.json["prediction"]["model_version"] == "v1"
    # Another worker (a second app on the same files) serves the activated version too.
    other = market_app(make_settings(store["tmp_path"], TVGW_API_TOKEN=TOKEN, TVGW_ML_ENABLED="true",
                                     TVGW_RESOLVE_INTERVAL_S="0")).test_client()  # fmt: skip
    third = other.post("/api/ml/predictions", headers=AUTH, json={"symbol": "BTC/USDT", "timeframe": "1h"})
    assert third.json["prediction"]["model_version"] == "v1"
    unknown = ml_api.post("/api/ml/predictions", headers=AUTH, json={"symbol": "ETH/USDT", "timeframe": "1h"})
    assert unknown.status_code == 409 and "tvgw train" in unknown.json["error"]["message"]
    bad_tf = ml_api.post("/api/ml/predictions", headers=AUTH, json={"symbol": "BTC/USDT", "timeframe": "7x"})
    assert bad_tf.status_code == 400 and bad_tf.json["error"]["where"] == "timeframe"


def test_predictions_list_filters_and_outcomes(ml_api: Any) -> None:
    ids = [
        ml_api.post("/api/ml/predictions", headers=AUTH, json={"symbol": "BTC/USDT"}).json["prediction"]["id"]
        for _ in range(2)
    ]
    assert [p["id"] for p in ml_api.get("/api/ml/predictions", headers=AUTH).json] == ids[::-1]
    assert [p["id"] for p in ml_api.get(f"/api/ml/predictions?after_id={ids[0]}", headers=AUTH).json] == ids[
        1:
    ]
    assert ml_api.get("/api/ml/predictions?symbol=ETH/USDT", headers=AUTH).json == []
    assert ml_api.get("/api/ml/predictions?resolved=true", headers=AUTH).json == []
    row = ml_api.get("/api/ml/predictions?limit=1", headers=AUTH).json[0]
    went_up = 1 if row["direction_prob"] >= 0.5 else 0
    outcome = {"id": row["id"], "actual_direction": went_up, "actual_magnitude": 0.01}
    recorded = ml_api.put("/api/ml/predictions", headers=AUTH, json=outcome)
    assert recorded.status_code == 200 and recorded.json["prediction_accuracy"] == 1.0
    assert ISO.match(recorded.json["resolved_at"])
    outcome = {"id": row["id"], "actual_direction": 1 - went_up, "actual_magnitude": -0.01}
    corrected = ml_api.put("/api/ml/predictions", headers=AUTH, json=outcome)
    assert corrected.json["prediction_accuracy"] == 0.0 and corrected.json["actual_direction"] == 1 - went_up
    assert [p["id"] for p in ml_api.get("/api/ml/predictions?resolved=true", headers=AUTH).json] == [
        row["id"]
    ]
    outcome = {"id": 999999, "actual_direction": 1, "actual_magnitude": 0}
    assert ml_api.put("/api/ml/predictions", headers=AUTH, json=outcome).status_code == 404
    wrong = ml_api.put(
        "/api/ml/predictions", headers=AUTH, json={"id": 1, "actual_direction": 2, "actual_magnitude": 0}
    )
    assert wrong.status_code == 400 and wrong.json["error"]["where"] == "actual_direction"
    bad = ml_api.get("/api/ml/predictions?resolved=maybe", headers=AUTH)
    assert bad.status_code == 400 and bad.json["error"]["where"] == "resolved"


def test_on_demand_prediction_says_when_ml_is_off(api: Any) -> None:
    response = api.post("/api/ml/predictions", headers=AUTH, json={"symbol": "BTC/USDT", "timeframe": "1h"})
    assert response.status_code == 409 and "TVGW_ML_ENABLED" in response.json["error"]["message"]


def _wait_for_job(client: Any, job_id: int, timeout: float = 240) -> dict[str, Any]:
    """The job once its runner process has finished with it (done, failed or cancelled)."""

    def job() -> dict[str, Any]:
        return next(j for j in client.get("/api/ml/training", headers=AUTH).json if j["id"] == job_id)

    def finished() -> dict[str, Any] | None:
        found = job()
        return found if found["status"] not in ("queued", "running", "cancelling") else None

    return wait_until(finished, timeout, f"training job {job_id} did not finish", lambda: str(job()))


TRAIN = {"symbol": "BTC/USDT", "timeframe": "1h", "days": 40, "synthetic": True, "quick": True, "lstm": False}


@pytest.mark.slow
def test_training_job_runs_outside_the_request_and_registers_its_model(ml_api: Any) -> None:
    assert _register(ml_api, "v2").json["role"] == "champion"  # the store's newest, enrolled first
    started = time.monotonic()
    queued = ml_api.post("/api/ml/training", headers=AUTH, json=TRAIN)
    assert time.monotonic() - started < 5  # answered at once, the fit happens elsewhere
    assert queued.status_code == 202 and queued.json["status"] == "queued", queued.json
    busy = ml_api.post("/api/ml/training", headers=AUTH, json=TRAIN)
    assert busy.status_code == 409 and busy.json["error"]["code"] == "training_busy"
    job = _wait_for_job(ml_api, queued.json["id"])
    assert job["status"] == "done", job
    assert job["progress"] == 1 and job["stage"] == "done" and ISO.match(job["finished_at"])
    # The new version serves in shadow beside the champion until it wins on live alerts.
    models = {m["version"]: m for m in ml_api.get("/api/ml/models", headers=AUTH).json}
    assert models[job["model_version"]]["role"] == "challenger" and models["v2"]["role"] == "champion"
    assert models[job["model_version"]]["type"] == "trees" and models[job["model_version"]]["holdout"]


@pytest.mark.slow
def test_cancelled_training_saves_nothing(ml_api: Any, store: dict[str, Any]) -> None:
    before = sorted(p.name for p in (store["model_dir"] / "BTC_USDT_1h").iterdir())
    job_id = ml_api.post("/api/ml/training", headers=AUTH, json={**TRAIN, "days": 200}).json["id"]
    cancel = ml_api.put("/api/ml/training", headers=AUTH, json={"id": job_id, "action": "cancel"})
    assert cancel.status_code == 200 and cancel.json["status"] in ("cancelled", "cancelling")
    job = _wait_for_job(ml_api, job_id)
    assert job["status"] == "cancelled" and job["model_version"] is None
    assert sorted(p.name for p in (store["model_dir"] / "BTC_USDT_1h").iterdir()) == before
    again = ml_api.put("/api/ml/training", headers=AUTH, json={"id": job_id, "action": "cancel"})
    assert again.status_code == 409 and "already cancelled" in again.json["error"]["message"]
    # A job already running stops at its next stage (the runner reads its row between stages).
    job_id = ml_api.post("/api/ml/training", headers=AUTH, json={**TRAIN, "days": 1500}).json["id"]
    running = "/api/ml/training?status=running"
    wait_until(lambda: ml_api.get(running, headers=AUTH).json, 60, "the runner never started")
    cancel = ml_api.put("/api/ml/training", headers=AUTH, json={"id": job_id, "action": "cancel"})
    assert cancel.status_code == 200 and cancel.json["status"] == "cancelling"
    job = _wait_for_job(ml_api, job_id)
    assert job["status"] == "cancelled" and job["stage"] == "cancelled" and 0 <= job["progress"] < 1
    assert sorted(p.name for p in (store["model_dir"] / "BTC_USDT_1h").iterdir()) == before


def test_training_job_states_and_restart(api: Any, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, TVGW_API_TOKEN=TOKEN)
    storage = Storage(settings.database)
    queued = model_store.queue_training_job(storage, symbol="BTC/USDT", timeframe="1h", params={})
    running = model_store.queue_training_job(storage, symbol="ETH/USDT", timeframe="1h", params={})
    assert model_store.claim_training_job(storage, running)
    from_shell = model_store.start_training_job(storage, symbol="SOL/USDT", timeframe="1h", params={})
    assert (
        api.put("/api/ml/training", headers=AUTH, json={"id": 12345, "action": "cancel"}).status_code == 404
    )
    assert api.put("/api/ml/training", headers=AUTH, json={"id": queued, "action": "stop"}).status_code == 400
    recover(settings)  # what gunicorn's on_starting runs
    jobs = {j["id"]: j for j in api.get("/api/ml/training", headers=AUTH).json}
    assert jobs[queued]["status"] == jobs[running]["status"] == "interrupted"
    assert "restart" in jobs[running]["error"]
    assert jobs[from_shell]["status"] == "running"  # a `tvgw train` in a shell is not ours to judge
    model_store.finish_training_job(storage, running, model_version="late")  # the old runner finishing
    assert model_store.get_training_job(storage, running)["status"] == "interrupted"
    only = api.get("/api/ml/training?status=interrupted", headers=AUTH).json
    assert sorted(j["id"] for j in only) == sorted([queued, running])
    assert api.get("/api/ml/training?status=sleeping", headers=AUTH).status_code == 400


def test_strategies_analytics_and_backtest(api: Any) -> None:
    executed = api.post("/webhook", data=json.dumps(sample_alert())).json
    api.post("/webhook", data=json.dumps(sample_alert(passphrase="wrong-passphrase")))
    strategies = api.get("/api/ml/strategies", headers=AUTH).json
    default = next(s for s in strategies if s["strategy_id"] == "default")
    assert default["alerts"] == {"executed": 1}  # the refused alert names no known strategy
    assert default["orders"] == {"filled": 1} and default["decisions"] == {"buy": 1}
    order = api.get(f"/api/alerts/{executed['alert_id']}", headers=AUTH).json["orders"][0]
    # marked at the newest candle close (the seeded market, 30000): the fee and the slippage
    slippage = order["filled"] * (order["average"] - 30_000.0)
    assert default["pnl"] == pytest.approx(-order["fee"] - slippage, abs=1e-6)
    assert default["accuracy"] == {"resolved": 0, "direction_accuracy": None, "ci95": None}
    assert api.get("/api/ml/strategies?strategy_id=default", headers=AUTH).json == [default]
    assert api.get("/api/ml/strategies?strategy_id=nope", headers=AUTH).status_code == 404
    unknown = {"strategy_id": "nope", "action": "backtest", "symbol": "BTC/USDT"}
    assert api.post("/api/ml/strategies", headers=AUTH, json=unknown).status_code == 404
    assert api.post("/api/ml/strategies", headers=AUTH, json={"strategy_id": "default"}).status_code == 400


def _backtests_settled(api: Any) -> list[dict[str, Any]] | None:
    runs = api.get("/api/ml/strategies/backtests", headers=AUTH).json
    return runs if runs and all(r["status"] != "running" for r in runs) else None


@pytest.mark.slow
def test_a_backtest_runs_outside_the_request_and_reports_every_arm(tmp_path: Path) -> None:
    """The strategies' backtest action: 202 at once, one at a time, then the walk-forward's
    trading figures per arm (small models on a synthetic candle store: a smoke run)."""
    from ml_integration.candles import frame_to_rows
    from ml_integration.synthetic import synthetic_history
    from storage.candles import upsert_candles

    settings = make_settings(tmp_path, TVGW_API_TOKEN=TOKEN)
    storage = Storage(settings.database)
    storage.migrate()
    history = synthetic_history(24 * 75, seed=3, timeframe="1h", now_s=time.time())
    upsert_candles(storage, "BTC/USDT", "1h", frame_to_rows(history), "synthetic")
    api = market_app(settings).test_client()
    body = {"strategy_id": "default", "action": "backtest", "symbol": "BTC/USDT", "timeframe": "1h",
            "train_days": 30, "test_days": 10, "quick": True}  # fmt: skip
    started = api.post("/api/ml/strategies", headers=AUTH, json=body)
    assert started.status_code == 202, started.json
    assert started.json["status"] == "running" and started.json["mode"] == "execute"
    again = api.post("/api/ml/strategies", headers=AUTH, json=body)
    assert again.status_code == 409 and again.json["error"]["code"] == "backtest_busy"
    (run,) = wait_until(lambda: _backtests_settled(api), 600, "the backtest did not settle")
    assert run["status"] == "done", run
    assert set(run["trading"]) == {"buy_and_hold", "pine", "baseline", "ml"}
    assert Path(run["report"]).is_file()


def test_strategy_accuracy_and_calibration_come_from_resolved_predictions(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, TVGW_API_TOKEN=TOKEN)
    client = market_app(settings).test_client()
    alert_id = client.post("/webhook", data=json.dumps(sample_alert())).json["alert_id"]
    storage = Storage(settings.database)
    from storage.predictions import insert_prediction

    with storage.transaction() as conn:
        for prob in (0.72, 0.74, 0.31):
            insert_prediction(
                conn, timestamp=time.time(), alert_id=alert_id, symbol="BTC/USDT", timeframe="1h",
                direction_prob=prob, horizon=5, target_time=time.time(),
            )  # fmt: skip
    for row in client.get("/api/ml/predictions", headers=AUTH).json:
        client.put("/api/ml/predictions", headers=AUTH, json={"id": row["id"], "actual_direction": 1,
                                                              "actual_magnitude": 0.02})  # fmt: skip
    default = client.get("/api/ml/strategies?strategy_id=default", headers=AUTH).json[0]
    assert default["accuracy"]["resolved"] == 3 and default["accuracy"][
        "direction_accuracy"
    ] == pytest.approx(2 / 3, abs=1e-3)
    low, high = default["accuracy"]["ci95"]
    assert 0 < low < 2 / 3 < high < 1
    bins = {(b["low"], b["high"]): b for b in default["calibration"]}
    assert bins[(0.7, 0.8)]["n"] == 2 and bins[(0.7, 0.8)]["predicted"] == pytest.approx(0.73)
    assert bins[(0.7, 0.8)]["observed"] == 1.0 and bins[(0.3, 0.4)]["n"] == 1


def test_existing_api_speaks_iso_times_and_rounded_amounts(api: Any) -> None:
    alert_id = api.post("/webhook", data=json.dumps(sample_alert(contracts=0.0123456789123))).json["alert_id"]
    alert = api.get(f"/api/alerts/{alert_id}", headers=AUTH).json
    assert ISO.match(alert["received_at"]) and ISO.match(alert["updated_at"]) and ISO.match(alert["timenow"])
    order = alert["orders"][0]
    assert ISO.match(order["created_at"]) and order["amount"] == round(order["amount"], 8)
    assert len(repr(order["average"]).split(".")[-1]) <= 8
    position = api.get("/api/positions", headers=AUTH).json["positions"][0]
    assert ISO.match(position["opened_at"])
    assert ISO.match(api.get("/api/orders", headers=AUTH).json[0]["updated_at"])
