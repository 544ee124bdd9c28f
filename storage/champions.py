"""Champion and challenger per market: which model version is acted on, which one is served in
shadow beside it, whether ML-driven sizing is off, and the record of every change.

Every change to a market's row is guarded by the ``revision`` its caller read (optimistic
concurrency): several gunicorn workers reviewing the same outcomes at once make one change, and
the one whose update matched records the event (in the same transaction).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from storage.database import Db, Row, insert_id, query, query_one, where, writing

__all__ = [
    "MarketRoles",
    "ModelEvent",
    "PairedOutcome",
    "ResolvedOutcome",
    "add_event",
    "champion_history",
    "clear_challenger",
    "get_roles",
    "insert_champion",
    "is_enrolled",
    "list_events",
    "list_roles",
    "paired_outcomes",
    "set_challenger",
    "set_champion",
    "set_fallback",
    "version_outcomes",
]


@dataclass(frozen=True, kw_only=True)
class MarketRoles:
    """One ``ml_champions`` row: the versions of a market and their roles now."""

    symbol: str
    timeframe: str
    champion: str
    champion_since: float
    challenger: str | None
    challenger_since: float | None
    fallback_since: float | None
    fallback_reason: str | None
    revision: int
    updated_at: float

    @property
    def market(self) -> str:
        return f"{self.symbol} {self.timeframe}"

    @property
    def sizing_off(self) -> bool:
        """ML-driven sizing is off (the champion is no better than the base rate)."""
        return self.fallback_since is not None


@dataclass(frozen=True, kw_only=True)
class ModelEvent:
    """One ``ml_model_events`` row: a change of role, who made it, why, and the evidence."""

    id: int
    symbol: str
    timeframe: str
    at: float
    kind: str
    version: str
    previous: str | None
    actor: str
    reason: str
    evidence: dict[str, Any] | None


@dataclass(frozen=True)
class PairedOutcome:
    """The champion's and the challenger's P(up) for one alert, and what the market did."""

    timestamp: float
    champion_prob: float
    challenger_prob: float
    actual_direction: int


@dataclass(frozen=True)
class ResolvedOutcome:
    """One resolved prediction of a version: its P(up) and what the market did."""

    timestamp: float
    direction_prob: float
    actual_direction: int


def _roles(row: Row) -> MarketRoles:
    return MarketRoles(
        symbol=row["symbol"],
        timeframe=row["timeframe"],
        champion=row["champion"],
        champion_since=float(row["champion_since"]),
        challenger=row["challenger"],
        challenger_since=row["challenger_since"],
        fallback_since=row["fallback_since"],
        fallback_reason=row["fallback_reason"],
        revision=int(row["revision"]),
        updated_at=float(row["updated_at"]),
    )


_ROLE_COLUMNS = (
    "symbol, timeframe, champion, champion_since, challenger, challenger_since, fallback_since,"
    " fallback_reason, revision, updated_at"
)


def get_roles(db: Db, symbol: str, timeframe: str) -> MarketRoles | None:
    """The market's roles (a primary-key read: what every alert asks, so every worker agrees)."""
    row = query_one(
        db,
        f"SELECT {_ROLE_COLUMNS} FROM ml_champions WHERE symbol = ? AND timeframe = ?",
        (symbol, timeframe),
    )
    return None if row is None else _roles(row)


def list_roles(db: Db) -> list[MarketRoles]:
    return [
        _roles(r) for r in query(db, f"SELECT {_ROLE_COLUMNS} FROM ml_champions ORDER BY symbol, timeframe")
    ]


def insert_champion(db: Db, symbol: str, timeframe: str, version: str, *, now: float) -> bool:
    """The market's first champion; False when the market already has one."""
    with writing(db) as conn:
        cur = conn.execute(
            "INSERT INTO ml_champions (symbol, timeframe, champion, champion_since, updated_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (symbol, timeframe) DO NOTHING",
            (symbol, timeframe, version, now, now),
        )
    return cur.rowcount == 1


