"""Chart feeds, the marks each message leaves on them, and the gaps found in them (schema
``_V12_ALERT_CONTINUITY``). The overdue-heartbeat check's single owner is a lease of
:mod:`storage.leases`, like every background job's.

A *feed* is what one chart sends for one (strategy, market, timeframe). Every heartbeat and
every order alert leaves a *mark* on its feed; a missing message is a *gap*, recorded once per
first missing sequence number (UNIQUE ``(feed_id, sequence_from)``): whichever worker finds it
first records it, and only that worker tells anyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storage.database import Db, Row, query, query_one, writing

__all__ = [
    "RECENT_MARKS",
    "Feed",
    "FeedGap",
    "FeedMark",
    "GapRow",
    "add_mark",
    "chart_marks",
    "close_gap",
    "feed",
    "feed_of",
    "feeds",
    "gap_rows",
    "gaps_for_alert",
    "insert_gap",
    "newest_heartbeat",
    "open_gap",
    "open_mismatches",
    "recent_marks",
]


#: The newest marks of each kind a feed keeps whatever their age (retention prunes older ones):
#: the continuity rules read at most this many (``engine.continuity.RECENT_MARKS``).
RECENT_MARKS = 20


@dataclass(frozen=True, kw_only=True)
class Feed:
    id: int
    strategy_id: str
    symbol: str
    timeframe: str
    bar_seconds: int
    created_at: float


@dataclass(frozen=True, kw_only=True)
class FeedMark:
    """One message seen on a feed: a heartbeat, or an order alert (``alert_id``)."""

    id: int
    feed_id: int
    kind: str  # heartbeat | order
    received_at: float
    alert_id: int | None = None
    sequence: int | None = None
    bar_time: float | None = None
    fired_at: float | None = None
    heartbeat_bars: int | None = None
    #: The strategy's signed position after the message, and before it (order alerts).
    position: float | None = None
    prev_position: float | None = None


@dataclass(frozen=True, kw_only=True)
class FeedGap:
    """Messages found missing on a feed (``missed`` of them, from ``sequence_from``)."""

    id: int
    feed_id: int
    kind: str  # heartbeat_missed | sequence_gap | position_gap
    detected_at: float
    missed: int = 1
    sequence_from: int | None = None
    sequence_to: int | None = None
    bar_time: float | None = None
    expected_by: float | None = None
    alert_id: int | None = None
    mark_id: int | None = None
    detail: str | None = None


@dataclass(frozen=True, kw_only=True)
class GapRow:
    """A gap with its feed and what became of it, for /healthz, the dashboard and the API."""

    gap: FeedGap
    feed: Feed
    #: ``alert_steps`` of alerts that answered it (``repaired``, ``arrived_late``), oldest first.
    settled_by: tuple[tuple[str, int, float], ...] = ()


def _feed(row: Row) -> Feed:
    return Feed(
        id=row["id"], strategy_id=row["strategy_id"], symbol=row["symbol"], timeframe=row["timeframe"],
        bar_seconds=row["bar_seconds"], created_at=row["created_at"],
    )  # fmt: skip


def _mark(row: Row) -> FeedMark:
    return FeedMark(
        id=row["id"], feed_id=row["feed_id"], kind=row["kind"], received_at=row["received_at"],
        alert_id=row["alert_id"], sequence=row["sequence"], bar_time=row["bar_time"],
        fired_at=row["fired_at"], heartbeat_bars=row["heartbeat_bars"], position=row["position"],
        prev_position=row["prev_position"],
    )  # fmt: skip


def _gap(row: Row) -> FeedGap:
    return FeedGap(
        id=row["id"], feed_id=row["feed_id"], kind=row["kind"], detected_at=row["detected_at"],
        missed=row["missed"], sequence_from=row["sequence_from"], sequence_to=row["sequence_to"],
        bar_time=row["bar_time"], expected_by=row["expected_by"], alert_id=row["alert_id"],
        mark_id=row["mark_id"], detail=row["detail"],
    )  # fmt: skip


_FEED_COLUMNS = "id, strategy_id, symbol, timeframe, bar_seconds, created_at"
_MARK_COLUMNS = (
    "id, feed_id, kind, alert_id, sequence, bar_time, fired_at, received_at, heartbeat_bars, position,"
    " prev_position"
)
_GAP_COLUMNS = (
    "id, feed_id, kind, sequence_from, sequence_to, bar_time, missed, expected_by, detected_at, alert_id,"
    " mark_id, detail"
)
#: A feed's heartbeats by number, highest first; one without a number after every numbered one
#: (SQLite sorts NULL last in DESC, PostgreSQL first: the first key says it for both).
_BY_NUMBER = "ORDER BY (sequence IS NULL), sequence DESC, id DESC"


def _qualified(columns: str, alias: str) -> str:
    """``columns`` of table ``alias`` in a join (``g.id, g.feed_id, ...``)."""
    return ", ".join(f"{alias}.{c.strip()}" for c in columns.split(","))


def feed_of(
    db: Db, *, strategy_id: str, symbol: str, timeframe: str, bar_seconds: int, now: float
) -> tuple[Feed, bool]:
    """The feed of (strategy, market, timeframe), created on its first message; and whether
    this call created it (its row then commits, or not, with the caller's transaction)."""
    with writing(db) as conn:
        cur = conn.execute(
            "INSERT INTO feeds (strategy_id, symbol, timeframe, bar_seconds, created_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (strategy_id, symbol, timeframe) DO NOTHING",
            (strategy_id, symbol, timeframe, bar_seconds, now),
        )
        row = conn.execute(
            f"SELECT {_FEED_COLUMNS} FROM feeds WHERE strategy_id = ? AND symbol = ? AND timeframe = ?",
            (strategy_id, symbol, timeframe),
        ).fetchone()
    return _feed(row), cur.rowcount == 1


def feed(db: Db, feed_id: int) -> Feed | None:
    row = query_one(db, f"SELECT {_FEED_COLUMNS} FROM feeds WHERE id = ?", (feed_id,))
    return None if row is None else _feed(row)


def feeds(db: Db) -> list[Feed]:
    return [_feed(r) for r in query(db, f"SELECT {_FEED_COLUMNS} FROM feeds ORDER BY id")]


def add_mark(db: Db, *, feed_id: int, kind: str, received_at: float, **fields: Any) -> FeedMark | None:
    """Record one message on its feed (inside the caller's transaction). A heartbeat whose
    sequence number the feed already has is a repeat: None, nothing written."""
    columns = ["feed_id", "kind", "received_at", *fields]
    values = [feed_id, kind, received_at, *fields.values()]
    with writing(db) as conn:
        rows = conn.execute(
            f"INSERT INTO feed_marks ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            " ON CONFLICT DO NOTHING RETURNING id",
            values,
        ).fetchall()
    if not rows:
        return None
    return FeedMark(id=int(rows[0]["id"]), feed_id=feed_id, kind=kind, received_at=received_at, **fields)


def recent_marks(db: Db, feed_id: int, *, limit: int = 50, kind: str | None = None) -> list[FeedMark]:
    """The feed's newest marks by arrival (``kind`` only, when given), newest first."""
    sql = f"SELECT {_MARK_COLUMNS} FROM feed_marks WHERE feed_id = ?"
    params: list[Any] = [feed_id]
    if kind is not None:
        sql += " AND kind = ?"
        params.append(kind)
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(limit)
    return [_mark(r) for r in query(db, sql, params)]


def chart_marks(db: Db, strategy_id: str, symbol: str, timeframe: str, *, limit: int = 20) -> list[FeedMark]:
    """The newest order alerts on file of one chart (its feed), newest first."""
    return [
        _mark(r)
        for r in query(
            db,
            f"SELECT {_MARK_COLUMNS} FROM feed_marks WHERE kind = 'order' AND feed_id IN"
            " (SELECT id FROM feeds WHERE strategy_id = ? AND symbol = ? AND timeframe = ?)"
            " ORDER BY id DESC LIMIT ?",
            (strategy_id, symbol, timeframe, limit),
        )
    ]


def newest_heartbeat(db: Db, feed_id: int) -> FeedMark | None:
    """The heartbeat with the highest sequence number (else the newest to arrive)."""
    row = query_one(
        db,
        f"SELECT {_MARK_COLUMNS} FROM feed_marks WHERE feed_id = ? AND kind = 'heartbeat' {_BY_NUMBER}"
        " LIMIT 1",
        (feed_id,),
    )
    return None if row is None else _mark(row)


def insert_gap(db: Db, *, feed_id: int, kind: str, detected_at: float, **fields: Any) -> FeedGap | None:
    """Record a gap once: None when this first missing number of the feed is already on file
    (another worker, or the clock, found it first)."""
    columns = ["feed_id", "kind", "detected_at", *fields]
    values = [feed_id, kind, detected_at, *fields.values()]
    with writing(db) as conn:
        rows = conn.execute(
            f"INSERT INTO feed_gaps ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            f" ON CONFLICT DO NOTHING RETURNING {_GAP_COLUMNS}",
            values,
        ).fetchall()
    return _gap(rows[0]) if rows else None


def open_gap(db: Db, feed_id: int, sequence_from: int) -> FeedGap | None:
    """The gap that starts at ``sequence_from`` on the feed, if one was recorded."""
    row = query_one(
        db,
        f"SELECT {_GAP_COLUMNS} FROM feed_gaps WHERE feed_id = ? AND sequence_from = ?",
        (feed_id, sequence_from),
    )
    return None if row is None else _gap(row)


def close_gap(db: Db, gap_id: int, *, sequence_to: int, missed: int) -> None:
    """An overdue heartbeat's gap, once the feed resumed: the last number missing and how many."""
    with writing(db) as conn:
        conn.execute(
            "UPDATE feed_gaps SET sequence_to = ?, missed = ? WHERE id = ? AND sequence_to IS NULL",
            (sequence_to, max(1, missed), gap_id),
        )


def gaps_for_alert(db: Db, alert_id: int) -> list[FeedGap]:
    """The gaps an alert's arrival revealed."""
    sql = f"SELECT {_GAP_COLUMNS} FROM feed_gaps WHERE alert_id = ? ORDER BY id"
    return [_gap(r) for r in query(db, sql, (alert_id,))]


def open_mismatches(db: Db, alert_id: int) -> list[FeedGap]:
    """Position mismatches told on the feed of alert ``alert_id`` that no alert repaired yet."""
    return [
        _gap(r)
        for r in query(
            db,
            f"SELECT {_GAP_COLUMNS} FROM feed_gaps g WHERE g.kind = 'position_mismatch'"
            " AND g.feed_id IN (SELECT feed_id FROM feed_marks WHERE alert_id = ?)"
            " AND NOT EXISTS (SELECT 1 FROM alert_steps s WHERE s.gap_id = g.id) ORDER BY g.id",
            (alert_id,),
        )
    ]


def gap_rows(db: Db, *, since: float, feed_id: int | None = None, limit: int = 200) -> list[GapRow]:
    """Gaps detected since ``since``, newest first, with their feed and the alert steps that
    settled them (a repair, or the missing alert arriving late)."""
    sql = (
        f"SELECT {_qualified(_GAP_COLUMNS, 'g')}, f.strategy_id, f.symbol, f.timeframe, f.bar_seconds,"
        " f.created_at AS feed_created"
        " FROM feed_gaps g JOIN feeds f ON f.id = g.feed_id WHERE g.detected_at >= ?"
    )
    params: list[Any] = [since]
    if feed_id is not None:
        sql += " AND g.feed_id = ?"
        params.append(feed_id)
    sql += " ORDER BY g.detected_at DESC, g.id DESC LIMIT ?"
    params.append(limit)
    rows = query(db, sql, params)
    settled: dict[int, list[tuple[str, int, float]]] = {}
    if rows:
        marks = ", ".join("?" * len(rows))
        for step in query(
            db,
            f"SELECT gap_id, step, alert_id, at FROM alert_steps WHERE gap_id IN ({marks}) ORDER BY at, id",
            [r["id"] for r in rows],
        ):
            settled.setdefault(step["gap_id"], []).append((step["step"], step["alert_id"], step["at"]))
    out = []
    for r in rows:
        owner = Feed(
            id=r["feed_id"], strategy_id=r["strategy_id"], symbol=r["symbol"], timeframe=r["timeframe"],
            bar_seconds=r["bar_seconds"], created_at=r["feed_created"],
        )  # fmt: skip
        out.append(GapRow(gap=_gap(r), feed=owner, settled_by=tuple(settled.get(r["id"], ()))))
    return out
