"""Champion and challenger: which trained version of a market is acted on, and how a newer one
earns that place on live alerts rather than on faith.

* The first version of a market becomes its **champion** directly: there is nothing to compare
  it with, and training's out-of-sample evidence chose it.
* A newer version becomes the **challenger**: it serves in shadow beside the champion on every
  alert (:mod:`ml_integration.serving`), both predictions are logged (``role`` champion and
  challenger, one alert id), and only the champion's is acted on. A newer one still replaces the
  challenger (which is retired).
* :func:`review` (each worker's outcome resolver, and ``tvgw resolve``) promotes the challenger
  once, on the same resolved alerts, its log loss is lower than the champion's beyond the 95%
  interval of the paired difference, with at least ``min_outcomes`` pairs. The test and its
  figures are kept with the event, so the API and the dashboard can show why.
* :func:`review` also turns **ML-driven sizing** off when the champion's rolling log loss is no
  better than the base rate's (the interval of the paired difference against a constant
  forecast of the window's up-rate does not lie below zero), and back on when it is: in practice
  when a retrained version is promoted and its record shows it. Serving then gives the engine no
  ML opinion (the strategy's fallback rule decides) and says why in ``ml_analysis``.
* A human promotes or rolls back (``tvgw models promote/rollback``), with who and why recorded.

The roles live in the database (``ml_champions``), read by every worker on every alert, so all
workers agree on the champion; the artifacts stay in the model store on disk.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ml_integration.evaluation import PairedComparison, paired_comparison
from ml_integration.exceptions import MLError, ModelIntegrityError
from ml_integration.store import latest_version, list_versions, model_key, version_metadata
from storage import Db, Storage
from storage import champions as role_store
from storage import models as model_registry
from storage.champions import MarketRoles, ModelEvent

__all__ = [
    "ChampionError",
    "ChampionRules",
    "MarketRoles",
    "ModelEvent",
    "base_rate_test",
    "challenger_test",
    "enroll_latest",
    "event_view",
    "market_report",
    "promote",
    "register_version",
    "retire",
    "review",
    "rollback",
    "version_roles",
]

log = logging.getLogger(__name__)

#: Who made an automatic change (a human's name comes from the CLI or the API).
GATEWAY = "gateway"
#: Alerts per resampled block of the paired tests: neighbouring alerts' outcomes overlap in time.
PAIRED_BLOCK = 10


class ChampionError(MLError):
    """A promotion or rollback cannot be done as asked (no such version, an altered one, nothing
    to roll back to). The message says what to do instead; nothing was changed."""


class ChampionSettings(Protocol):
    """What the rules read of the gateway's settings (composed by :mod:`settings`)."""

    @property
    def champion_min_outcomes(self) -> int: ...
    @property
    def champion_window(self) -> int: ...


@dataclass(frozen=True)
class ChampionRules:
    """How much evidence a change needs (``TVGW_CHAMPION_*``).

    ``min_outcomes``: resolved alerts both versions predicted before a challenger can be
    promoted, and resolved predictions of the champion before it is judged against the base
    rate (below it nothing is judged either way). ``window``: the newest resolved alerts each
    test reads (a rolling window: old evidence ages out, and the cost stays fixed)."""

    min_outcomes: int = 100
    window: int = 500

    @classmethod
    def from_settings(cls, settings: ChampionSettings) -> ChampionRules:
        return cls(min_outcomes=settings.champion_min_outcomes, window=settings.champion_window)


# --- enrolment ---------------------------------------------------------------------------------------
def register_version(
    db: Db, model_dir: str | Path, symbol: str, timeframe: str, version: str, metadata: dict[str, Any]
) -> None:
    """Put a saved version in the ``ml_models`` registry (the API and the dashboard list it),
    from its sealed metadata: synthetic or not, and its hold-out metrics."""
    strategy = metadata.get("strategy") or {}
    model_registry.record_model(
        db,
        symbol=symbol,
        timeframe=timeframe,
        version=version,
        path=str(Path(model_dir) / model_key(symbol, timeframe) / version),
        synthetic=bool(strategy.get("synthetic", True)),
        metrics=(metadata.get("model") or {}).get("holdout", {}),
    )


