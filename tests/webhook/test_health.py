"""/healthz: the model store as it is on disk, a degraded status naming a broken model, and a
drift report that is computed at most once per TTL whatever the size of the prediction log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from storage import Storage
from storage.predictions import insert_prediction
from tests.conftest import copy_model_store, make_settings
from webhook import create_app, get_gateway


def tamper(model_dir: Path, key: str = "BTC_USDT_1h") -> Path:
    """Flip one byte of an artifact of the model ``latest`` names (as the e2e tests do)."""
    folder = model_dir / key / (model_dir / key / "latest").read_text().strip()
    victim = next(p for p in sorted(folder.iterdir()) if p.name != "metadata.json" and p.suffix == ".npz")
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    return victim


def client_for(tmp_path: Path, models: Path, **env: str) -> Any:
    settings = make_settings(tmp_path, **{"TVGW_ML_ENABLED": "true", "TVGW_MODEL_DIR": str(models), **env})
    return create_app(settings).test_client()


def test_healthz_lists_the_store_and_is_ok_when_every_model_verifies(
    tmp_path: Path, model_store: Path
) -> None:
    models = copy_model_store(model_store, tmp_path / "models")
    body = client_for(tmp_path, models).get("/healthz").json
    assert body["status"] == "ok", body
    assert body["problems"] == []
    assert body["model"]["models"] == [
        {"symbol": "BTC/USDT", "timeframe": "1h", "version": "tiny", "ok": True}
    ]
    assert isinstance(body["model"]["worker"]["pid"], int)


def test_a_tampered_model_makes_healthz_degraded_naming_it(tmp_path: Path, model_store: Path) -> None:
    models = copy_model_store(model_store, tmp_path / "models")
    client = client_for(tmp_path, models)
    # The background preload, done before the file changes under it (60 s: a busy machine).
    assert get_gateway(client.application).signals.preloaded.wait(60), "the preload did not finish"
    assert client.get("/healthz").json["model"]["worker"]["models"] == {"BTC/USDT 1h": "tiny"}
    assert client.get("/healthz").json["status"] == "ok"
    tamper(models)
    response = client.get("/healthz")
    body = response.json
    assert response.status_code == 200  # still serving (on the fallback rule), but not "ok"
    assert body["status"] == "degraded", body
    (entry,) = body["model"]["models"]
    assert entry["ok"] is False and "sha256" in entry["error"]
    assert any("BTC/USDT 1h" in p and "failed to load" in p for p in body["problems"]), body


def test_an_unreadable_store_entry_is_named(tmp_path: Path, model_store: Path) -> None:
    models = copy_model_store(model_store, tmp_path / "models")
    (models / "ETH_USDT_1h").mkdir()
    (models / "ETH_USDT_1h" / "latest").write_text("v-gone\n")  # names a version that is not there
    body = client_for(tmp_path, models).get("/healthz").json
    assert body["status"] == "degraded"
    assert [m["ok"] for m in body["model"]["models"]] == [True, False]
    assert any("ETH_USDT_1h" in p for p in body["problems"]), body


def test_a_broken_model_does_not_degrade_a_gateway_with_ml_off(tmp_path: Path, model_store: Path) -> None:
    models = copy_model_store(model_store, tmp_path / "models")
    tamper(models)
    body = client_for(tmp_path, models, TVGW_ML_ENABLED="false").get("/healthz").json
    assert body["status"] == "ok" and body["model"]["models"][0]["ok"] is False


def test_drift_report_is_computed_once_per_ttl_not_per_call(tmp_path: Path) -> None:
    client = client_for(tmp_path, tmp_path / "no-models")
    first = client.get("/healthz").json["model"]["drift"]
    assert first["samples"] == 0
    storage = Storage(tmp_path / "tvgw.sqlite")
    with storage.transaction() as conn:
        for i in range(30):  # resolved outcomes that a fresh report would count
            row_id = insert_prediction(
                conn, timestamp=1e12 - i, symbol="BTC/USDT", timeframe="1h", direction_prob=0.8, horizon=5,
                target_time=0.0, price_at_prediction=100.0,
            )  # fmt: skip
            conn.execute(
                "UPDATE ml_predictions SET actual_direction = 0, actual_magnitude = -0.01,"
                " prediction_accuracy = 0, resolved_at = 1 WHERE id = ?",
                (row_id,),
            )
    again = client.get("/healthz").json["model"]["drift"]
    assert again == first  # the cached report: same samples, same computed_at


def test_an_unreadable_store_is_degraded(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "models"
    not_a_directory.write_text("a file where the model directory should be")
    body = client_for(tmp_path, not_a_directory).get("/healthz").json
    assert body["status"] == "degraded"
    assert any("cannot read the model store" in p for p in body["problems"]), body
