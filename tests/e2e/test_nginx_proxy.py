"""The shipped nginx configuration (deploy/nginx/) in front of a real gunicorn, on loopback.

nginx from the Debian package runs the very file users copy, with only the site-specific
values replaced (port, certificate paths, upstream, and the test client's address added to
the TradingView allowlist). Certificates are made at test time with the openssl CLI: a
self-signed server certificate, a client CA with a client certificate, and a client
certificate from another CA. The client posts from 127.0.0.2 while nginx and gunicorn sit on
127.0.0.1, so the address the gateway records shows whose address it believed.
"""

from __future__ import annotations

import http.client
import json
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, LiveGateway, db_rows, free_port, sample_alert, start_gateway

pytestmark = pytest.mark.slow

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
OPENSSL = shutil.which("openssl")
CLIENT_ADDRESS = "127.0.0.2"  # loopback, but not the proxy's address
SHIPPED = ROOT / "deploy" / "nginx" / "tvgw.conf"
SHIPPED_CLIENT_CERT = ROOT / "deploy" / "nginx" / "tvgw-client-cert.conf"

if NGINX is None or OPENSSL is None:
    pytest.skip(
        "nginx and openssl are needed (Debian: apt-get install nginx openssl; .ci/run installs them)",
        allow_module_level=True,
    )


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _self_signed(cwd: Path, name: str, subject: str, *extra: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", subject, *extra,
        cwd=cwd,
    )  # fmt: skip


def _signed_by(cwd: Path, name: str, ca: str) -> None:
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=cwd,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-set_serial", "2", "-out", f"{name}.pem", "-days", "2", cwd=cwd,
    )  # fmt: skip


