"""Two gateway hosts on one PostgreSQL behind a real nginx; one is SIGKILLed mid-stream.

Each host is a gunicorn master with its own workers on its own port; nginx (Debian's) has both
as upstreams and passes a request that a dead host refused or dropped to the other (safe for
POSTs here: a repeat of an alert the dead host recorded is answered as a duplicate). Alerts go
to two accounts, the paper book and a live one on the fake Binance, from four senders; host a
is killed with SIGKILL part-way, while alerts are in flight on it. Then: every alert that got
a 2xx is in the store once, no order was placed twice on either account, and every answer,
those around the kill included, came within TradingView's 3 s. ``bench/bench_failover.py``
runs the same stream for figures.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import LiveGateway, db_rows, free_port, sample_alert, start_gateway, wait_until
from tests.e2e.test_nginx_proxy import NGINX, main_config
from tests.engine.test_accounts import SHADOW_AND_LIVE
from tests.fake_exchange import DEFAULT_API_KEY, DEFAULT_SECRET, FakeBinance

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

#: TradingView's limit for an answer.
ANSWER_LIMIT_S = 3.0


@dataclass
class Hosts:
    """Two gateway hosts and the nginx in front of them."""

    a: LiveGateway
    b: LiveGateway
    url: str
    nginx: subprocess.Popen[bytes]
    folder: Path

    def stop(self) -> None:
        if self.nginx.poll() is None:
            self.nginx.terminate()
            self.nginx.wait(timeout=15)
        for host in (self.a, self.b):
            host.stop()


def start_hosts(tmp_path: Path, database: str, exchange: FakeBinance) -> Hosts:
    config = tmp_path / "tvgw.toml"
    config.write_text(SHADOW_AND_LIVE.format(url=exchange.url))  # a live account and a paper book
    env = {
        "TVGW_DATABASE": database, "TVGW_CONFIG": str(config), "TVGW_EXCHANGE_TIMEOUT_MS": "2000",
        "TVGW_ACCOUNT_LIVE_API_KEY": DEFAULT_API_KEY, "TVGW_ACCOUNT_LIVE_SECRET": DEFAULT_SECRET,
        "TVGW_TRUSTED_PROXIES": "127.0.0.1", "TVGW_ALLOWED_IPS": "loopback", "TVGW_MAX_LAG_SECONDS": "3600",
    }  # fmt: skip
    hosts = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        prices = {"BTC/USDT": 30000.0} if name == "a" else None  # host b finds them in the store
        hosts.append(start_gateway(tmp_path / name, prices=prices, **env))
    folder = tmp_path / "nginx"
    folder.mkdir()
    port = free_port()
    upstreams = "\n".join(
        f"        server {h.url.removeprefix('http://')} max_fails=1 fail_timeout=30s;" for h in hosts
    )
    site = folder / "site.conf"
    site.write_text(f"""
