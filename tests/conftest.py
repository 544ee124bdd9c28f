"""Shared fixtures: settings on a temporary store, the Flask app and client, and a real gunicorn
gateway. Exchange fixtures live in tests/fake_exchange.py (loaded as a plugin).

The store: a SQLite file in the test's ``tmp_path`` unless ``--store=postgresql`` (or
``TVGW_TEST_STORE=postgresql``), which runs the storage, engine and end-to-end tests on a fresh
PostgreSQL schema each (:func:`store_target`): the server at ``TVGW_TEST_POSTGRES_URL``, else one
started from Debian's binaries for the session (``tests/pg_server.py``), else a skip that says
why (a failure instead when ``TVGW_REQUIRE_POSTGRES=1``, as in ``.ci/run``)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from settings import Settings, load_settings
from tvgw.commands.serve import gunicorn_argv

T = TypeVar("T")

pytest_plugins = ["tests.fake_exchange"]

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data" / "ohlcv" / "binance"
PASSPHRASE = "test-secret"


def wait_until(
    condition: Callable[[], T | None], timeout: float, what: str, explain: Callable[[], str] = lambda: ""
) -> T:
    """Poll ``condition`` until it returns something truthy, and return that; fail naming
    ``what`` (and ``explain()``, a log tail say) after ``timeout`` seconds. Tests wait on a
    condition, never on a sleep long enough for this machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        # The poll interval. What is waited on here is done by another process (gunicorn, a
        # training runner, quickstart, a fake exchange's client), which a test cannot hand an event.
        time.sleep(0.05)
    raise AssertionError(f"{what} within {timeout:.0f} s\n{explain()}")


def db_rows(database: str | Path, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Rows of the gateway's store (``?`` placeholders), read through a connection of the test's
    own; by column name or position on both stores."""
    from storage.database import is_url

    if is_url(database):
        from storage import Storage
        from storage.database import query

        storage = Storage(database)
        try:
            return query(storage, sql, params)
        finally:
            storage.close()
    conn = sqlite3.connect(database)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def db_write(database: str | Path, *statements: str | tuple[str, tuple[Any, ...]]) -> None:
    """Run ``statements`` (SQL, or SQL with its parameters) in one transaction of the test's own
    on the gateway's store: a test setting up a state, or breaking one on purpose."""
    from storage import Storage

    storage = Storage(database)
    try:
        with storage.transaction() as conn:
            for statement in statements:
                sql, params = (statement, ()) if isinstance(statement, str) else statement
                conn.execute(sql, params)
    finally:
        storage.close()


# --- which store the tests run on ----------------------------------------------------------------

#: The test directories that run on the store ``--store`` selects (the rest always use SQLite).
STORE_DIRS = ("storage", "engine", "e2e")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store",
        choices=("sqlite", "postgresql"),
        default=os.environ.get("TVGW_TEST_STORE", "sqlite"),
        help=f"the store the tests under tests/{{{','.join(STORE_DIRS)}}} run on (default: sqlite)",
    )