def set_challenger(db: Db, roles: MarketRoles, version: str, *, now: float) -> bool:
    """``version`` is the challenger now (replacing any); False when ``roles`` is stale."""
    with writing(db) as conn:
        cur = conn.execute(
            "UPDATE ml_champions SET challenger = ?, challenger_since = ?, revision = revision + 1,"
            " updated_at = ? WHERE symbol = ? AND timeframe = ? AND revision = ?",
            (version, now, now, roles.symbol, roles.timeframe, roles.revision),
        )
    return cur.rowcount == 1


def clear_challenger(db: Db, roles: MarketRoles, *, now: float) -> bool:
    with writing(db) as conn:
        cur = conn.execute(
            "UPDATE ml_champions SET challenger = NULL, challenger_since = NULL, revision = revision + 1,"
            " updated_at = ? WHERE symbol = ? AND timeframe = ? AND revision = ?",
            (now, roles.symbol, roles.timeframe, roles.revision),
        )
    return cur.rowcount == 1


def set_champion(db: Db, roles: MarketRoles, version: str, *, keep_challenger: bool, now: float) -> bool:
    """``version`` is the champion now. The challenger slot is emptied unless ``keep_challenger``
    (and always when the challenger is the new champion). ML-driven sizing stays as it was: a
    new champion earns it back by its own record. False when ``roles`` is stale."""
    keep = keep_challenger and roles.challenger != version
    with writing(db) as conn:
        cur = conn.execute(
            "UPDATE ml_champions SET champion = ?, champion_since = ?, challenger = ?, challenger_since = ?,"
            " revision = revision + 1, updated_at = ?"
            " WHERE symbol = ? AND timeframe = ? AND revision = ?",
            (
                version,
                now,
                roles.challenger if keep else None,
                roles.challenger_since if keep else None,
                now,
                roles.symbol,
                roles.timeframe,
                roles.revision,
            ),
        )
    return cur.rowcount == 1


def set_fallback(db: Db, roles: MarketRoles, reason: str | None, *, now: float) -> bool:
    """Turn ML-driven sizing off (``reason``; a new reason while it is off keeps the time it went
    off) or back on (None); False when ``roles`` is stale."""
    where = (now, roles.symbol, roles.timeframe, roles.revision)
    with writing(db) as conn:
        if reason is None:
            cur = conn.execute(
                "UPDATE ml_champions SET fallback_since = NULL, fallback_reason = NULL,"
                " revision = revision + 1, updated_at = ? WHERE symbol = ? AND timeframe = ?"
                " AND revision = ?",
                where,
            )
        else:
            cur = conn.execute(
                "UPDATE ml_champions SET fallback_since = COALESCE(fallback_since, ?),"
                " fallback_reason = ?, revision = revision + 1, updated_at = ? WHERE symbol = ?"
                " AND timeframe = ? AND revision = ?",
                (now, reason, *where),
            )
    return cur.rowcount == 1


def add_event(
    db: Db,
    *,
    symbol: str,
    timeframe: str,
    kind: str,
    version: str,
    actor: str,
    reason: str,
    previous: str | None = None,
    evidence: dict[str, Any] | None = None,
    now: float | None = None,
) -> ModelEvent:
    """Record a change of role; returns it as recorded."""
    at = time.time() if now is None else now
    with writing(db) as conn:
        event_id = insert_id(
            conn,
            "INSERT INTO ml_model_events (symbol, timeframe, at, kind, version, previous, actor, reason,"
            " evidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                symbol, timeframe, at, kind, version, previous, actor, reason,
                None if evidence is None else json.dumps(evidence),
            ),
        )  # fmt: skip
    return ModelEvent(
        id=event_id, symbol=symbol, timeframe=timeframe, at=at, kind=kind, version=version,
        previous=previous, actor=actor, reason=reason, evidence=evidence,
    )  # fmt: skip


def _event(row: Row) -> ModelEvent:
    return ModelEvent(
        id=int(row["id"]),
        symbol=row["symbol"],
        timeframe=row["timeframe"],
        at=float(row["at"]),
        kind=row["kind"],
        version=row["version"],
        previous=row["previous"],
        actor=row["actor"],
        reason=row["reason"],
        evidence=None if row["evidence"] is None else json.loads(row["evidence"]),
    )


