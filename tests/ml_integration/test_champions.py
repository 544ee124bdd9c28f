"""Champion and challenger on a real SQLite file and a real model store: enrolment, promotion
only on a paired out-of-sample win (outcomes planted both ways), the base-rate fallback and how
a retrain earns sizing back, and a human's promote and rollback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ml_integration.champions import (
    ChampionError,
    ChampionRules,
    enroll_latest,
    market_report,
    promote,
    review,
    rollback,
    version_roles,
)
from ml_integration.evaluation import paired_comparison
from ml_integration.store import save_version
from storage import Storage
from storage import champions as role_store
from storage.alerts import insert_refused
from storage.predictions import insert_prediction, resolve_prediction

SYMBOL, TF = "BTC/USDT", "1h"
RULES = ChampionRules(min_outcomes=40, window=400)
T0 = 1_700_000_000.0


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    s = Storage(tmp_path / "tvgw.sqlite")
    s.migrate()
    return s


@pytest.fixture
def models(tmp_path: Path, trained: Any) -> Path:
    """A store holding v1 (latest). Further versions are saved by the tests (files only: a
    version's predictions here are planted, not computed)."""
    folder = tmp_path / "models"
    save_version(trained, folder, SYMBOL, TF, version="v1")
    return folder


def roles(storage: Storage) -> role_store.MarketRoles:
    found = role_store.get_roles(storage, SYMBOL, TF)
    assert found is not None
    return found


def truth(n: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The true P(up) of ``n`` alerts and the outcomes drawn from it (seeded)."""
    rng = np.random.default_rng(seed)
    q = rng.uniform(0.15, 0.85, n)
    return q, (rng.uniform(size=n) < q).astype(int)


def plant(
    storage: Storage, calls: dict[str, tuple[str, np.ndarray]], outcomes: np.ndarray, start: int = 0
) -> None:
    """One alert per outcome; per version (its role, its P(up) per alert) a resolved prediction."""
    with storage.transaction() as conn:
        for i, y in enumerate(outcomes):
            at = T0 + (start + i) * 3600
            alert_id = insert_refused(
                conn, received_at=at, source_ip=None, http_status=200, error_code="planted", reason="planted",
                payload="{}",
            )  # fmt: skip
            for version, (role, probs) in calls.items():
                row = insert_prediction(
                    conn, timestamp=at, alert_id=alert_id, symbol=SYMBOL, timeframe=TF, model_version=version,
                    role=role, direction_prob=float(probs[i]), horizon=5, target_time=at + 5 * 3600,
                    price_at_prediction=100.0,
                )  # fmt: skip
                right = float((probs[i] >= 0.5) == bool(y))
                resolve_prediction(
                    conn, row, actual_direction=int(y), actual_magnitude=0.01, prediction_accuracy=right
                )


def test_the_first_model_is_champion_and_a_newer_one_its_challenger(
    storage: Storage, models: Path, trained: Any
) -> None:
    first = enroll_latest(storage, models, SYMBOL, TF)
    assert [(e.kind, e.version) for e in first] == [("champion", "v1")]
    assert enroll_latest(storage, models, SYMBOL, TF) == []  # enrolled once
    save_version(trained, models, SYMBOL, TF, version="v2")
    assert [(e.kind, e.version, e.previous) for e in enroll_latest(storage, models, SYMBOL, TF)] == [
        ("challenger", "v2", "v1")
    ]
    assert (roles(storage).champion, roles(storage).challenger) == ("v1", "v2")
    save_version(trained, models, SYMBOL, TF, version="v3")
    events = enroll_latest(storage, models, SYMBOL, TF)
    assert [(e.kind, e.version) for e in events] == [("challenger", "v3"), ("retired", "v2")]
    assert (roles(storage).champion, roles(storage).challenger) == ("v1", "v3")
    listed = {v["version"]: v["role"] for v in version_roles(storage, models)}
    assert listed == {"v1": "champion", "v2": "retired", "v3": "challenger"}


@pytest.fixture
def shadowing(storage: Storage, models: Path, trained: Any) -> Storage:
    """v1 champion, v2 its challenger."""
    enroll_latest(storage, models, SYMBOL, TF)
    save_version(trained, models, SYMBOL, TF, version="v2")
    enroll_latest(storage, models, SYMBOL, TF)
    return storage


def test_a_challenger_better_out_of_sample_is_promoted_with_its_evidence(shadowing: Storage) -> None:
    q, y = truth(120)
    plant(shadowing, {"v1": ("champion", np.full(120, 0.5)), "v2": ("challenger", q)}, y)
    events = review(shadowing, RULES)
    assert [(e.kind, e.version, e.previous) for e in events] == [("promoted", "v2", "v1")]
    evidence = events[0].evidence
    assert evidence is not None and evidence["n"] == 120 and evidence["difference"] < 0
    assert evidence["ci95"][1] < 0 and evidence["min_outcomes"] == RULES.min_outcomes
    after = roles(shadowing)
    assert (after.champion, after.challenger) == ("v2", None)
    report = market_report(shadowing, after, RULES)
    assert (
        report["champion"]["why"]["kind"] == "promoted" and report["champion"]["why"]["evidence"] == evidence
    )
    assert review(shadowing, RULES) == []  # once


@pytest.mark.parametrize("how", ["equal", "worse", "better_but_too_few", "better_on_other_alerts"])
def test_a_challenger_is_not_promoted_without_a_paired_win(shadowing: Storage, how: str) -> None:
    q, y = truth(120)
    half = np.full(120, 0.5)
    if how == "equal":  # the same forecasts: a difference of zero is no win
        plant(shadowing, {"v1": ("champion", q), "v2": ("challenger", q)}, y)
    elif how == "worse":
        plant(shadowing, {"v1": ("champion", q), "v2": ("challenger", half)}, y)
    elif how == "better_but_too_few":
        n = RULES.min_outcomes - 1
        plant(shadowing, {"v1": ("champion", half[:n]), "v2": ("challenger", q[:n])}, y[:n])
    else:  # good forecasts, but not on alerts the champion also predicted: nothing is paired
        plant(shadowing, {"v1": ("champion", half[:60])}, y[:60])
        plant(shadowing, {"v2": ("challenger", q[60:])}, y[60:], start=60)
    assert [e.kind for e in review(shadowing, RULES)] in ([], ["sizing_off"])
    assert (roles(shadowing).champion, roles(shadowing).challenger) == ("v1", "v2")
    report = market_report(shadowing, roles(shadowing), RULES)
    assert report["challenger"]["verdict"].startswith(
        "waiting" if "other" in how or "few" in how else "not better"
    )


def test_the_paired_test_sides_with_a_forecast_only_beyond_its_interval() -> None:
    q, y = truth(400, seed=8)
    flat = np.full(400, 0.5)
    paired = paired_comparison(y, flat, q)
    assert paired.candidate_better and paired.n == 400
    assert paired.ci[0] <= paired.difference <= paired.ci[1] < 0
    assert not paired_comparison(y, q, flat).candidate_better
    same = paired_comparison(y, q, q)
    assert not same.candidate_better and same.difference == 0.0
    assert not paired_comparison([], [], []).candidate_better
    barely = paired_comparison(y[:30], flat[:30], np.clip(q[:30] + 0.6 * (0.5 - q[:30]), 0, 1))
    assert barely.difference < 0 and not barely.candidate_better  # better on average, not beyond noise


def test_sizing_falls_back_when_the_champion_is_no_better_than_the_base_rate_until_a_retrain_earns_it_back(
    shadowing: Storage, models: Path, trained: Any
) -> None:
    q, y = truth(120)
    plant(shadowing, {"v1": ("champion", 1 - q)}, y)  # the champion has it backwards
    events = review(shadowing, RULES)
    assert [(e.kind, e.version) for e in events] == [("sizing_off", "v1")]
    off = roles(shadowing)
    assert off.sizing_off and "no better than the base rate" in (off.fallback_reason or "")
    assert events[0].evidence is not None and events[0].evidence["ci95"][1] >= 0
    assert review(shadowing, RULES) == []  # told once
    # A retrain: v3, the new challenger, is better than v1 on the same later alerts.
    save_version(trained, models, SYMBOL, TF, version="v3")
    enroll_latest(shadowing, models, SYMBOL, TF)
    q2, y2 = truth(120, seed=5)
    plant(shadowing, {"v1": ("champion", 1 - q2), "v3": ("challenger", q2)}, y2, start=200)
    events = review(shadowing, RULES)
    assert [(e.kind, e.version) for e in events] == [("promoted", "v3"), ("sizing_on", "v3")]
    assert not roles(shadowing).sizing_off and roles(shadowing).champion == "v3"


def test_a_promoted_champion_no_better_than_the_base_rate_keeps_sizing_off(
    shadowing: Storage, models: Path, trained: Any
) -> None:
    q, y = truth(120)
    plant(shadowing, {"v1": ("champion", 1 - q), "v2": ("challenger", np.full(120, 0.5))}, y)
    events = review(shadowing, RULES)  # v2 beats v1 (who does not?) but not the base rate
    assert [(e.kind, e.version) for e in events] == [("promoted", "v2"), ("sizing_off", "v2")]
    assert roles(shadowing).sizing_off and roles(shadowing).fallback_reason.startswith("champion v2's ")


def test_a_champion_better_than_the_base_rate_keeps_sizing_on(shadowing: Storage) -> None:
    q, y = truth(120)
    plant(shadowing, {"v1": ("champion", q)}, y)
    assert review(shadowing, RULES) == []
    report = market_report(shadowing, roles(shadowing), RULES)
    assert report["ml_sizing"]["on"] and report["ml_sizing"]["base_rate_test"]["ci95"][1] < 0


def test_a_human_promotes_and_rolls_back_with_who_and_why(shadowing: Storage, models: Path) -> None:
    event = promote(
        shadowing, models, SYMBOL, TF, "v2", actor="ana", reason="v2 fixed the fee bug", rules=RULES
    )
    assert (event.kind, event.version, event.previous, event.actor) == ("promote", "v2", "v1", "ana")
    assert event.evidence is not None and event.evidence["n"] == 0  # the test as it stood, kept with it
    assert (roles(shadowing).champion, roles(shadowing).challenger) == ("v2", None)
    back = rollback(shadowing, models, SYMBOL, TF, actor="ben", reason="v2 misbehaves live")
    assert (back.kind, back.version, back.previous, back.actor, back.reason) == (
        "rollback",
        "v1",
        "v2",
        "ben",
        "v2 misbehaves live",
    )
    assert roles(shadowing).champion == "v1"
    assert {v["version"]: v["role"] for v in version_roles(shadowing, models)} == {
        "v1": "champion",
        "v2": "retired",
    }
    with pytest.raises(ChampionError, match="already the champion"):
        promote(shadowing, models, SYMBOL, TF, "v1", actor="ana", reason="again", rules=RULES)
    with pytest.raises(ChampionError, match=r"no saved version 'v9'.*v1, v2"):
        promote(shadowing, models, SYMBOL, TF, "v9", actor="ana", reason="typo", rules=RULES)
    with pytest.raises(ChampionError, match="reason is required"):
        rollback(shadowing, models, SYMBOL, TF, actor="ana", reason=" ")
    (models / "BTC_USDT_1h" / "v2" / "metadata.json").write_text("{}")
    with pytest.raises(ChampionError, match="altered"):
        promote(shadowing, models, SYMBOL, TF, "v2", actor="ana", reason="x", rules=RULES)
    assert roles(shadowing).champion == "v1"


def test_the_first_champion_has_nothing_to_roll_back_to(storage: Storage, models: Path) -> None:
    enroll_latest(storage, models, SYMBOL, TF)
    with pytest.raises(ChampionError, match="first: there is no earlier champion"):
        rollback(storage, models, SYMBOL, TF, actor="ana", reason="why not")