def enroll_latest(
    storage: Storage, model_dir: str | Path, symbol: str, timeframe: str, *, now: float | None = None
) -> list[ModelEvent]:
    """Give the store's newest version of a market its role, once: champion when the market has
    none, else challenger (replacing, and retiring, a challenger that had not won yet).

    Returns the events recorded (none when that version already has a role or the store has no
    model). Raises ``OSError`` when the store cannot be read and :class:`ModelIntegrityError`
    when the version was altered (it is not enrolled: ``/healthz`` names it)."""
    version = latest_version(model_dir, symbol, timeframe)
    if version is None or role_store.is_enrolled(storage, symbol, timeframe, version):
        return []
    metadata = version_metadata(model_dir, symbol, timeframe, version)
    clock = time.time() if now is None else now
    with storage.transaction() as conn:
        if role_store.is_enrolled(conn, symbol, timeframe, version):
            return []  # another worker enrolled it meanwhile
        register_version(conn, model_dir, symbol, timeframe, version, metadata)
        roles = role_store.get_roles(conn, symbol, timeframe)
        if roles is None:
            role_store.insert_champion(conn, symbol, timeframe, version, now=clock)
            return [
                _event(
                    conn,
                    roles_of=(symbol, timeframe),
                    kind="champion",
                    version=version,
                    now=clock,
                    reason="the market's first model: champion directly (there is nothing to compare "
                    "it with)",
                )
            ]
        role_store.set_challenger(conn, roles, version, now=clock)
        events = [
            _event(
                conn,
                roles_of=(symbol, timeframe),
                kind="challenger",
                version=version,
                previous=roles.champion,
                now=clock,
                reason=f"newer than champion {roles.champion}: serves in shadow beside it until a paired "
                "test on the same resolved alerts shows it better",
            )
        ]
        if roles.challenger is not None:
            model_registry.retire_model(conn, symbol, timeframe, roles.challenger)
            events.append(
                _event(
                    conn,
                    roles_of=(symbol, timeframe),
                    kind="retired",
                    version=roles.challenger,
                    previous=version,
                    now=clock,
                    reason=f"replaced as challenger by the newer {version} before it won",
                )
            )
        return events


def _event(
    conn: Db,
    *,
    roles_of: tuple[str, str],
    kind: str,
    version: str,
    reason: str,
    now: float,
    previous: str | None = None,
    actor: str = GATEWAY,
    evidence: dict[str, Any] | None = None,
) -> ModelEvent:
    symbol, timeframe = roles_of
    return role_store.add_event(
        conn, symbol=symbol, timeframe=timeframe, kind=kind, version=version, previous=previous, actor=actor,
        reason=reason, evidence=evidence, now=now,
    )  # fmt: skip


# --- the tests ---------------------------------------------------------------------------------------
def challenger_test(storage: Db, roles: MarketRoles, rules: ChampionRules) -> PairedComparison | None:
    """The challenger against the champion on the newest ``window`` resolved alerts both
    predicted (None without a challenger). Negative difference: the challenger is better."""
    if roles.challenger is None:
        return None
    pairs = role_store.paired_outcomes(
        storage, roles.symbol, roles.timeframe, roles.champion, roles.challenger, rules.window
    )
    return paired_comparison(
        [p.actual_direction for p in pairs],
        [p.champion_prob for p in pairs],
        [p.challenger_prob for p in pairs],
        block=PAIRED_BLOCK,
    )


