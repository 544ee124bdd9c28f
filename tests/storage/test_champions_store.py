"""The champion/challenger records on either store (``--store=postgresql`` runs these on
PostgreSQL): a change guarded by the revision it was judged on happens once, sizing off keeps
the time it went off, events come back typed, and only alerts both versions predicted (with the
same horizon, both resolved) are paired."""

from __future__ import annotations

from pathlib import Path

from storage import Storage
from storage import champions as role_store
from storage.alerts import insert_refused
from storage.predictions import insert_prediction, resolve_prediction
from tests.conftest import store_target

SYMBOL, TF = "BTC/USDT", "1h"


def roles(storage: Storage) -> role_store.MarketRoles:
    found = role_store.get_roles(storage, SYMBOL, TF)
    assert found is not None
    return found


def test_a_change_judged_on_stale_roles_is_refused(tmp_path: Path) -> None:
    storage = Storage(store_target(tmp_path))
    storage.migrate()
    assert role_store.insert_champion(storage, SYMBOL, TF, "v1", now=100.0)
    assert not role_store.insert_champion(storage, SYMBOL, TF, "v9", now=101.0)  # one champion a market
    seen = roles(storage)
    assert role_store.set_challenger(storage, seen, "v2", now=102.0)
    assert not role_store.set_champion(storage, seen, "v2", keep_challenger=False, now=103.0)  # stale
    fresh = roles(storage)
    assert (fresh.champion, fresh.challenger, fresh.revision) == ("v1", "v2", seen.revision + 1)
    assert role_store.set_champion(storage, fresh, "v2", keep_challenger=True, now=104.0)
    assert (roles(storage).champion, roles(storage).challenger) == ("v2", None)  # it was the challenger

    assert role_store.set_fallback(storage, roles(storage), "no better than the base rate", now=200.0)
    assert role_store.set_fallback(storage, roles(storage), "still no better (v3)", now=300.0)
    off = roles(storage)
    assert off.sizing_off and off.fallback_since == 200.0 and off.fallback_reason == "still no better (v3)"
    assert role_store.set_fallback(storage, off, None, now=400.0)
    assert not roles(storage).sizing_off and roles(storage).fallback_reason is None
    assert [r.market for r in role_store.list_roles(storage)] == ["BTC/USDT 1h"]


def test_events_come_back_typed_and_in_order(tmp_path: Path) -> None:
    storage = Storage(store_target(tmp_path))
    storage.migrate()
    first = role_store.add_event(storage, symbol=SYMBOL, timeframe=TF, kind="champion", version="v1",
                                 actor="gateway", reason="first", now=10.0)  # fmt: skip
    second = role_store.add_event(
        storage, symbol=SYMBOL, timeframe=TF, kind="promote", version="v2", previous="v1", actor="ana",
        reason="by hand", evidence={"n": 3, "ci95": [-0.1, -0.01]}, now=20.0,
    )  # fmt: skip
    role_store.add_event(storage, symbol=SYMBOL, timeframe=TF, kind="sizing_off", version="v2",
                         actor="gateway", reason="no better", now=30.0)  # fmt: skip
    assert second.id > first.id
    listed = role_store.list_events(storage, symbol=SYMBOL, timeframe=TF)
    assert [e.kind for e in listed] == ["sizing_off", "promote", "champion"] and listed[1] == second
    assert [e.id for e in role_store.list_events(storage, after_id=first.id, since=15.0)] == [
        listed[0].id,
        second.id,
    ]
    assert [e.version for e in role_store.champion_history(storage, SYMBOL, TF)] == ["v2", "v1"]
    assert role_store.is_enrolled(storage, SYMBOL, TF, "v1") and not role_store.is_enrolled(
        storage, SYMBOL, TF, "v3"
    )


def test_only_alerts_both_versions_predicted_are_paired(tmp_path: Path) -> None:
    storage = Storage(store_target(tmp_path))
    storage.migrate()

    def alert() -> int:
        return insert_refused(storage, received_at=1.0, source_ip=None, http_status=200, error_code="t",
                              reason="t", payload="{}")  # fmt: skip

    def predict(
        alert_id: int, version: str, role: str, p: float, *, horizon: int = 5, up: int | None = 1
    ) -> None:
        row = insert_prediction(
            storage, timestamp=float(alert_id), alert_id=alert_id, symbol=SYMBOL, timeframe=TF,
            model_version=version, role=role, direction_prob=p, horizon=horizon, target_time=99.0,
        )  # fmt: skip
        if up is not None:
            resolve_prediction(
                storage, row, actual_direction=up, actual_magnitude=0.01, prediction_accuracy=1.0
            )

    both = alert()
    predict(both, "v1", "champion", 0.55)
    predict(both, "v2", "challenger", 0.7)
    alone = alert()
    predict(alone, "v1", "champion", 0.6)  # no shadow call on this alert
    other_horizon = alert()
    predict(other_horizon, "v1", "champion", 0.6)
    predict(other_horizon, "v2", "challenger", 0.6, horizon=3)
    open_outcome = alert()
    predict(open_outcome, "v1", "champion", 0.6)
    predict(open_outcome, "v2", "challenger", 0.6, up=None)
    pairs = role_store.paired_outcomes(storage, SYMBOL, TF, "v1", "v2", limit=10)
    assert pairs == [role_store.PairedOutcome(float(both), 0.55, 0.7, 1)]
    assert [o.direction_prob for o in role_store.version_outcomes(storage, SYMBOL, TF, "v1", limit=10)] == [
        0.55,
        0.6,
        0.6,
        0.6,
    ]  # fmt: skip  (every resolved call of v1, paired or not: its own record)