def is_enrolled(db: Db, symbol: str, timeframe: str, version: str) -> bool:
    """Whether ``version`` was ever given a role in this market (a version is enrolled once:
    a retired one is not made challenger again because the store still names it newest)."""
    row = query_one(
        db,
        "SELECT 1 FROM ml_model_events WHERE symbol = ? AND timeframe = ? AND version = ? LIMIT 1",
        (symbol, timeframe, version),
    )
    return row is not None


def list_events(
    db: Db,
    *,
    symbol: str | None = None,
    timeframe: str | None = None,
    after_id: int | None = None,
    since: float | None = None,
    limit: int = 50,
) -> list[ModelEvent]:
    """Events, newest first, filtered."""
    clause, params = where(
        ("symbol = ?", symbol), ("timeframe = ?", timeframe), ("id > ?", after_id), ("at >= ?", since)
    )
    sql = f"SELECT * FROM ml_model_events{clause} ORDER BY id DESC LIMIT ?"
    return [_event(r) for r in query(db, sql, [*params, limit])]


#: The kinds of event that make a version champion.
CHAMPION_KINDS = ("champion", "promoted", "promote", "rollback")


def champion_history(db: Db, symbol: str, timeframe: str, limit: int = 50) -> list[ModelEvent]:
    """The events that made a version champion, newest first."""
    rows = query(
        db,
        "SELECT * FROM ml_model_events WHERE symbol = ? AND timeframe = ?"
        f" AND kind IN ({', '.join('?' * len(CHAMPION_KINDS))}) ORDER BY id DESC LIMIT ?",
        (symbol, timeframe, *CHAMPION_KINDS, limit),
    )
    return [_event(r) for r in rows]


def paired_outcomes(
    db: Db, symbol: str, timeframe: str, champion: str, challenger: str, limit: int
) -> list[PairedOutcome]:
    """The newest ``limit`` alerts on which both versions predicted the same horizon (the
    champion acted on, the challenger in shadow) and whose outcome is known; oldest first."""
    rows = query(
        db,
        "SELECT s.timestamp AS timestamp, COALESCE(c.direction_prob, 0.5) AS champion_prob,"
        " COALESCE(s.direction_prob, 0.5) AS challenger_prob, c.actual_direction AS actual_direction"
        " FROM ml_predictions s JOIN ml_predictions c ON c.alert_id = s.alert_id"
        " WHERE s.symbol = ? AND s.timeframe = ? AND s.model_version = ? AND s.role = 'challenger'"
        " AND s.resolved_at IS NOT NULL AND c.symbol = s.symbol AND c.timeframe = s.timeframe"
        " AND c.model_version = ? AND c.role = 'champion' AND c.horizon = s.horizon"
        " AND c.resolved_at IS NOT NULL ORDER BY s.timestamp DESC LIMIT ?",
        (symbol, timeframe, challenger, champion, limit),
    )
    return [
        PairedOutcome(
            timestamp=float(r["timestamp"]),
            champion_prob=float(r["champion_prob"]),
            challenger_prob=float(r["challenger_prob"]),
            actual_direction=int(r["actual_direction"]),
        )
        for r in reversed(rows)
    ]


def version_outcomes(db: Db, symbol: str, timeframe: str, version: str, limit: int) -> list[ResolvedOutcome]:
    """The newest ``limit`` resolved predictions of ``version`` in this market (acted on or in
    shadow: both are that version's record), oldest first."""
    rows = query(
        db,
        "SELECT timestamp, COALESCE(direction_prob, 0.5) AS direction_prob, actual_direction"
        " FROM ml_predictions WHERE symbol = ? AND timeframe = ? AND model_version = ?"
        " AND resolved_at IS NOT NULL ORDER BY timestamp DESC LIMIT ?",
        (symbol, timeframe, version, limit),
    )
    return [
        ResolvedOutcome(
            timestamp=float(r["timestamp"]),
            direction_prob=float(r["direction_prob"]),
            actual_direction=int(r["actual_direction"]),
        )
        for r in reversed(rows)
    ]