@dataclass(frozen=True)
class BaseRateTest:
    """The champion against a constant forecast of the window's up-rate, on its newest resolved
    predictions. The constant knows the window's up-rate in hindsight, which only makes it harder
    to beat: sizing stays on only for a model that beats the best constant forecast."""

    version: str
    base_rate: float
    comparison: PairedComparison

    @property
    def judged(self) -> bool:
        return self.comparison.n > 0

    @property
    def better(self) -> bool:
        return self.comparison.candidate_better

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "base_rate": round(self.base_rate, 6), **self.comparison.to_dict()}


def base_rate_test(storage: Db, roles: MarketRoles, rules: ChampionRules) -> BaseRateTest:
    outcomes = role_store.version_outcomes(
        storage, roles.symbol, roles.timeframe, roles.champion, rules.window
    )
    labels = np.array([o.actual_direction for o in outcomes], dtype=float)
    rate = float(labels.mean()) if len(labels) else float("nan")
    comparison = paired_comparison(
        labels, np.full(len(labels), rate), [o.direction_prob for o in outcomes], block=PAIRED_BLOCK
    )
    return BaseRateTest(roles.champion, rate, comparison)


def _promotion_verdict(test: PairedComparison | None, rules: ChampionRules) -> str:
    if test is None:
        return "no challenger"
    if test.n < rules.min_outcomes:
        return f"waiting: {test.n} of {rules.min_outcomes} resolved alerts both versions predicted"
    if test.candidate_better:
        return "better beyond the interval: promoted at the next review"
    return "not better beyond the interval yet: stays challenger"


def _fallback_reason(test: BaseRateTest) -> str:
    c = test.comparison
    return (
        f"champion {test.version}'s rolling log loss {c.candidate_log_loss:.4f} is no better than the base "
        f"rate's {c.reference_log_loss:.4f} (up-rate {test.base_rate:.3f}) over its newest {c.n} resolved "
        f"predictions: difference {c.difference:+.4f}, 95% interval [{c.ci[0]:+.4f}, {c.ci[1]:+.4f}] does "
        "not lie below zero. ML-driven sizing is off (the strategy's fallback rule decides, annotate only "
        "for ML-sized entries) until a version earns it back"
    )


# --- the review --------------------------------------------------------------------------------------
def review(
    storage: Storage, rules: ChampionRules, *, model_dir: str | Path | None = None, now: float | None = None
) -> list[ModelEvent]:
    """Enroll the newest version of every market in ``model_dir`` (so a version trained while
    no alert comes is a challenger all the same), promote every challenger that won its paired
    test, and turn ML-driven sizing off or on by each champion's test against the base rate.
    Safe in every worker at once: each change is guarded by the revision it was judged on, so it
    happens (and is recorded) once."""
    events = [] if model_dir is None else _enroll_store(storage, model_dir)
    for roles in role_store.list_roles(storage):
        clock = time.time() if now is None else now
        test = challenger_test(storage, roles, rules)
        if test is not None and test.n >= rules.min_outcomes and test.candidate_better:
            events += _auto_promote(storage, roles, test, rules, clock)
            fresh = role_store.get_roles(storage, roles.symbol, roles.timeframe)
            if fresh is None:
                continue
            roles = fresh
        events += _judge_sizing(storage, roles, rules, clock)
    return events


def _enroll_store(storage: Storage, model_dir: str | Path) -> list[ModelEvent]:
    from ml_integration.store import stored_models

    events = []
    for entry in stored_models(model_dir):
        if entry.symbol is None or entry.timeframe is None or entry.error is not None:
            continue  # unreadable or altered: /healthz names it
        try:
            events += enroll_latest(storage, model_dir, entry.symbol, entry.timeframe)
        except (OSError, MLError) as exc:
            log.warning("model %s not enrolled: %s", entry.market, exc)
    return events


