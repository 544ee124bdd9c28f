"""Installed like any Python tool: the wheel, in a fresh virtualenv, run from an empty directory.

One test, marked slow, as a new user meets the project: build the wheel from the checkout,
install it with the serve lock into a new venv (no extras: no TensorFlow, no ``arch``), run
``tvgw quickstart --offline`` from an empty directory with a home and a temporary folder of its
own, and then:

* the small model is served, the ``curl`` that quickstart printed answers 2xx (executed), and
  so does the README's first alert (the Pine strategy's message, with a price and a bar);
* the full model, trained in the background (here at ``--quick`` size, through the test-only
  ``TVGW_QUICKSTART_FULL_TRAIN_OPTIONS``), is swapped in without a restart;
* nothing is written outside that directory: the home and the temporary folder stay empty,
  the venv gains only Python's own byte-code caches, and the directory holds only the
  documented ``var/`` and ``models/``.

Cost: the wheel (about 10 s), the venv (pip installs the lock from its cache; the index is
asked only for what the cache lacks), the small model and the (quick-sized) full one. pip must reach a
package index or hold every pinned wheel in its cache; when it cannot, the test skips saying so.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import requests

from ml_integration.store import latest_version
from tests.conftest import ROOT, free_port, wait_until
from tvgw.commands.quickstart import FULL_TRAIN_OPTIONS_ENV

pytestmark = pytest.mark.slow

#: What the wheel is built from: the package metadata and the packages pyproject.toml lists.
_FIND = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
SOURCES = ("pyproject.toml", "README.md", *(pattern.rstrip("*") for pattern in _FIND["include"]))
#: The README's passphrase (its first alert is run exactly as written, only the port changed).
PASSPHRASE = "change-me"
#: The comment that marks the README's first-alert block.
FIRST_ALERT_MARK = "<!-- first-alert -->"


def _build_wheel(workdir: Path) -> Path:
    """The wheel, built from a copy of the sources (setuptools writes build/ and egg-info beside
    them: never into the checkout)."""
    src = workdir / "src"
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            src.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, src / name)
    dist = workdir / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(dist), str(src)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    (wheel,) = dist.glob("tvgw-*.whl")
    return wheel


def _fresh_venv(workdir: Path, wheel: Path) -> Path:
    """A new venv holding the serve lock and the wheel, nothing else (pip runs from this one:
    ``--python`` installs into the new venv, which then needs no pip of its own)."""
    venv = workdir / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
         "--no-compile", "--no-deps", "--disable-pip-version-check", "-r",
         str(ROOT / "requirements" / "serve.txt"), str(wheel)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if install.returncode != 0:
        if re.search(r"NewConnectionError|Could not find a version|No matching distribution", install.stderr):
            pytest.skip(f"pip cannot install the serve lock here (no package index, not in its cache): "
                        f"{install.stderr.strip().splitlines()[-1]}")  # fmt: skip
        raise AssertionError(f"pip install failed:\n{install.stderr}")
    return venv


def _files(folder: Path) -> set[str]:
    """Every file under ``folder`` but Python's byte-code caches (which Python itself writes
    beside the modules it imports, in any install)."""
    return {
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }


def readme_first_alert(port: int) -> str:
    """The README's first alert (the shell block after FIRST_ALERT_MARK), aimed at ``port``."""
    text = (ROOT / "README.md").read_text()
    after = text.split(FIRST_ALERT_MARK, 1)[1]
    block = re.search(r"```bash\n(.*?)```", after, re.DOTALL)
    assert block is not None, "the README's first-alert block is missing"
    return block.group(1).replace("localhost:8000", f"127.0.0.1:{port}")


def _served_model(url: str) -> str | None:
    try:
        models = requests.get(url + "/healthz", timeout=2).json()["model"]["worker"]["models"]
    except (requests.RequestException, ValueError, KeyError):
        return None
    version = models.get("BTC/USDT 1h")
    return version if version and version[:1].isdigit() else None


def test_the_wheel_serves_from_an_empty_directory_and_writes_nothing_outside_it(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if request.config.getoption("--store") == "postgresql":
        pytest.skip("runs once, in the main pass: quickstart keeps its own SQLite file, whatever the store")
    started = time.monotonic()
    venv = _fresh_venv(tmp_path, _build_wheel(tmp_path))
    installed_s = time.monotonic() - started
    work, home, temp = (tmp_path / name for name in ("work", "home", "tmp"))
    for folder in (work, home, temp):
        folder.mkdir()
    venv_before = _files(venv)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Nothing of this machine's environment: the user's PATH, a home, a temporary folder.
    # The full model at --quick size (the test-only TVGW_QUICKSTART_FULL_TRAIN_OPTIONS): what is
    # checked is that a second model trained in the background is swapped in, not its size.
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(temp),
           "TVGW_PASSPHRASE": PASSPHRASE, FULL_TRAIN_OPTIONS_ENV: "--quick"}  # fmt: skip
    log = tmp_path / "quickstart.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(venv / "bin" / "tvgw"), "quickstart", "--offline", "--bind", f"127.0.0.1:{port}"],
            cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def tail() -> str:
        return log.read_text(errors="replace")[-4000:]

    try:
        small = wait_until(lambda: _served_model(url), 600, "no model served", tail)
        served_s = time.monotonic() - started - installed_s
        text = log.read_text()
        assert "SYNTHETIC" in text and "100,000" in text  # the offline history says what it is
        curl = next(line.strip() for line in text.splitlines() if line.strip().startswith("curl -s http"))
        args = shlex.split(curl)
        body = json.loads(args[args.index("-d") + 1])
        assert body["passphrase"] == PASSPHRASE
        first = requests.post(url + "/webhook", data=json.dumps(body), timeout=30)
        assert first.status_code == 200 and first.json()["status"] == "executed", first.text
        assert first.json()["ml_analysis"]["model_version"] == small
        readme = subprocess.run(
            ["bash", "-c", readme_first_alert(port)], cwd=work, env=env, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        pine = json.loads(readme.stdout)
        assert pine["status"] == "executed", pine
        # The price it was checked against is the synthetic one, and the answer says so.
        assert "SYNTHETIC" in pine["decision"]["details"]["price"]["source"]
        assert "SYNTHETIC" in pine["ml_analysis"]["market"]

        models = work / "models"
        full = wait_until(
            lambda: (v := latest_version(models, "BTC/USDT", "1h")) != small and v, 900, "no full model", tail
        )

        def swapped() -> bool:
            # A worker looks for a newer version when an alert for the market arrives (its
            # decision may be a risk refusal by then: the model it consulted is what counts).
            again = {**body, "order_id": f"swap-{time.time_ns()}"}
            answer = requests.post(url + "/webhook", data=json.dumps(again), timeout=30).json()
            return bool(answer["ml_analysis"].get("model_version") == full)

        wait_until(swapped, 120, "the full model was not swapped in", tail)
        assert process.poll() is None  # the same gateway, never restarted
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the gateway and the background training
        process.wait(timeout=60)
    print(f"\nwheel + venv install {installed_s:.0f} s; quickstart to a served model {served_s:.0f} s")
    assert sorted(p.name for p in work.iterdir()) == ["models", "var"]
    assert list(home.iterdir()) == [], "written into the home folder"
    assert list(temp.iterdir()) == [], "left in the temporary folder"
    assert _files(venv) == venv_before, "written into the installed package"
