"""Which strategy an alert acts for, and when two alerts are the same one.

Authentication reads the strategy id and passphrase through the schema's own normalisation,
so every spelling the schema accepts names the strategy that is authenticated and whose mode
applies. The idempotency key is computed from the canonical alert (resolved symbol, UTC
instant, interval timeframe, aliased action, contracts as a number), so one alert in several
spellings acts once, and alerts that differ in any of those fields each act.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import PASSPHRASE, make_settings, market_app, start_gateway
from tests.conftest import db_rows as rows

SWING = "swing-secret"
SCALP = "scalp-secret"


def post(client: Any, body: Any) -> Any:
    return client.post("/webhook", data=json.dumps(body), content_type="text/plain")


@pytest.fixture
def multi(tmp_path: Path) -> tuple[Any, Any]:
    """Three strategies: default (execute), swing (annotate), scalp (execute), each its secret."""
    settings = make_settings(
        tmp_path,
        {
            "strategies": {
                "swing": {"passphrase": SWING, "mode": "annotate"},
                "scalp": {"passphrase": SCALP, "mode": "execute"},
            }
        },
    )
    return market_app(settings).test_client(), settings


def now_z() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def bare_alert(**fields: Any) -> dict[str, Any]:
    """An alert without strategy or passphrase: each test spells those itself."""
    alert: dict[str, Any] = {"ticker": "BTCUSDT", "exchange": "BINANCE", "interval": "60", "action": "buy",
                             "contracts": 0.01, "price": 30000.0, "timenow": now_z()}  # fmt: skip
    alert.update(fields)
    return alert


# --- authentication acts for the strategy the alert names ----------------------------------

#: Every way the schema lets an alert name its strategy.
STRATEGY_SPELLINGS: dict[str, Callable[[str], dict[str, Any]]] = {
    "strategy_id": lambda s: {"strategy_id": s},
    "strategy": lambda s: {"strategy": s},
    "strategy_name": lambda s: {"strategy_name": s},
    "Strategy_ID": lambda s: {"Strategy_ID": s},
    "STRATEGY": lambda s: {"STRATEGY": s},
    "nested strategy.id": lambda s: {"strategy": {"id": s, "order_action": "buy"}},
    "nested Strategy.ID": lambda s: {"Strategy": {"ID": s}},
}
#: Every way it may carry its passphrase.
PASSPHRASE_SPELLINGS = ["passphrase", "secret", "Passphrase", "SECRET"]


@pytest.mark.parametrize("spelling", list(STRATEGY_SPELLINGS))
def test_each_strategy_spelling_acts_under_that_strategy(multi: tuple[Any, Any], spelling: str) -> None:
    client, settings = multi
    response = post(client, {**bare_alert(), **STRATEGY_SPELLINGS[spelling]("swing"), "passphrase": SWING})
    assert response.status_code == 200, response.json
    assert response.json["decision"]["mode"] == "annotate"
    assert response.json["status"] == "annotated"
    (row,) = rows(
        settings.database, "SELECT strategy_id FROM alerts WHERE id = ?", (response.json["alert_id"],)
    )
    assert row["strategy_id"] == "swing"
    # The same alert without a strategy acts under the default one, whose mode differs.
    default = post(client, {**bare_alert(order_id="other"), "passphrase": PASSPHRASE})
    assert default.json["decision"]["mode"] == "execute" and default.json["status"] == "executed"
    assert len(rows(settings.database, "SELECT * FROM orders")) == 1


@pytest.mark.parametrize("key", PASSPHRASE_SPELLINGS)
def test_each_passphrase_spelling_is_checked(multi: tuple[Any, Any], key: str) -> None:
    client, _ = multi
    ok = post(client, {**bare_alert(), "strategy": "swing", key: SWING})
    assert ok.status_code == 200 and ok.json["decision"]["mode"] == "annotate", ok.json
    wrong = post(client, {**bare_alert(), "strategy": "swing", key: "not-it"})
    assert (
        wrong.status_code == 401 and "wrong passphrase for strategy 'swing'" in wrong.json["error"]["message"]
    )


@pytest.mark.parametrize("spelling", list(STRATEGY_SPELLINGS))
def test_default_secret_with_another_strategy_name_is_refused(multi: tuple[Any, Any], spelling: str) -> None:
    client, settings = multi
    response = post(
        client, {**bare_alert(), **STRATEGY_SPELLINGS[spelling]("scalp"), "passphrase": PASSPHRASE}
    )
    assert response.status_code == 401
    assert response.json["error"]["message"] == "wrong passphrase for strategy 'scalp'"
    assert not rows(settings.database, "SELECT * FROM orders")


@pytest.mark.parametrize("spelling", list(STRATEGY_SPELLINGS))
def test_unknown_strategy_in_any_spelling_is_refused(multi: tuple[Any, Any], spelling: str) -> None:
    client, _ = multi
    response = post(
        client, {**bare_alert(), **STRATEGY_SPELLINGS[spelling]("nope"), "passphrase": PASSPHRASE}
    )
    assert response.status_code == 401 and "unknown strategy 'nope'" in response.json["error"]["message"]


@pytest.mark.parametrize(
    ("naming", "fields"),
    [
        ({"strategy": "swing", "strategy_id": "default"}, ("strategy", "strategy_id")),
        ({"strategy_name": "swing", "strategy": {"id": "scalp"}}, ("strategy_name", "strategy.id")),
        ({"Strategy_ID": "swing", "STRATEGY": "scalp"}, ("Strategy_ID", "STRATEGY")),
    ],
)
def test_two_spellings_naming_different_strategies_are_refused(
    multi: tuple[Any, Any], naming: dict[str, Any], fields: tuple[str, str]
) -> None:
    client, settings = multi
    response = post(client, {**bare_alert(), **naming, "passphrase": SWING})
    assert response.status_code == 400, response.json
    error = response.json["error"]
    assert error["code"] == "conflicting_fields"
    assert f"{fields[0]!r} and {fields[1]!r}" in error["message"] and "'strategy_id'" in error["message"]
    (row,) = rows(
        settings.database, "SELECT status, error_code FROM alerts WHERE id = ?", (response.json["alert_id"],)
    )
    assert tuple(row) == ("refused", "conflicting_fields")
    assert not rows(settings.database, "SELECT * FROM orders")


def test_two_different_passphrases_are_refused_without_echoing_either(multi: tuple[Any, Any]) -> None:
    client, settings = multi
    response = post(client, {**bare_alert(), "strategy": "swing", "passphrase": SWING, "Secret": PASSPHRASE})
    assert response.status_code == 400 and response.json["error"]["code"] == "conflicting_fields"
    assert "'passphrase' and 'Secret'" in response.json["error"]["message"]
    dump = json.dumps(response.json) + str(
        [tuple(r) for r in rows(settings.database, "SELECT * FROM alerts")]
    )
    assert SWING not in dump and PASSPHRASE not in dump


def test_the_same_value_in_two_spellings_is_no_conflict(multi: tuple[Any, Any]) -> None:
    client, _ = multi
    body = {**bare_alert(), "strategy": "swing", "strategy_id": "swing", "passphrase": SWING, "secret": SWING}
    response = post(client, {**body, "symbol": "btcusdt", "qty": "0.0100", "side": "long"})
    assert response.status_code == 200 and response.json["decision"]["mode"] == "annotate", response.json


def test_conflicting_spellings_of_any_field_are_refused(multi: tuple[Any, Any]) -> None:
    client, _ = multi
    response = post(client, {**bare_alert(), "passphrase": PASSPHRASE, "symbol": "ETHUSDT"})
    assert response.status_code == 400 and response.json["error"]["code"] == "conflicting_fields"
    assert response.json["error"]["where"] == "ticker and symbol"
    assert "'BTCUSDT' vs 'ETHUSDT'" in response.json["error"]["message"]


class _NoEquals(str):
    """A passphrase that fails the test the moment anything compares it, or its UTF-8 bytes,
    with ``==`` or ``!=`` (either side: Python asks the subclass first). Only a comparison that
    reads the bytes without those operators, such as ``hmac.compare_digest``, gets through."""

    def __eq__(self, other: object) -> bool:
        raise AssertionError("the passphrase was compared with == (not in constant time)")

    __ne__ = __eq__
    __hash__ = str.__hash__

    def __str__(self) -> str:
        return self

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return _NoEqualsBytes(str.encode(self, encoding, errors))


class _NoEqualsBytes(bytes):
    def __eq__(self, other: object) -> bool:
        raise AssertionError("the passphrase's bytes were compared with == (not in constant time)")

    __ne__ = __eq__
    __hash__ = bytes.__hash__


def test_the_passphrase_is_compared_in_constant_time_only(multi: tuple[Any, Any]) -> None:
    """The right passphrase, a wrong one, one for an unknown strategy and an empty one are all
    judged without ``==`` on the secret: a comparison that stops at the first differing byte
    tells an attacker, by its timing, how much of a guess was right."""
    from webhook.auth import authenticate
    from webhook.errors import ApiError

    _, settings = multi
    assert authenticate({"strategy": "swing", "passphrase": _NoEquals(SWING)}, settings).id == "swing"
    assert authenticate({"passphrase": _NoEquals(PASSPHRASE)}, settings).id == "default"
    for data, message in (
        ({"strategy": "swing", "passphrase": _NoEquals(SWING[:-1] + "?")}, "wrong passphrase"),
        ({"strategy": "swing", "passphrase": _NoEquals(SCALP)}, "wrong passphrase"),
        ({"strategy": "nope", "passphrase": _NoEquals(SWING)}, "unknown strategy"),
        ({"strategy": "swing", "passphrase": _NoEquals("")}, "missing passphrase"),
    ):
        with pytest.raises(ApiError, match=message) as refused:
            authenticate(data, settings)
        assert refused.value.status == 401


# --- idempotency: what makes two alerts the same ---------------------------------------------


def base_alert(stamp: datetime) -> dict[str, Any]:
    return {"passphrase": PASSPHRASE, "ticker": "SOLUSDT", "exchange": "BINANCE", "interval": "60",
            "action": "buy", "contracts": 1, "price": 20.0, "order_id": "Long",
            "timenow": stamp.strftime("%Y-%m-%dT%H:%M:%SZ")}  # fmt: skip


_PLUS2 = timezone(timedelta(hours=2))


def without(alert: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in alert.items() if k not in keys}


#: The same alert written another way: each must be answered ``duplicate`` and act once.
SAME_ALERT: dict[str, Callable[[dict[str, Any], datetime], dict[str, Any]]] = {
    "timenow +02:00": lambda a, t: {**a, "timenow": t.astimezone(_PLUS2).isoformat()},
    "timenow epoch seconds": lambda a, t: {**a, "timenow": int(t.timestamp())},
    "timenow epoch ms": lambda a, t: {**a, "timenow": int(t.timestamp()) * 1000},
    "timenow epoch ms as text": lambda a, t: {**a, "timenow": str(int(t.timestamp()) * 1000)},
    "timenow with fraction": lambda a, t: {**a, "timenow": t.strftime("%Y-%m-%dT%H:%M:%S.000+00:00")},
    "ticker with exchange prefix": lambda a, t: {**without(a, "exchange"), "ticker": "BINANCE:SOLUSDT"},
    "ticker prefix and exchange": lambda a, t: {**a, "ticker": "BINANCE:SOLUSDT"},
    "ticker in ccxt form": lambda a, t: {**a, "ticker": "SOL/USDT"},
    "ticker lower case": lambda a, t: {**a, "ticker": "solusdt"},
    "symbol for ticker": lambda a, t: {**without(a, "ticker"), "symbol": "SOLUSDT"},
    "interval 1h": lambda a, t: {**a, "interval": "1h"},
    "interval 1H": lambda a, t: {**a, "interval": "1H"},
    "action alias long": lambda a, t: {**a, "action": "long"},
    "action upper case": lambda a, t: {**a, "action": "BUY"},
    "contracts as text": lambda a, t: {**a, "contracts": "1"},
    "contracts as float": lambda a, t: {**a, "contracts": 1.0},
    "contracts alias qty": lambda a, t: {**without(a, "contracts"), "qty": "1.000"},
    "default strategy named": lambda a, t: {**a, "strategy": "default"},
    "nested order object": lambda a, t: {
        **without(a, "action", "contracts", "order_id"),
        "strategy": {"order": {"action": "buy", "contracts": "1", "id": "Long"}},
    },
}

#: One field of the key changed: each is a new alert and acts.
NEW_ALERT: dict[str, Callable[[dict[str, Any], datetime], dict[str, Any]]] = {
    "timenow": lambda a, t: {**a, "timenow": (t + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")},
    "symbol": lambda a, t: {**a, "ticker": "ETHUSDT", "price": 1800.0},  # price is not in the key
    "interval": lambda a, t: {**a, "interval": "240"},
    "action": lambda a, t: {**a, "action": "sell"},
    "contracts": lambda a, t: {**a, "contracts": 2},
    "strategy": lambda a, t: {**a, "strategy": "scalp", "passphrase": SCALP},
    "order id": lambda a, t: {**a, "order_id": "Long 2"},
}


def _fresh() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@pytest.mark.parametrize("spelling", list(SAME_ALERT))
def test_the_same_alert_in_another_spelling_acts_once(multi: tuple[Any, Any], spelling: str) -> None:
    client, settings = multi
    stamp = _fresh()
    first = post(client, base_alert(stamp))
    assert first.status_code == 200 and first.json["status"] == "executed", first.json
    again = post(client, SAME_ALERT[spelling](base_alert(stamp), stamp))
    assert again.status_code == 200, again.json
    assert again.json["status"] == "duplicate", again.json
    assert again.json["duplicate_of"] == first.json["alert_id"]
    (order,) = rows(settings.database, "SELECT symbol, filled FROM orders")
    assert tuple(order) == ("SOL/USDT", 1.0)


@pytest.mark.parametrize("field", list(NEW_ALERT))
def test_an_alert_differing_in_one_key_field_acts(multi: tuple[Any, Any], field: str) -> None:
    client, settings = multi
    stamp = _fresh()
    first = post(client, base_alert(stamp))
    assert first.json["status"] == "executed", first.json
    other = post(client, NEW_ALERT[field](base_alert(stamp), stamp))
    assert other.status_code == 200 and other.json["status"] == "executed", other.json
    assert len(rows(settings.database, "SELECT * FROM orders")) == 2


def test_two_strategies_sending_the_same_explicit_id_are_two_alerts(multi: tuple[Any, Any]) -> None:
    """An explicit ``id`` is the key within its strategy: the same id from another strategy acts
    (and from the same strategy, with every other field changed, it is the duplicate)."""
    client, settings = multi
    stamp = _fresh()
    first = post(client, {**base_alert(stamp), "id": "sig-1"})
    scalp = post(client, {**base_alert(stamp), "id": "sig-1", "strategy": "scalp", "passphrase": SCALP})
    again = post(client, {**base_alert(stamp), "id": "sig-1", "contracts": 2, "order_id": "Other"})
    assert [first.json["status"], scalp.json["status"], again.json["status"]] == [
        "executed", "executed", "duplicate",
    ], (first.json, scalp.json, again.json)  # fmt: skip
    assert again.json["duplicate_of"] == first.json["alert_id"]
    assert len(rows(settings.database, "SELECT * FROM orders")) == 2


def test_closes_of_different_shares_at_one_instant_are_two_alerts(multi: tuple[Any, Any]) -> None:
    """The share a close acts on is part of the key: "close 50%" and "close 25%" sent together
    both act; the same "close 25%" again is the duplicate."""
    client, settings = multi
    stamp = _fresh()
    assert post(client, base_alert(stamp)).json["status"] == "executed"
    close = {**base_alert(stamp), "order_id": "Close", "contracts": None}
    answers = [post(client, {**close, "action": a}).json for a in ("close 50%", "close 25%", "close 25%")]
    assert [a["status"] for a in answers] == ["executed", "executed", "duplicate"], answers
    assert len(rows(settings.database, "SELECT * FROM orders")) == 3


def test_without_a_time_the_receive_minute_stands_in() -> None:
    """An alert with neither ``timenow`` nor ``time``: a retry within the same minute is the same
    alert, the same message in the next minute a new one."""
    from engine.alert import Alert

    alert = Alert.model_validate({"ticker": "SOLUSDT", "action": "buy", "contracts": 1})
    at = datetime(2024, 6, 3, 12, 0, tzinfo=UTC)
    keys = [alert.idempotency_key(at + timedelta(seconds=s), "SOL/USDT") for s in (0, 59, 60)]
    assert keys[0] == keys[1] != keys[2]


def test_a_1h_and_a_4h_strategy_firing_together_both_act(multi: tuple[Any, Any]) -> None:
    client, settings = multi
    stamp = _fresh()
    answers = [post(client, {**base_alert(stamp), "interval": i}).json["status"] for i in ("60", "240", "4h")]
    assert answers == ["executed", "executed", "duplicate"]
    assert len(rows(settings.database, "SELECT * FROM orders")) == 2


@pytest.mark.slow
def test_two_spellings_posted_at_once_to_two_workers_place_one_order(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path)
    try:
        stamp = _fresh()
        plain = base_alert(stamp)
        other = {
            **without(plain, "exchange"),
            "ticker": "BINANCE:SOLUSDT",
            "timenow": stamp.astimezone(_PLUS2).isoformat(),
            "action": "long",
            "contracts": "1.0",
        }
        bodies = [json.dumps(plain if n % 2 else other) for n in range(12)]
        barrier = threading.Barrier(len(bodies))

        def fire(body: str) -> dict[str, Any]:
            barrier.wait(timeout=30)
            return dict(requests.post(gateway.url + "/webhook", data=body, timeout=30).json())

        with ThreadPoolExecutor(len(bodies)) as pool:
            answers = list(pool.map(fire, bodies))
        statuses = sorted(a["status"] for a in answers)
        assert statuses == ["duplicate"] * 11 + ["executed"], answers
        (order,) = rows(gateway.database, "SELECT symbol, filled FROM orders")
        assert tuple(order) == ("SOL/USDT", 1.0)
        workers = {line.split("pid ")[1].split(")")[0] for line in gateway.log().splitlines()
                   if "gateway ready (pid" in line}  # fmt: skip
        assert len(workers) == 2
    finally:
        gateway.stop()


@pytest.mark.parametrize(
    "raw_key", ["passphrase", " Passphrase ", "SECRET", "pa\\u0073sphrase", "secr\\u0065t"]
)
def test_a_refused_alert_keeps_no_passphrase_in_any_spelling(multi: tuple[Any, Any], raw_key: str) -> None:
    client, settings = multi
    body = json.dumps({**bare_alert(), "strategy": "nope"})[:-1] + f', "{raw_key}": "{SWING}"}}'
    response = client.post("/webhook", data=body, content_type="text/plain")
    assert response.status_code == 401, response.json
    assert SWING not in str([tuple(r) for r in rows(settings.database, "SELECT * FROM alerts")])


def test_a_passphrase_cut_off_by_the_kept_prefix_is_still_hidden(multi: tuple[Any, Any]) -> None:
    client, settings = multi
    head = json.dumps({**bare_alert(), "strategy": "nope", "comment": ""})[:-2]
    pad = 8192 - len(head) - len('", "passphrase": "') - 5  # the cut falls 5 characters into it
    body = head + "x" * pad + f'", "passphrase": "{SWING}"}}'
    assert client.post("/webhook", data=body, content_type="text/plain").status_code == 401
    # The same body broken after the secret: kept as raw text, cut at 8 KiB.
    assert client.post("/webhook", data=body + " oops", content_type="text/plain").status_code == 400
    for row in rows(settings.database, "SELECT payload FROM alerts"):
        assert SWING[:5] not in row["payload"]
    assert json.loads(row["payload"])["truncated"]