def _auto_promote(
    storage: Storage, roles: MarketRoles, test: PairedComparison, rules: ChampionRules, now: float
) -> list[ModelEvent]:
    assert roles.challenger is not None
    c = test
    reason = (
        f"challenger {roles.challenger} beat champion {roles.champion} on the same {c.n} resolved alerts: "
        f"log loss {c.candidate_log_loss:.4f} vs {c.reference_log_loss:.4f}, difference {c.difference:+.4f}, "
        f"95% interval [{c.ci[0]:+.4f}, {c.ci[1]:+.4f}] below zero (at least {rules.min_outcomes} needed)"
    )
    evidence = {**test.to_dict(), "min_outcomes": rules.min_outcomes, "window": rules.window}
    with storage.transaction() as conn:
        if not role_store.set_champion(conn, roles, roles.challenger, keep_challenger=False, now=now):
            return []  # another worker promoted it (or a human changed the roles) meanwhile
        model_registry.retire_model(conn, roles.symbol, roles.timeframe, roles.champion)
        return [
            _event(
                conn,
                roles_of=(roles.symbol, roles.timeframe),
                kind="promoted",
                version=roles.challenger,
                previous=roles.champion,
                reason=reason,
                evidence=evidence,
                now=now,
            )
        ]


def _judge_sizing(storage: Storage, roles: MarketRoles, rules: ChampionRules, now: float) -> list[ModelEvent]:
    """ML-driven sizing off when the champion is no better than the base rate, on again when it
    is; nothing is judged before ``min_outcomes`` resolved predictions. While sizing stays off,
    the reason is kept naming the champion now judged (after a promotion, the new one)."""
    test = base_rate_test(storage, roles, rules)
    if test.comparison.n < rules.min_outcomes:
        return []
    market = (roles.symbol, roles.timeframe)
    evidence = {**test.to_dict(), "min_outcomes": rules.min_outcomes, "window": rules.window}
    if test.better:
        if not roles.sizing_off:
            return []
        c = test.comparison
        reason = (
            f"champion {roles.champion}'s rolling log loss {c.candidate_log_loss:.4f} is below the base "
            f"rate's {c.reference_log_loss:.4f} beyond the interval ([{c.ci[0]:+.4f}, {c.ci[1]:+.4f}], "
            f"n={c.n}): ML-driven sizing is on again"
        )
        with storage.transaction() as conn:
            if not role_store.set_fallback(conn, roles, None, now=now):
                return []
            return [_event(conn, roles_of=market, kind="sizing_on", version=roles.champion, reason=reason,
                           evidence=evidence, now=now)]  # fmt: skip
    reason = _fallback_reason(test)
    if roles.sizing_off and (roles.fallback_reason or "").startswith(f"champion {roles.champion}'s "):
        return []  # off, and already saying why for this champion
    with storage.transaction() as conn:
        if not role_store.set_fallback(conn, roles, reason, now=now) or roles.sizing_off:
            return []  # a stale view, or only the reason brought up to date (no new event)
        return [_event(conn, roles_of=market, kind="sizing_off", version=roles.champion, reason=reason,
                       evidence=evidence, now=now)]  # fmt: skip


# --- a human's changes -------------------------------------------------------------------------------
def _intact(model_dir: str | Path, symbol: str, timeframe: str, version: str) -> dict[str, Any]:
    try:
        return version_metadata(model_dir, symbol, timeframe, version)
    except FileNotFoundError:
        known = list_versions(model_dir, symbol, timeframe)
        raise ChampionError(
            f"no saved version {version!r} of {symbol} {timeframe} in {model_dir}; saved versions: "
            f"{', '.join(known[-10:]) or 'none (train one first: tvgw train)'}"
        ) from None
    except ModelIntegrityError as exc:
        raise ChampionError(
            f"refused: version {version!r} of {symbol} {timeframe} was altered: {exc}"
        ) from None