upstream tvgw_hosts {{
{upstreams}
}}
server {{
    listen 127.0.0.1:{port};
    location / {{
        proxy_pass http://tvgw_hosts;
        proxy_next_upstream error timeout non_idempotent;
        proxy_connect_timeout 2s;
        proxy_read_timeout 10s;
        proxy_set_header X-Forwarded-For $remote_addr;
    }}
}}
""")
    conf = main_config(folder, site)
    nginx = subprocess.Popen(
        [str(NGINX), "-c", str(conf), "-e", str(folder / "error.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    proxy = Hosts(hosts[0], hosts[1], f"http://127.0.0.1:{port}", nginx, folder)

    def listening() -> bool:
        try:
            return requests.get(proxy.url + "/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_until(listening, 30, "nginx in front of both hosts", lambda: (folder / "error.log").read_text())
    except AssertionError:
        proxy.stop()
        raise
    return proxy


@dataclass
class Stream:
    """What the sender saw: per alert its number, HTTP status, answer and seconds taken."""

    sent: list[tuple[int, int, dict[str, Any], float]] = field(default_factory=list)
    killed_at: int | None = None  # alerts answered before the kill


def alert(n: int) -> dict[str, Any]:
    return sample_alert(id=f"failover-{n}", action="buy" if n % 2 == 0 else "sell", contracts=0.001)


def run_stream(hosts: Hosts, *, total: int, kill_after: int, senders: int = 4) -> Stream:
    """Send ``total`` alerts through nginx from ``senders`` threads (each one after another), and
    SIGKILL host a (master and workers) once ``kill_after`` were answered: the other senders'
    alerts are in flight on it then."""
    stream = Stream()
    lock, answered = threading.Lock(), threading.Event()
    numbers = iter(range(total))

    def send() -> None:
        session = requests.Session()
        while True:
            with lock:
                n = next(numbers, None)
            if n is None:
                return
            started = time.monotonic()
            try:
                response = session.post(hosts.url + "/webhook", data=json.dumps(alert(n)), timeout=30)
                status, body = response.status_code, response.json()
            except (requests.RequestException, ValueError) as exc:
                status, body = 0, {"error": str(exc)}
            with lock:
                stream.sent.append((n, status, body, time.monotonic() - started))
                if len(stream.sent) == kill_after:
                    stream.killed_at = kill_after
                    answered.set()

    threads = [threading.Thread(target=send) for _ in range(senders)]
    for t in threads:
        t.start()
    answered.wait(timeout=600)
    os.killpg(hosts.a.process.pid, signal.SIGKILL)
    hosts.a.process.wait(timeout=30)
    for t in threads:
        t.join(timeout=600)
    stream.sent.sort()
    return stream


@pytest.fixture
def hosts(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str, fake_exchange: FakeBinance
) -> Iterator[Hosts]:
    if request.config.getoption("--store") == "postgresql":
        pytest.skip("runs once, in the main pass: it is on PostgreSQL whichever store is selected")
    if NGINX is None:
        pytest.skip("nginx is needed (Debian: apt-get install nginx; .ci/run installs it)")
    started = start_hosts(tmp_path, postgres_url, fake_exchange)
    yield started
    started.stop()


def test_a_host_killed_mid_stream_loses_no_acknowledged_alert_and_places_no_order_twice(
    hosts: Hosts, postgres_url: str, fake_exchange: FakeBinance
) -> None:
    stream = run_stream(hosts, total=40, kill_after=15)
    assert hosts.a.process.poll() is not None and hosts.b.process.poll() is None

    acknowledged = [(n, body) for n, status, body, _ in stream.sent if 200 <= status < 300]
    assert len(acknowledged) == len(stream.sent), [s for s in stream.sent if not 200 <= s[1] < 300]
    slow = [(n, round(took, 2)) for n, _, _, took in stream.sent if took >= ANSWER_LIMIT_S]
    assert not slow, f"answers over {ANSWER_LIMIT_S} s: {slow}"

    keys = Counter(
        r["idempotency_key"]
        for r in db_rows(postgres_url, "SELECT idempotency_key FROM alerts WHERE duplicate_of IS NULL")
    )
    for n, body in acknowledged:
        assert keys[f"id:default:failover-{n}"] == 1, (n, body)  # in the store, once

    twice = db_rows(
        postgres_url,
        "SELECT alert_id, broker, COUNT(*) AS n FROM orders GROUP BY alert_id, broker HAVING COUNT(*) > 1",
    )
    assert not twice, [dict(r) for r in twice]
    live = [r["client_order_id"] for r in db_rows(postgres_url, "SELECT * FROM orders WHERE broker = 'live'")]
    assert live, "no order reached the fake exchange"
    placed = Counter(o["clientOrderId"] for o in fake_exchange.orders)
    assert all(count == 1 for count in placed.values()), placed  # the exchange saw each order once
    assert set(placed) <= set(live)  # and nothing the store does not know of
    assert all(b["status"] in {"executed", "duplicate"} for _, b in acknowledged), acknowledged
