"""How the project installs and what it says about itself: the lock files cover pyproject.toml,
the gunicorn settings live in the package (and the checkout's file is only their import), the
README is a front door whose commands run from a clone, and the manual's tables are the code's.

Fast checks on files; the install itself is tests/e2e/test_wheel_install.py (slow)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

LOCKS = {"serve": ROOT / "requirements" / "serve.txt", "dev": ROOT / "requirements" / "dev.txt"}
DOCS = ROOT / "docs"


def pins(lock: Path) -> dict[str, str]:
    """``name -> version`` of every ``name==version`` line of a pip-compile lock."""
    found = {}
    for line in lock.read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if "==" in requirement:
            name, version = requirement.split("==", 1)
            found[canonicalize_name(name)] = version.split(";", 1)[0].strip()
    return found


def wanted(*extras: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


@pytest.mark.parametrize(("lock", "extras"), [("serve", ()), ("dev", ("train", "models", "dev"))])
def test_each_lock_pins_what_pyproject_asks_within_its_range(lock: str, extras: tuple[str, ...]) -> None:
    pinned = pins(LOCKS[lock])
    problems = []
    for requirement in wanted(*extras):
        version = pinned.get(canonicalize_name(requirement.name))
        if version is None:
            problems.append(f"{requirement.name} is not pinned")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement.name}=={version} is outside {requirement.specifier}")
    assert not problems, f"requirements/{lock}.txt is stale ({'; '.join(problems)}): bash requirements/lock"


def test_the_locks_agree_and_pull_in_no_torch() -> None:
    serve, dev = pins(LOCKS["serve"]), pins(LOCKS["dev"])
    assert {name: dev.get(name) for name in serve} == serve  # one version of each package
    for lock in (serve, dev):
        assert not {name for name in lock if name == "torch" or name.startswith("nvidia-")}
    # The locks are portable text: no index, mirror or path of the machine that made them.
    for path in LOCKS.values():
        assert not re.search(r"^--|file://|/opt/|/work/", path.read_text(), re.MULTILINE)


def test_gunicorn_settings_are_the_packages_and_the_checkout_file_only_imports_them() -> None:
    from tvgw import gunicorn_conf
    from tvgw.commands.serve import gunicorn_argv

    assert gunicorn_conf.control_socket_disable is True  # nothing written to ~/.gunicorn
    assert callable(gunicorn_conf.worker_exit) and callable(gunicorn_conf.on_starting)
    checkout: dict[str, object] = {}
    exec(compile((ROOT / "gunicorn.conf.py").read_text(), "gunicorn.conf.py", "exec"), checkout)
    for name in gunicorn_conf.__all__:
        assert checkout[name] is getattr(gunicorn_conf, name), name
    argv = gunicorn_argv(bind="127.0.0.1:1")
    assert argv[argv.index("-c") + 1] == "python:tvgw.gunicorn_conf" and argv[-1] == "webhook:create_app()"


def test_serve_runs_gunicorn_where_it_was_started(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``tvgw serve`` execs gunicorn in the caller's directory: relative settings paths mean the
    same to the command, its workers and every other command run there."""
    from tvgw.commands import serve

    seen: list[tuple[str, list[str]]] = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(serve.os, "execv", lambda path, argv: seen.append((str(Path.cwd()), argv)))
    serve.exec_gunicorn("127.0.0.1:1")
    assert seen and seen[0][0] == str(tmp_path)


# --- the README and the manual ------------------------------------------------------------------


def test_the_readme_is_a_front_door() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.DOTALL)
    assert blocks[0].startswith("python3 -m venv .venv && .venv/bin/pip install -r requirements/serve.txt")
    tests = "python3 -m venv .venv && .venv/bin/pip install -q -r requirements/dev.txt"
    assert any(block.startswith(tests) for block in blocks)
    for link in re.findall(r"\]\(((?:docs/)?[\w./-]+\.md)(?:#[\w-]+)?\)", readme):
        assert (ROOT / link).is_file(), link


def runnable_commands(text: str) -> list[str]:
    """The lines of the shell blocks of a page."""
    blocks = re.findall(r"```bash\n(.*?)```", text, re.DOTALL)
    return [line for block in blocks for line in block.splitlines()]


@pytest.mark.parametrize("page", sorted([ROOT / "README.md", *DOCS.glob("*.md")]), ids=lambda p: p.name)
def test_commands_run_from_a_clone(page: Path) -> None:
    """Every shell line runs in a clone: no ../shared data (a user has none). The manual's pages
    may assume the virtualenv is active (its home page says so); the README, read first, names
    the venv's programs by their path."""
    text = page.read_text()
    assert "../shared" not in text
    if page.name == "README.md":
        for line in runnable_commands(text):
            assert not re.match(r"\s*(tvgw|pytest|mkdocs|ruff|mypy|pip|python) ", line), line


def test_the_readme_first_alert_is_the_manuals() -> None:
    mark = "<!-- first-alert -->"
    readme = (ROOT / "README.md").read_text().split(mark, 1)[1]
    block = re.search(r"```bash\n(.*?)```", readme, re.DOTALL)
    assert block is not None and block.group(1) in (DOCS / "getting-started.md").read_text()


def test_the_manuals_alert_table_is_the_schemas() -> None:
    table = subprocess.run(
        [sys.executable, "-m", "tvgw.cli", "schema", "--markdown"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert table in (DOCS / "alerts.md").read_text()


def test_every_page_is_in_the_navigation_or_waiting_for_it() -> None:
    """A page not in mkdocs.yml's nav is built anyway (validation.omitted_files: info); list the
    ones that are, so a page is never orphaned by a typo in the nav."""
    nav = (ROOT / "mkdocs.yml").read_text()
    listed = set(re.findall(r":\s*([\w-]+\.md)\s*$", nav, re.MULTILINE))
    assert listed <= {p.name for p in DOCS.glob("*.md")}
    assert "omitted_files: info" in nav and "strict: true" in nav