def promote(
    storage: Storage,
    model_dir: str | Path,
    symbol: str,
    timeframe: str,
    version: str,
    *,
    actor: str,
    reason: str,
    rules: ChampionRules,
    now: float | None = None,
) -> ModelEvent:
    """Make ``version`` the champion at once (a human's decision: no test needed, the one that
    stands is recorded with it). The champion it replaces is retired; a challenger other than
    ``version`` keeps shadowing. Raises :class:`ChampionError` naming what is wrong."""
    if not reason.strip():
        raise ChampionError("a reason is required: say why, it is kept with the change")
    metadata = _intact(model_dir, symbol, timeframe, version)
    roles = role_store.get_roles(storage, symbol, timeframe)
    if roles is not None and roles.champion == version:
        raise ChampionError(f"{version} is already the champion of {symbol} {timeframe}")
    test = (
        challenger_test(storage, roles, rules) if roles is not None and roles.challenger == version else None
    )
    evidence = None if test is None else {**test.to_dict(), "verdict": _promotion_verdict(test, rules)}
    clock = time.time() if now is None else now
    return _crown(storage, model_dir, (symbol, timeframe), roles, version, metadata, kind="promote",
                  actor=actor, reason=reason, evidence=evidence, now=clock)  # fmt: skip


def rollback(
    storage: Storage,
    model_dir: str | Path,
    symbol: str,
    timeframe: str,
    *,
    actor: str,
    reason: str,
    now: float | None = None,
) -> ModelEvent:
    """Make the version that was champion before the current one champion again (the current
    one is retired; a challenger keeps shadowing). Rolling back twice undoes the rollback."""
    if not reason.strip():
        raise ChampionError("a reason is required: say why, it is kept with the change")
    roles = role_store.get_roles(storage, symbol, timeframe)
    if roles is None:
        raise ChampionError(f"{symbol} {timeframe} has no champion yet: nothing to roll back")
    made = next(
        (e for e in role_store.champion_history(storage, symbol, timeframe) if e.version == roles.champion),
        None,
    )
    target = None if made is None else made.previous
    if target is None:
        raise ChampionError(
            f"champion {roles.champion} of {symbol} {timeframe} was the market's first: there is no earlier "
            "champion to roll back to (promote a version by name: tvgw models promote VERSION)"
        )
    metadata = _intact(model_dir, symbol, timeframe, target)
    clock = time.time() if now is None else now
    return _crown(storage, model_dir, (symbol, timeframe), roles, target, metadata, kind="rollback",
                  actor=actor, reason=reason, now=clock)  # fmt: skip


def _crown(
    storage: Storage,
    model_dir: str | Path,
    market: tuple[str, str],
    roles: MarketRoles | None,
    version: str,
    metadata: dict[str, Any],
    *,
    kind: str,
    actor: str,
    reason: str,
    now: float,
    evidence: dict[str, Any] | None = None,
) -> ModelEvent:
    """A human's change of champion, in one transaction: ``version`` is champion (registered,
    out of retirement), the one it replaces retired, a challenger left shadowing, the change
    recorded. Refused when the roles changed since ``roles`` was read."""
    symbol, timeframe = market
    with storage.transaction() as conn:
        register_version(conn, model_dir, symbol, timeframe, version, metadata)
        if roles is None:
            crowned = role_store.insert_champion(conn, symbol, timeframe, version, now=now)
        else:
            crowned = role_store.set_champion(conn, roles, version, keep_challenger=True, now=now)
        if not crowned:
            raise ChampionError(f"the roles of {symbol} {timeframe} changed meanwhile: try again")
        if roles is not None:
            model_registry.retire_model(conn, symbol, timeframe, roles.champion)
        model_registry.unretire_model(conn, symbol, timeframe, version)
        previous = None if roles is None else roles.champion
        return _event(conn, roles_of=market, kind=kind, version=version, previous=previous, actor=actor,
                      reason=reason, evidence=evidence, now=now)  # fmt: skip


# --- what the API, the dashboard and the CLI show --------------------------------------------------
def event_view(event: ModelEvent) -> dict[str, Any]:
    return asdict(event)