def make_certificates(folder: Path) -> Path:
    """server (127.0.0.1), client-ca → client, wrong-ca → intruder."""
    folder.mkdir()
    _self_signed(folder, "server", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1")
    _self_signed(folder, "client-ca", "/CN=tvgw test client CA")
    _self_signed(folder, "wrong-ca", "/CN=some other CA")
    _signed_by(folder, "client", "client-ca")
    _signed_by(folder, "intruder", "wrong-ca")
    return folder


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, f"the shipped nginx config no longer contains {old!r}: update this test"
    return text.replace(old, new)


def render_site(folder: Path, *, port: int, upstream: int, certs: Path, verify_client: bool) -> Path:
    """The shipped site file with this machine's values; nothing else changed."""
    site = SHIPPED.read_text()
    site = _replace(site, "listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
    site = _replace(site, "listen [::]:443 ssl;\n", "")
    site = _replace(site, "server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream};")
    site = _replace(site, "/etc/letsencrypt/live/gw.example.com/fullchain.pem", str(certs / "server.pem"))
    site = _replace(site, "/etc/letsencrypt/live/gw.example.com/privkey.pem", str(certs / "server.key"))
    site = _replace(site, "shared:tvgw_tls:1m", "off")
    site = _replace(site, "        deny all;", f"        allow {CLIENT_ADDRESS};\n        deny all;")
    if verify_client:
        snippet = _replace(
            SHIPPED_CLIENT_CERT.read_text(),
            "/etc/nginx/tvgw/tradingview-webhook-ca.pem",
            str(certs / "client-ca.pem"),
        )
        (folder / "tvgw-client-cert.conf").write_text(snippet)
        site = _replace(
            site,
            "# include /etc/nginx/snippets/tvgw-client-cert.conf;",
            f"include {folder / 'tvgw-client-cert.conf'};",
        )
    path = folder / "tvgw.conf"
    path.write_text(site)
    return path


def main_config(folder: Path, site: Path) -> Path:
    """A minimal nginx.conf around the site: everything under ``folder``, in the foreground."""
    temp = {name: folder / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir()
    text = f"""
user root;
daemon off;
worker_processes 1;
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    include {site};
}}
"""
    path = folder / "nginx.conf"
    path.write_text(text)
    return path


@dataclass
class Proxy:
    port: int
    process: subprocess.Popen[bytes]
    folder: Path
    certs: Path
    gateway: LiveGateway

    def post(
        self, body: Any, *, cert: str | None = None, source: str = CLIENT_ADDRESS, headers: Any = None
    ) -> tuple[int, dict[str, Any]]:
        context = ssl.create_default_context(cafile=str(self.certs / "server.pem"))
        if cert is not None:
            context.load_cert_chain(str(self.certs / f"{cert}.pem"), str(self.certs / f"{cert}.key"))
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=context, source_address=(source, 0), timeout=20
        )
        try:
            conn.request(
                "POST", "/webhook", json.dumps(body), {"Content-Type": "text/plain", **(headers or {})}
            )
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, {"raw": raw.decode(errors="replace")}

    def log(self) -> str:
        path = self.folder / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


def start_proxy(tmp_path: Path, *, verify_client: bool, **gateway_env: str) -> Proxy:
    certs = make_certificates(tmp_path / "certs")
    gateway = start_gateway(
        tmp_path,
        workers=1,
        TVGW_TRUSTED_PROXIES="127.0.0.1",
        TVGW_ALLOWED_IPS=CLIENT_ADDRESS,
        TVGW_REQUIRE_CLIENT_CERT="true" if verify_client else "false",
        **gateway_env,
    )
    folder = tmp_path / "nginx"
    folder.mkdir()
    port = free_port()
    site = render_site(folder, port=port, upstream=int(gateway.url.rsplit(":", 1)[1]), certs=certs,
                       verify_client=verify_client)  # fmt: skip
    conf = main_config(folder, site)
    test = subprocess.run([NGINX, "-t", "-c", str(conf), "-e", str(folder / "error.log")],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert test.returncode == 0, f"nginx -t refused the shipped config:\n{test.stderr}"
    process = subprocess.Popen(
        [NGINX, "-c", str(conf), "-e", str(folder / "error.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    proxy = Proxy(port, process, folder, certs, gateway)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            gateway.stop()
            raise RuntimeError(f"nginx exited with {process.returncode}:\n{proxy.log()}")
        try:
            with ssl.create_connection(("127.0.0.1", port), timeout=1):
                return proxy
        except OSError:
            time.sleep(0.05)  # nginx (another process) is not listening yet
    stop_proxy(proxy)
    raise RuntimeError(f"nginx did not listen in 30 s:\n{proxy.log()}")


def stop_proxy(proxy: Proxy) -> None:
    if proxy.process.poll() is None:
        proxy.process.terminate()
        try:
            proxy.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proxy.process.kill()
    proxy.gateway.stop()


def recorded(gateway: LiveGateway, alert_id: int) -> Any:
    return db_rows(gateway.database, "SELECT * FROM alerts WHERE id = ?", (alert_id,))[0]


@pytest.fixture(scope="module")
def verifying_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    proxy = start_proxy(tmp_path_factory.mktemp("verify"), verify_client=True)
    yield proxy
    stop_proxy(proxy)


def test_alert_through_the_shipped_config_executes_and_records_the_client_address(tmp_path: Path) -> None:
    proxy = start_proxy(tmp_path, verify_client=False)
    try:
        # The sender also claims a TradingView address: the edge proxy overwrites that claim.
        status, body = proxy.post(sample_alert(), headers={"X-Forwarded-For": "52.89.214.238"})
        assert status == 200, (body, proxy.log(), proxy.gateway.log())
        assert body["status"] == "executed"
        assert recorded(proxy.gateway, body["alert_id"])["source_ip"] == CLIENT_ADDRESS
    finally:
        stop_proxy(proxy)


def test_client_certificate_from_the_configured_authority_executes(verifying_proxy: Proxy) -> None:
    status, body = verifying_proxy.post(sample_alert(order_id="good-cert"), cert="client")
    assert status == 200, (body, verifying_proxy.log())
    assert body["status"] == "executed"
    assert recorded(verifying_proxy.gateway, body["alert_id"])["source_ip"] == CLIENT_ADDRESS


def test_client_certificate_from_another_authority_is_refused_and_recorded(verifying_proxy: Proxy) -> None:
    status, body = verifying_proxy.post(sample_alert(order_id="wrong-ca"), cert="intruder")
    assert status == 403, body
    assert body["error"]["code"] == "client_certificate"
    assert "FAILED" in body["error"]["message"]
    row = recorded(verifying_proxy.gateway, body["alert_id"])
    assert (row["status"], row["http_status"], row["source_ip"]) == ("refused", 403, CLIENT_ADDRESS)


def test_no_client_certificate_is_refused(verifying_proxy: Proxy) -> None:
    status, body = verifying_proxy.post(sample_alert(order_id="no-cert"))
    assert status == 403, body
    assert body["error"]["code"] == "client_certificate"


def test_a_forged_verdict_header_is_not_believed(verifying_proxy: Proxy) -> None:
    """Through the proxy the header is overwritten; straight to gunicorn from an address that is
    not a trusted proxy it is ignored, so writing ``SUCCESS`` yourself gets you nowhere."""
    status, body = verifying_proxy.post(
        sample_alert(order_id="forged-via-proxy"), headers={"X-Client-Verify": "SUCCESS"}
    )
    assert status == 403 and body["error"]["code"] == "client_certificate", body
    direct = http.client.HTTPConnection(
        "127.0.0.1", int(verifying_proxy.gateway.url.rsplit(":", 1)[1]), source_address=(CLIENT_ADDRESS, 0),
        timeout=20,
    )  # fmt: skip
    try:
        direct.request(
            "POST",
            "/webhook",
            json.dumps(sample_alert(order_id="forged-direct")),
            {"X-Client-Verify": "SUCCESS"},
        )
        response = direct.getresponse()
        answer = json.loads(response.read())
    finally:
        direct.close()
    assert response.status == 403 and answer["error"]["code"] == "client_certificate", answer


def test_the_proxy_refuses_senders_outside_the_allowlist(verifying_proxy: Proxy) -> None:
    status, _ = verifying_proxy.post(sample_alert(order_id="stranger"), cert="client", source="127.0.0.3")
    assert status == 403
