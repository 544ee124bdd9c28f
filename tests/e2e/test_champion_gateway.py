"""Champion and challenger through a real gunicorn (two workers): a newly saved version serves
in shadow beside the champion, both predictions logged per alert; the workers' review promotes
it only on a paired win on planted outcomes (worse first: not promoted; then better: promoted),
and every worker acts on the new champion; ML-driven sizing off says so in the answer and in
/healthz; `tvgw models promote/rollback` from the command line reach every worker (the listing
and the refusals are tested in-process: tests/tvgw/test_models_cli.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests

from ml_integration import MLTradingStrategy, save_version, synthetic_candles
from storage import Storage
from storage.candles import upsert_candles
from storage.predictions import set_outcome
from tests.conftest import ROOT, LiveGateway, db_rows, sample_alert, start_gateway, store_target, wait_until
from tests.ml_integration.conftest import TINY

pytestmark = pytest.mark.slow

SYMBOL, TF = "BTC/USDT", "1h"
TOKEN = "champion-token"
CONFIG = """
[strategies.annot]
passphrase = "test-secret"
mode = "annotate"
[strategies.gate]
passphrase = "test-secret"
mode = "ml_gate"
ml_threshold = 0.0
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    """v1 in the store (it becomes champion: the market's first model); v2, trained on more of
    the history, is kept aside for the tests to save while the gateway runs."""
    tmp = tmp_path_factory.mktemp("champion")
    now_hour = int(time.time() // 3600 * 3600)
    start = pd.Timestamp(now_hour - 1999 * 3600, unit="s", tz="UTC")
    candles = synthetic_candles(2000, seed=21, n_gaps=0, start=start.isoformat())
    versions = {}
    for name, rows in (("v1", candles.iloc[:-1000]), ("v2", candles.iloc[-1200:])):
        strategy = MLTradingStrategy(model_config=replace(TINY, use_lstm=False))
        strategy.train_strategy(rows, synthetic=True, symbol=SYMBOL, timeframe=TF)
        versions[name] = strategy
    save_version(versions["v1"], tmp / "models", SYMBOL, TF, version="v1")
    save_version(versions["v2"], tmp / "aside", SYMBOL, TF, version="v2")
    storage = Storage(store_target(tmp))
    storage.migrate()
    values = candles[["open", "high", "low", "close", "volume"]].itertuples(index=False)
    bars = [[int(t.timestamp() * 1000), *v] for t, v in zip(candles.index, values, strict=True)]
    upsert_candles(storage, SYMBOL, TF, bars, "test")
    (tmp / "tvgw.toml").write_text(CONFIG)
    live = start_gateway(
        tmp, TVGW_ML_ENABLED="true", TVGW_MODEL_DIR=str(tmp / "models"), TVGW_CONFIG=str(tmp / "tvgw.toml"),
        TVGW_RESOLVE_INTERVAL_S="0.5", TVGW_CHAMPION_MIN_OUTCOMES="10", TVGW_CHAMPION_WINDOW="100",
        TVGW_ML_BUDGET_MS="5000", TVGW_API_TOKEN=TOKEN, prices=None,
    )  # fmt: skip
    live.price = float(candles["close"].iloc[-1])  # type: ignore[attr-defined]
    live.aside = tmp / "aside"  # type: ignore[attr-defined]
    yield live
    live.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def save_v2(gateway: LiveGateway) -> None:
    """Put v2 in the gateway's model store (as `tvgw train` would), once."""
    market = Path(gateway.env["TVGW_MODEL_DIR"]) / "BTC_USDT_1h"
    if not (market / "v2").exists():
        shutil.copytree(gateway.aside / "BTC_USDT_1h" / "v2", market / "v2")  # type: ignore[attr-defined]
        (market / "latest").write_text("v2\n")


def post(gateway: LiveGateway, strategy: str = "annot") -> dict[str, Any]:
    alert = sample_alert(strategy_id=strategy, order_id=f"c-{uuid.uuid4().hex[:10]}", price=gateway.price)  # type: ignore[attr-defined]
    response = gateway.post(alert)
    assert response.status_code < 500, response.text
    return dict(response.json())


def roles(gateway: LiveGateway) -> Any:
    return db_rows(
        gateway.database, "SELECT * FROM ml_champions WHERE symbol = ? AND timeframe = ?", (SYMBOL, TF)
    )[0]


def events(gateway: LiveGateway, kind: str) -> list[Any]:
    return db_rows(gateway.database, "SELECT * FROM ml_model_events WHERE kind = ? ORDER BY id", (kind,))


def plant(gateway: LiveGateway, alert_ids: list[int], challenger_wins: bool) -> None:
    """Outcomes on the logged pairs: each alert's outcome is the side the named version leaned
    to more than the other did, so that version's log loss is the lower on every alert."""
    storage = Storage(gateway.database)
    for alert_id in alert_ids:
        logged = db_rows(gateway.database, "SELECT * FROM ml_predictions WHERE alert_id = ?", (alert_id,))
        rows = {r["role"]: r for r in logged}
        champion, challenger = rows["champion"]["direction_prob"], rows["challenger"]["direction_prob"]
        assert champion != challenger, "the two versions must differ for a paired test to mean anything"
        up = (challenger > champion) == challenger_wins
        for row in rows.values():
            set_outcome(storage, row["id"], actual_direction=int(up), actual_magnitude=0.01 if up else -0.01)


def test_a_new_version_shadows_the_champion_and_is_promoted_only_on_a_paired_win(
    gateway: LiveGateway,
) -> None:
    first = post(gateway)["ml_analysis"]
    assert first["model_version"] == "v1" and first["model_role"] == "champion" and "shadow" not in first
    assert events(gateway, "champion")[0]["reason"].startswith("the market's first model")
    save_v2(gateway)
    wait_until(lambda: roles(gateway)["challenger"] == "v2", 60, "v2 enrolled as challenger", gateway.log)

    alert_ids = []
    for _ in range(12):
        body = post(gateway)
        analysis = body["ml_analysis"]
        assert analysis["model_version"] == "v1" and analysis["shadow"]["model_version"] == "v2", analysis
        assert analysis["shadow"]["acted_on"] is False and "direction_probability" in analysis["shadow"]
        sql = "SELECT model_version, role FROM ml_predictions WHERE alert_id = ?"
        logged = db_rows(gateway.database, sql, (body["alert_id"],))
        assert sorted(tuple(r) for r in logged) == [("v1", "champion"), ("v2", "challenger")]
        alert_ids.append(body["alert_id"])

    # Outcomes where the challenger is worse: reviewed (ML-driven sizing is judged on the same
    # outcomes, which is how the test knows a review ran), and not promoted.
    plant(gateway, alert_ids, challenger_wins=False)
    wait_until(lambda: events(gateway, "sizing_off"), 60, "a review of the planted outcomes", gateway.log)
    assert roles(gateway)["champion"] == "v1" and not events(gateway, "promoted")

    # ML-driven sizing is off: the ml_gate strategy gets no ML opinion and annotates, and says why.
    gated = post(gateway, "gate")
    assert gated["status"] == "annotated" and "no ML opinion" in gated["decision"]["reason"]
    assert (
        "ML-driven sizing is off" in gated["ml_analysis"]["error"]
        and gated["ml_analysis"]["ml_sizing"] == "off"
    )
    assert gated["ml_analysis"]["logged_prediction"]["acted_on"] is False
    health = requests.get(gateway.url + "/healthz", timeout=10).json()
    assert health["status"] == "degraded"
    assert any("ML-driven sizing is off for BTC/USDT 1h" in p for p in health["problems"]), health["problems"]

    # Outcomes where the challenger is better on the same alerts: promoted, with its evidence.
    plant(gateway, alert_ids, challenger_wins=True)
    wait_until(lambda: roles(gateway)["champion"] == "v2", 60, "v2 promoted", gateway.log)
    promoted = events(gateway, "promoted")
    assert len(promoted) == 1 and promoted[0]["previous"] == "v1" and promoted[0]["actor"] == "gateway"
    for _ in range(6):  # whichever worker answers, it acts on the new champion
        analysis = post(gateway)["ml_analysis"]
        assert analysis.get("model_version") == "v2" and "shadow" not in analysis, analysis
    why = requests.get(gateway.url + "/api/ml/champions", headers={"Authorization": f"Bearer {TOKEN}"},
                       timeout=10).json()[0]  # fmt: skip
    assert why["champion"]["version"] == "v2" and why["champion"]["why"]["kind"] == "promoted"
    test = why["champion"]["why"]["evidence"]
    assert test["n"] >= 12 and test["difference"] < 0 and test["ci95"][1] < 0 and "paired" in test["test"]


def tvgw(gateway: LiveGateway, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tvgw.cli", "models", *args], cwd=ROOT, env=gateway.env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip


def test_promote_and_rollback_from_the_command_line_reach_every_worker(gateway: LiveGateway) -> None:
    save_v2(gateway)
    wait_until(lambda: "v2" in (roles(gateway)["champion"], roles(gateway)["challenger"]), 60, "v2 enrolled")
    champion = roles(gateway)["champion"]
    other = "v1" if champion == "v2" else "v2"
    promoted = tvgw(gateway, "promote", other, "--reason", "e2e: by hand", "--by", "tester")
    assert promoted.returncode == 0, promoted.stderr
    assert f"{other} is champion now (was {champion})" in promoted.stdout
    for _ in range(4):
        assert post(gateway)["ml_analysis"].get("model_version") == other
    rolled = tvgw(gateway, "rollback", "--reason", "e2e: undo")
    assert rolled.returncode == 0, rolled.stderr
    for _ in range(4):
        assert post(gateway)["ml_analysis"].get("model_version") == champion
    made = events(gateway, "promote")[-1]
    assert (made["version"], made["actor"], made["reason"]) == (other, "tester", "e2e: by hand")
    undone = events(gateway, "rollback")[-1]
    assert (undone["version"], undone["previous"], undone["reason"]) == (champion, other, "e2e: undo")