def market_report(storage: Db, roles: MarketRoles, rules: ChampionRules) -> dict[str, Any]:
    """One market's roles and why: the event that made the champion, the challenger's paired
    test as it stands, the champion's test against the base rate, and the newest events."""
    history = role_store.list_events(storage, symbol=roles.symbol, timeframe=roles.timeframe, limit=20)
    made = next(
        (e for e in history if e.version == roles.champion and e.kind in role_store.CHAMPION_KINDS), None
    )
    test = challenger_test(storage, roles, rules)
    sizing = base_rate_test(storage, roles, rules)
    challenger = None
    if roles.challenger is not None and test is not None:
        challenger = {
            "version": roles.challenger,
            "since": roles.challenger_since,
            "test": test.to_dict(),
            "verdict": _promotion_verdict(test, rules),
        }
    return {
        "symbol": roles.symbol,
        "timeframe": roles.timeframe,
        "champion": {
            "version": roles.champion,
            "since": roles.champion_since,
            "why": None if made is None else event_view(made),
        },
        "challenger": challenger,
        "ml_sizing": {
            "on": not roles.sizing_off,
            "off_since": roles.fallback_since,
            "reason": roles.fallback_reason,
            "base_rate_test": sizing.to_dict() if sizing.judged else None,
        },
        "rules": {"min_outcomes": rules.min_outcomes, "window": rules.window, "block": PAIRED_BLOCK},
        "events": [event_view(e) for e in history],
    }


def version_roles(storage: Db, model_dir: str | Path) -> list[dict[str, Any]]:
    """Every version of every market, registered or only saved in the store, with its role:
    ``champion``, ``challenger``, ``retired`` (displaced, or retired by hand), or ``inactive``
    (saved but never given a role: older than the market's first champion, or not enrolled yet)."""
    from ml_integration.store import stored_models

    roles = {(r.symbol, r.timeframe): r for r in role_store.list_roles(storage)}
    known = {
        (r["symbol"], r["timeframe"], r["version"]): r
        for r in model_registry.list_models(storage, limit=100_000)
    }
    for entry in stored_models(model_dir):
        if entry.symbol is not None and entry.timeframe is not None:
            for version in list_versions(model_dir, entry.symbol, entry.timeframe):
                known.setdefault((entry.symbol, entry.timeframe, version), {
                    "symbol": entry.symbol, "timeframe": entry.timeframe, "version": version,
                    "created_at": None, "retired_at": None,
                })  # fmt: skip
    rows = []
    for (symbol, timeframe, version), row in sorted(known.items()):
        market = roles.get((symbol, timeframe))
        role = "inactive"
        if market is not None and version == market.champion:
            role = "champion"
        elif market is not None and version == market.challenger:
            role = "challenger"
        elif row["retired_at"] is not None:
            role = "retired"
        rows.append({"symbol": symbol, "timeframe": timeframe, "version": version, "role": role,
                     "created_at": row["created_at"], "retired_at": row["retired_at"]})  # fmt: skip
    return rows


def retire(
    storage: Storage,
    symbol: str,
    timeframe: str,
    version: str,
    *,
    actor: str,
    reason: str,
    now: float | None = None,
) -> ModelEvent:
    """Retire ``version`` by hand: kept on disk, never served again unless promoted by name. A
    challenger stops shadowing; the champion cannot be retired (promote another one first)."""
    roles = role_store.get_roles(storage, symbol, timeframe)
    if roles is not None and roles.champion == version:
        raise ChampionError(
            f"version {version!r} is the champion of {symbol} {timeframe}: activate another version first "
            "(tvgw models promote, or the API's activate), then retire this one"
        )
    clock = time.time() if now is None else now
    with storage.transaction() as conn:
        if (
            roles is not None
            and roles.challenger == version
            and not role_store.clear_challenger(conn, roles, now=clock)
        ):
            raise ChampionError(f"the roles of {symbol} {timeframe} changed meanwhile: try again")
        model_registry.retire_model(conn, symbol, timeframe, version)
        return _event(
            conn,
            roles_of=(symbol, timeframe),
            kind="retired",
            version=version,
            actor=actor,
            reason=reason,
            now=clock,
        )