class PostgresSchemas:
    """Fresh schemas on one PostgreSQL server: each is a store of its own (``search_path``).
    They are dropped when the session ends, not after each test: a test's in-process gateway
    leaves daemon threads (the exit watcher) that would log errors against a dropped schema."""

    def __init__(self, url: str):
        self.url = url
        self.created: list[str] = []
        self.databases: list[str] = []
        self.by_key: dict[tuple[str, str], str] = {}

    def new(self, label: str = "t") -> str:
        import uuid

        import psycopg

        name = re.sub(r"[^a-z0-9_]", "_", f"{label[:20].lower()}_{uuid.uuid4().hex[:10]}")
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        self.created.append(name)
        separator = "&" if "?" in self.url else "?"
        return f"{self.url}{separator}options=-csearch_path%3D{name}"

    def new_database(self) -> str:
        """A fresh database (its ``public`` schema the store): for what must see a whole database,
        a backup restored into another store with the same schema name."""
        import uuid

        import psycopg

        name = f"db_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        self.databases.append(name)
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(path=f"/{name}"))

    def drop_all(self) -> None:
        """Drop every schema and database made (not waiting on what a leftover process holds)."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '5s'")
            for name in self.created:
                with contextlib.suppress(psycopg.errors.LockNotAvailable):
                    conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
            for name in self.databases:
                with contextlib.suppress(psycopg.errors.OperationalError):
                    conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self.created.clear()
        self.databases.clear()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server's URL for the session, or a skip (a failure in CI) saying why not."""
    url = os.environ.get("TVGW_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    from tests import pg_server

    if pg_server.bindir() is None:
        reason = (
            "no PostgreSQL server: set TVGW_TEST_POSTGRES_URL, or apt-get install postgresql "
            "(the tests start one from its binaries)"
        )
        if os.environ.get("TVGW_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="tvgw-pg-"))
    try:
        yield pg_server.start(folder)
    finally:
        pg_server.stop(folder)


@pytest.fixture(scope="session")
def postgres_schemas(postgres_server: str) -> Iterator[PostgresSchemas]:
    schemas = PostgresSchemas(postgres_server)
    yield schemas
    schemas.drop_all()


#: The schemas of the running test when it runs on PostgreSQL (None: SQLite).
_SCHEMAS: PostgresSchemas | None = None


def store_target(tmp_path: Path, name: str = "tvgw.sqlite") -> str:
    """Where a test's store ``name`` lives: ``tmp_path / name`` (SQLite), or, when the test runs
    on PostgreSQL, a fresh schema (the same one for the same ``tmp_path`` and ``name``)."""
    if _SCHEMAS is None:
        return str(tmp_path / name)
    key = (str(tmp_path), name)
    if key not in _SCHEMAS.by_key:
        _SCHEMAS.by_key[key] = _SCHEMAS.new(Path(name).stem)
    return _SCHEMAS.by_key[key]


def fresh_store(tmp_path: Path, name: str) -> str:
    """A store of its own that a backup can be restored into: ``tmp_path / name`` on SQLite, a
    new database on PostgreSQL (backups name their schema; every database's is ``public``)."""
    return str(tmp_path / name) if _SCHEMAS is None else _SCHEMAS.new_database()


def runs_on_postgres() -> bool:
    """Whether this test's store is PostgreSQL (for the few checks that differ by store)."""
    return _SCHEMAS is not None


@pytest.fixture(autouse=True)
def _selected_store(request: pytest.FixtureRequest) -> Iterator[None]:
    """Point :func:`store_target` at PostgreSQL for the store-selected directories' tests."""
    global _SCHEMAS
    here = Path(str(request.node.path)).relative_to(ROOT / "tests").parts[0]
    if request.config.getoption("--store") != "postgresql" or here not in STORE_DIRS:
        yield
        return
    _SCHEMAS = request.getfixturevalue("postgres_schemas")
    try:
        yield
    finally:
        _SCHEMAS = None


@pytest.fixture
def postgres_url(postgres_schemas: PostgresSchemas) -> str:
    """A fresh PostgreSQL store (its own schema) for a test about PostgreSQL itself, whichever
    store ``--store`` selects."""
    return postgres_schemas.new()


def skip_on_postgres(why: str) -> None:
    """Skip a check that is about the SQLite file itself when this test runs on PostgreSQL."""
    if runs_on_postgres():
        pytest.skip(f"SQLite only: {why}")


def property_settings(max_examples: int) -> Any:
    """Hypothesis settings for the suite: no example database (it would write a .hypothesis
    folder into the working tree), no per-example deadline (this machine is shared and busy), and
    function-scoped fixtures allowed (an app or a database is reused across examples on purpose)."""
    from hypothesis import HealthCheck, settings

    return settings(
        max_examples=max_examples,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )


def base_environ(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A clean TVGW_* environment for one test (nothing leaks in from the developer's shell)."""
    env = {
        "TVGW_DATABASE": store_target(tmp_path),
        "TVGW_MODEL_DIR": str(tmp_path / "models"),
        "TVGW_PASSPHRASE": PASSPHRASE,
        "TVGW_ALLOWED_IPS": "any",
        "TVGW_ML_ENABLED": "false",
        "TVGW_LOG_LEVEL": "WARNING",
        # The order lifecycle and the reconciler call the exchange from background threads that
        # outlive the test's app: a test that wants them turns them on (tests/engine/
        # test_exchange_truth.py), so no other test's fake exchange hears from an earlier app.
        "TVGW_ORDER_POLL_INTERVAL_S": "0",
        "TVGW_RECONCILE_INTERVAL_S": "0",
    }
    env.update(extra)
    return env


#: The markets the tests trade in, at the prices their alerts carry: the gateway refuses an
#: alert whose price it cannot check against a market price of its own.
MARKET = {"BTC/USDT": 30000.0, "ETH/USDT": 1800.0, "SOL/USDT": 20.5}


def seed_market(
    database: str | Path,
    prices: Mapping[str, float] = MARKET,
    *,
    timeframe: str = "1h",
    at: float | None = None,
) -> None:
    """Give the candle store a current bar per symbol (open = high = low = close = price), as
    `tvgw data fetch` or an alert's bar would: the gateway's reference price for the tests."""
    from common.timeframes import seconds
    from storage import Storage
    from storage.candles import upsert_candles

    step = seconds(timeframe)
    opened_ms = int((at if at is not None else time.time()) // step * step * 1000)
    storage = Storage(database)
    storage.migrate()
    for symbol, price in prices.items():
        upsert_candles(storage, symbol, timeframe, [[opened_ms, price, price, price, price, 1.0]], "test")
    storage.close()


def make_settings(tmp_path: Path, overrides: Mapping[str, Any] | None = None, **env: str) -> Settings:
    return load_settings(overrides, environ=base_environ(tmp_path, **env))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


def market_app(settings: Settings, prices: Mapping[str, float] = MARKET, *, clock: Any = None) -> Any:
    """The Flask app on ``settings``, its candle store seeded with ``prices`` first (the bar of
    ``clock``'s hour when a test hands in the clock the app goes by, else the machine's)."""
    from webhook import create_app

    seed_market(settings.database, prices, at=None if clock is None else clock.now())
    return create_app(settings, clock=clock)


@pytest.fixture
def app(settings: Settings) -> Any:
    return market_app(settings)


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


def sample_alert(**fields: Any) -> dict[str, Any]:
    """A canonical alert as the bundled Pine script sends it, fired just now."""
    alert: dict[str, Any] = {
        "passphrase": PASSPHRASE,
        "ticker": "BTCUSDT",
        "exchange": "BINANCE",
        "interval": "60",
        "action": "buy",
        "contracts": 0.01,
        "price": 30000.0,
        "timenow": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "order_id": "Long",
    }
    alert.update(fields)
    return alert


def shared_candle_file(name: str) -> Path:
    """A real candle file from ../shared/data, or a skip that says why: a user's fresh clone has
    no ../shared, and those files are never copied into the project."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(
            f"real candles not available: {path} is absent (the shared folder sits beside the checkout)"
        )
    return path


class ManualClock:
    """Epoch seconds that move only when the test moves them (``clock.now += 60``): the clock a
    test passes where the code takes one (``now=`` of serving and sentiment, a drift monitor's
    clock), instead of reading the machine's or waiting for it."""

    def __init__(self, now: float = 1_717_416_000.0) -> None:  # 2024-06-03 12:00 UTC
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class EngineClock:
    """Epoch seconds that move only when the test moves them (``clock.t += 60``), in the shape
    the engine and the app take a clock (``now()``: ``create_app(settings, clock=...)``,
    ``TradingEngine(..., clock=...)``)."""

    t: float = 1_717_416_000.0  # 2024-06-03 12:00 UTC

    def now(self) -> float:
        return self.t

    def iso(self) -> str:
        """The moment as an alert's ``timenow`` spells it."""
        return datetime.fromtimestamp(self.t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def hour_ms(self) -> int:
        """When the current hour's bar opened, in ms."""
        return int(self.t // 3600 * 3600 * 1000)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections for as long as the block runs: this socket
    holds it, bound and never listening, so no other program on the machine can take the port
    and answer (a port merely bound and released may be reused by anything at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


@dataclass
class LiveGateway:
    """A real ``gunicorn wsgi:app`` process on a loopback port."""

    url: str
    database: str
    passphrase: str
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    log_path: Path

    def post(self, body: Any, **kwargs: Any) -> requests.Response:
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        return requests.post(self.url + "/webhook", data=data, timeout=10, **kwargs)

    def kill(self) -> None:
        """SIGKILL the master and its workers: nothing gets to clean up."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def exit_watcher_passes(self) -> dict[str, float]:
        """Each live worker's count of finished exit-watcher passes (``/metrics``), by pid."""
        from prometheus_client.parser import text_string_to_metric_families

        text = requests.get(self.url + "/metrics", timeout=10).text
        return {
            sample.labels["pid"]: sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "tvgw_exit_watcher_passes"
            for sample in family.samples
            if sample.labels.get("outcome") == "ok"
        }

    def await_exit_watcher_passes(self, more: int, workers: int = 2, timeout: float = 30) -> None:
        """Wait until every one of ``workers`` exit watchers has finished ``more`` passes after
        this call (the first of them may have begun before it): what a test waits on instead of
        a sleep "long enough for the watchers to run"."""

        def counted() -> dict[str, float] | None:
            passes = self.exit_watcher_passes()
            return passes if len(passes) >= workers else None

        start = wait_until(counted, timeout, f"{workers} exit watchers counted in /metrics", self.log)

        def done() -> bool:
            now = self.exit_watcher_passes()
            return all(now.get(pid, 0) >= start[pid] + more for pid in start)

        wait_until(done, timeout, f"{more} more passes of every exit watcher", self.log)


def start_gateway(
    tmp_path: Path,
    *,
    workers: int = 2,
    port: int | None = None,
    prices: Mapping[str, float] | None = MARKET,
    gunicorn_args: Sequence[str] = (),
    **env: str,
) -> LiveGateway:
    """Start gunicorn with the shipped config (bind overridden to a free loopback port, and
    ``gunicorn_args`` added to its command line), its candle store seeded with ``prices`` (None:
    left as it is)."""
    port = port or free_port()
    full_env = {**os.environ, **base_environ(tmp_path, **{"TVGW_LOG_LEVEL": "INFO", **env})}
    if prices is not None:
        seed_market(full_env["TVGW_DATABASE"], prices)
    full_env.pop("GUNICORN_CMD_ARGS", None)
    log_path = tmp_path / f"gunicorn-{port}.log"
    cmd = gunicorn_argv(bind=f"127.0.0.1:{port}", workers=workers)
    cmd[-1:-1] = gunicorn_args  # options before the app
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            cmd, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    gateway = LiveGateway(
        f"http://127.0.0.1:{port}", full_env["TVGW_DATABASE"], PASSPHRASE, process, full_env, log_path
    )
    deadline = time.monotonic() + 120  # generous: workers import pandas and load models
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{gateway.log()}")
        try:
            healthy = requests.get(gateway.url + "/healthz", timeout=1).status_code == 200
        except (requests.ConnectionError, requests.Timeout):
            healthy = False  # not up yet, or a loaded machine answered slowly: ask again
        # Every worker, not just the first, must be up: tests rely on N workers sharing the load.
        if healthy and gateway.log().count("gateway ready (pid") >= workers:
            return gateway
        time.sleep(0.1)  # gunicorn and its workers (other processes) are still starting
    gateway.stop()
    raise RuntimeError(f"gunicorn did not become healthy in 120 s:\n{gateway.log()}")


@pytest.fixture(autouse=True)
def _stop_background_loops() -> Iterator[None]:
    """After each test, the background loops (exit watcher, outcome resolver) of every app the
    test built stop: none outlives its test's database. Apps of wider-scoped fixtures keep theirs
    until the session ends (see :func:`_stop_every_background_loop`)."""
    webhook = sys.modules.get("webhook")
    before = set(webhook.background_loops()) if webhook is not None else set()
    yield
    webhook = sys.modules.get("webhook")
    if webhook is not None:
        for stop in set(webhook.background_loops()) - before:
            stop.set()


@pytest.fixture(autouse=True, scope="session")
def _stop_every_background_loop() -> Iterator[None]:
    yield
    webhook = sys.modules.get("webhook")
    if webhook is not None:
        webhook.stop_background()


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`tvgw` commands read their settings from the environment: a database and a model store in
    ``tmp_path``, and no config file or Dask scheduler of the machine's leaking in."""
    monkeypatch.setenv("TVGW_DATABASE", store_target(tmp_path))
    monkeypatch.setenv("TVGW_MODEL_DIR", str(tmp_path / "models"))
    for name in ("TVGW_CONFIG", "TVGW_DASK_SCHEDULER"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def candles() -> Any:
    """2,500 hourly synthetic candles without gaps (tests that need gaps add them)."""
    from ml_integration.synthetic import synthetic_candles

    return synthetic_candles(2500, seed=7, n_gaps=0)


@pytest.fixture(scope="session")
def trained(candles: Any) -> Any:
    """The suite's one trained model: a tiny strategy on synthetic candles, trained once per
    session and shared by every test that needs *a* model (read-only; tests that change a model
    save it into their own store first). Tests about training itself train their own."""
    from ml_integration.strategy import MLTradingStrategy
    from tests.ml_integration.conftest import TINY

    strategy = MLTradingStrategy(model_config=TINY)
    strategy.train_strategy(candles, synthetic=True, symbol="BTC/USDT", timeframe="1h")
    return strategy


@pytest.fixture(scope="session")
def model_store(trained: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sealed model store holding :func:`trained` as BTC/USDT 1h. Never write into it: copy
    it with :func:`copy_model_store`."""
    from ml_integration.store import save_version

    folder = tmp_path_factory.mktemp("model-store") / "models"
    save_version(trained, folder, "BTC/USDT", "1h", version="tiny")
    return folder


def copy_model_store(model_store: Path, destination: Path) -> Path:
    """A private copy of the shared store (artifacts, hashes and ``latest`` pointers)."""
    shutil.copytree(model_store, destination)
    return destination


@pytest.fixture
def live_gateway(tmp_path: Path) -> Iterator[LiveGateway]:
    gateway = start_gateway(tmp_path)
    yield gateway
    gateway.stop()


CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


def dashboard_login(client: Any, token: str) -> Any:
    """Log a Flask test client in to the dashboard the way a browser does: read the login form's
    CSRF token, then post it with the API token. Returns the login answer (303 when accepted)."""
    found = CSRF_FIELD.search(client.get("/").text)
    assert found, "the login page has no CSRF field"
    return client.post("/login", data={"token": token, "csrf": found.group(1)})
