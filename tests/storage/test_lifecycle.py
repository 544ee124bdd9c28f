"""The store's lifecycle on the selected store: the one writer lock, leases, retention, backup and
restore, and the ``tvgw migrate``/``backup``/``restore`` commands."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from storage import SCHEMA_VERSION, Storage
from storage import alerts as alert_store
from storage import feeds as feed_store
from storage import orders as order_store
from storage import predictions as prediction_store
from storage.backup import BackupError, backup, inspect, restore
from storage.database import SchemaTooNewError, query, query_one
from storage.leases import claim_lease, lease_holder, release_lease, start_owned_job
from storage.retention import RetentionPolicy, prune
from storage.state import claim_notification
from tests.conftest import fresh_store, store_target, wait_until
from tvgw.cli import main

DAY = 86_400.0


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    store = Storage(store_target(tmp_path))
    store.migrate()
    return store


def add_alert(db: Storage, key: str, received_at: float) -> int:
    found = alert_store.claim_alert(
        db, idempotency_key=key, received_at=received_at, source_ip="127.0.0.1",
        payload={"ticker": "BTCUSDT", "key": key}, fields={"symbol": "BTC/USDT"}, status="executed",
        outcome={"http_status": 200, "reason": "filled", "decision": {"action": "buy"},
                 "ml_analysis": {"direction_probability": 0.6}},
    )  # fmt: skip
    assert found is not None
    return found


def test_read_then_write_is_serialised_across_stores_on_one_database(tmp_path: Path) -> None:
    """Two Storage objects (two hosts' pools) incrementing one counter by reading it first: the
    one writer lock makes every increment count (PostgreSQL's default isolation alone loses some)."""
    hosts = [Storage(store_target(tmp_path)) for _ in range(2)]
    hosts[0].migrate()
    hosts[0].conn.execute("INSERT INTO sentiment_cache (key, fetched_at, payload) VALUES ('n', 0, '0')")

    def bump(store: Storage) -> None:
        for _ in range(25):
            with store.transaction() as conn:
                seen = int(conn.execute("SELECT payload FROM sentiment_cache WHERE key = 'n'").fetchone()[0])
                conn.execute("UPDATE sentiment_cache SET payload = ? WHERE key = 'n'", (str(seen + 1),))

    threads = [threading.Thread(target=bump, args=(hosts[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert query_one(hosts[1], "SELECT payload FROM sentiment_cache WHERE key = 'n'")[0] == "100"


def test_one_key_claimed_once_by_two_hosts_at_once(tmp_path: Path) -> None:
    hosts = [Storage(store_target(tmp_path)) for _ in range(2)]
    hosts[0].migrate()
    barrier = threading.Barrier(8)
    won: list[int | None] = []

    def claim(store: Storage) -> None:
        barrier.wait()
        with store.transaction() as conn:
            claimed = alert_store.claim_alert(
                conn, idempotency_key="same", received_at=time.time(), source_ip=None, payload={},
                fields={}, status="executed",
            )  # fmt: skip
        won.append(claimed)

    threads = [threading.Thread(target=claim, args=(hosts[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(w is not None for w in won) == [False] * 7 + [True]
    assert query_one(hosts[0], "SELECT COUNT(*) FROM alerts")[0] == 1


def test_a_lease_has_one_holder_until_it_expires_or_is_released(storage: Storage) -> None:
    assert claim_lease(storage, "job", "host-a:1", 3600)
    assert not claim_lease(storage, "job", "host-b:2", 3600)  # held
    first = lease_holder(storage, "job")
    assert first is not None and first.owner == "host-a:1"
    assert claim_lease(storage, "job", "host-a:1", 3600)  # renewed by its holder, same term start
    renewed = lease_holder(storage, "job")
    assert renewed is not None and renewed.acquired_at == first.acquired_at
    assert renewed.expires_at >= first.expires_at
    assert not release_lease(storage, "job", "host-b:2")  # only the holder releases
    assert release_lease(storage, "job", "host-a:1")
    assert claim_lease(storage, "job", "host-b:2", 0)  # free: taken, for no time at all
    assert claim_lease(storage, "job", "host-a:1", 3600)  # expired: taken over
    holder = lease_holder(storage, "job")
    assert holder is not None and holder.owner == "host-a:1"


def test_prune_keeps_what_is_read_and_removes_the_rest(storage: Storage) -> None:
    now = time.time()
    old, recent = now - 400 * DAY, now - DAY
    for at, equity in ((old, 1500.0), (old + 1, 900.0), (old + 2, 950.0), (recent, 1000.0), (now, 1010.0)):
        order_store.record_equity(storage, "paper", equity, at=at)
    order_store.record_equity(storage, "other", 500.0, at=old)  # an idle account's only snapshot
    for i, (made, resolved) in enumerate(((old, True), (old, False), (recent, True))):
        pid = prediction_store.insert_prediction(
            storage, timestamp=made, symbol="BTC/USDT", timeframe="1h", horizon=1, target_time=made + 3600
        )
        if resolved:
            prediction_store.resolve_prediction(
                storage, pid, actual_direction=i % 2, actual_magnitude=0.01, prediction_accuracy=1.0
            )
    claim_notification(storage, "drift:old")
    storage.conn.execute("UPDATE notifications_sent SET sent_at = ?", (old,))
    claim_notification(storage, "drift:new")
    old_alert, new_alert = add_alert(storage, "old", old), add_alert(storage, "new", recent)

    done = prune(storage, RetentionPolicy(), batch=1)  # batches of one: the loop runs to the end

    assert (done.equity_snapshots, done.predictions, done.notifications, done.alert_bodies) == (2, 1, 1, 1)
    equity = sorted((r["broker"], r["equity"]) for r in query(storage, "SELECT * FROM equity_snapshots"))
    # paper keeps its peak ever (the drawdown limit reads it) and its recent rows; "other" its newest
    assert equity == [("other", 500.0), ("paper", 1000.0), ("paper", 1010.0), ("paper", 1500.0)]
    assert order_store.equity_marks(storage, "paper", 1005.0, now=now) == (1500.0, 1010.0)
    kept = query(storage, "SELECT timestamp, resolved_at FROM ml_predictions ORDER BY id")
    assert [(r["timestamp"] == old, r["resolved_at"] is None) for r in kept] == [(True, True), (False, False)]
    assert [r["key"] for r in query(storage, "SELECT key FROM notifications_sent")] == ["drift:new"]
    bodies = {r["id"]: r for r in query(storage, "SELECT id, payload, ml_analysis, decision FROM alerts")}
    assert (bodies[old_alert]["payload"], bodies[old_alert]["ml_analysis"]) == (None, None)
    assert bodies[old_alert]["decision"] is not None  # the record stays
    assert None not in (bodies[new_alert]["payload"], bodies[new_alert]["ml_analysis"])
    # the alert row itself stays: its key still refuses a replay
    assert alert_store.original_for_key(storage, "old") == old_alert
    assert prune(storage, RetentionPolicy()).total() == 0  # nothing left to prune
    assert prune(storage, RetentionPolicy(0, 0, 0, 0), now=now + 10_000 * DAY).total() == 0  # 0: forever


def test_prune_keeps_what_each_chart_feed_reads_and_removes_old_heartbeats(storage: Storage) -> None:
    """A heartbeat every bar is a steady stream of feed marks: old ones go, except each feed's
    newest RECENT_MARKS of each kind, its highest-numbered heartbeat and any mark a gap names."""
    now = time.time()
    old = now - 60 * DAY

    def feed(name: str) -> int:
        made, _ = feed_store.feed_of(storage, strategy_id=name, symbol="BTC/USDT", timeframe="1m",
                                     bar_seconds=60, now=old)  # fmt: skip
        return made.id

    def marks(feed_id: int, kind: str, numbers: range | list[int], at: float) -> list[int]:
        made = [feed_store.add_mark(storage, feed_id=feed_id, kind=kind, received_at=at, sequence=n)
                for n in numbers]  # fmt: skip
        return [m.id for m in made if m is not None]

    a, b, c = feed("a"), feed("b"), feed("c")
    beats = marks(a, "heartbeat", range(1, 31), old) + marks(a, "heartbeat", range(31, 34), now)
    orders = marks(a, "order", range(1, 26), old)
    named = feed_store.insert_gap(
        storage, feed_id=a, kind="position_mismatch", detected_at=old, mark_id=beats[2]
    )
    assert named is not None
    (lonely,) = marks(b, "heartbeat", [7], old)
    # Renumbered (an alert re-created at 1): the highest number is what the next is expected after.
    highest = marks(c, "heartbeat", [1000], old) + marks(c, "heartbeat", range(1, 26), old)

    done = prune(storage, RetentionPolicy(), batch=7)  # batches of 7: the loop runs to the end

    kept = {r["id"] for r in query(storage, "SELECT id FROM feed_marks")}
    assert kept == {*beats[13:], beats[2], *orders[5:], lonely, highest[0], *highest[6:]}
    assert done.feed_marks == 12 + 5 + 5 and done.total() == done.feed_marks
    assert feed_store.newest_heartbeat(storage, a).sequence == 33  # type: ignore[union-attr]
    assert feed_store.newest_heartbeat(storage, c).sequence == 1000  # type: ignore[union-attr]
    assert prune(storage, RetentionPolicy()).total() == 0
    assert prune(storage, RetentionPolicy(feed_marks_days=0), now=now + 10_000 * DAY).total() == 0


def test_backup_taken_while_writing_restores_a_consistent_store(tmp_path: Path) -> None:
    storage = Storage(fresh_store(tmp_path, "source.sqlite"))
    storage.migrate()
    stop, ten_written = threading.Event(), threading.Event()
    written: list[int] = []

    def write() -> None:
        n = 0
        while not stop.is_set() or n < 20:
            written.append(add_alert(storage, f"k{n}", time.time()))
            n += 1
            if n == 10:
                ten_written.set()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert ten_written.wait(60), "the writer never wrote 10 alerts"  # writes before and during the backup
        info = backup(storage, tmp_path / "backup.bin")
    finally:
        stop.set()
        writer.join()
    assert 10 <= info.alerts <= len(written) and info.schema_version == SCHEMA_VERSION
    with pytest.raises(BackupError, match="exists"):
        backup(storage, tmp_path / "backup.bin")

    target = Storage(fresh_store(tmp_path, "restored.sqlite"))
    restore(target, info.path)
    assert target.migrate() == SCHEMA_VERSION
    ids = [int(r[0]) for r in query(target, "SELECT id FROM alerts ORDER BY id")]
    assert ids == written[: info.alerts]  # a snapshot: every alert before some point, none after
    assert alert_store.original_for_key(target, "k0") == written[0]
    assert add_alert(target, "after-restore", time.time()) > written[info.alerts - 1]  # ids go on

    with pytest.raises(BackupError, match="already holds a tvgw store"):
        restore(target, info.path)
    restore(target, info.path, force=True)
    assert query_one(target, "SELECT COUNT(*) FROM alerts")[0] == info.alerts


def test_restore_refuses_a_backup_from_a_newer_tvgw(tmp_path: Path) -> None:
    storage = Storage(fresh_store(tmp_path, "source.sqlite"))
    storage.migrate()
    add_alert(storage, "k", time.time())
    with storage.transaction() as conn:
        storage._set_schema_version(conn, SCHEMA_VERSION + 1)
    made = backup(storage, tmp_path / "newer.bin")
    assert inspect(made.path).schema_version == SCHEMA_VERSION + 1
    target = Storage(fresh_store(tmp_path, "target.sqlite"))
    with pytest.raises(SchemaTooNewError, match="newer tvgw"):
        restore(target, made.path)
    assert target.schema_version() == 0  # untouched


def test_migrate_command_lists_then_applies_and_refuses_a_newer_store(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert f"schema version 0, this tvgw has {SCHEMA_VERSION}" in listed
    assert "pending 1: CREATE TABLE alerts" in listed and f"pending {SCHEMA_VERSION}: " in listed
    assert main(["migrate"]) == 0
    assert f"migrated to version {SCHEMA_VERSION}" in capsys.readouterr().out
    assert main(["migrate"]) == 0
    assert "nothing to migrate" in capsys.readouterr().out

    store = Storage(store_target(cli_env))
    with store.transaction() as conn:
        store._set_schema_version(conn, SCHEMA_VERSION + 1)
    assert main(["migrate"]) == 2
    assert "newer than this tvgw" in capsys.readouterr().err


def test_an_owned_job_runs_in_one_worker_and_moves_when_its_owner_stops(storage: Storage) -> None:
    runs: list[str] = []
    stops = {owner: threading.Event() for owner in ("host-a:1", "host-b:2")}
    try:
        for owner, stop in stops.items():
            # A term of 2 s: long beside the 0.1 s period, so a busy machine's stalls keep the owner.
            start_owned_job(
                storage, "job", 0.1, lambda o=owner: runs.append(o), owner=owner, stop=stop, ttl_s=2.0
            )
        wait_until(lambda: len(runs) >= 6, 60, "six runs of the job")
        first = runs[0]
        assert set(runs) == {first}  # one owner, however many workers run the loop
        stops[first].set()  # the owner goes away (a dead host stops renewing the same way)
        wait_until(lambda: runs[-1] != first, 60, "the other worker taking the job over")
    finally:
        for stop in stops.values():
            stop.set()


def test_start_up_recovery_leaves_a_shared_stores_alerts_in_flight_alone(tmp_path: Path) -> None:
    """An alert left ``processing`` is an orphan to a store of its own; on a store other hosts
    share, only once untouched for IN_FLIGHT_S (a younger one may be another host's, in flight)."""
    from tests.conftest import make_settings, runs_on_postgres
    from webhook.recovery import IN_FLIGHT_S, recover

    settings = make_settings(tmp_path)
    storage = Storage(settings.database)
    storage.migrate()
    fresh = add_alert(storage, "fresh", time.time())
    old = add_alert(storage, "old", time.time())
    storage.conn.execute("UPDATE alerts SET status = 'processing'")
    long_ago = time.time() - IN_FLIGHT_S - 60
    storage.conn.execute("UPDATE alerts SET updated_at = ? WHERE id = ?", (long_ago, old))
    lines = recover(settings)
    status = {r["id"]: r["status"] for r in query(storage, "SELECT id, status FROM alerts")}
    assert status[old] == "failed" and f"alert {old}: failed" in " ".join(lines)
    assert status[fresh] == ("processing" if runs_on_postgres() else "failed")
