"""The layers point one way (DESIGN.md): webhook (HTTP) → ml_integration (signal) → engine
(``process_signal``) → storage, with the composed settings (``settings``) below the packages that
read them and above the ones that declare their own, and the command package (``tvgw``) on top,
imported by nothing of ours. Read from the source, so a new import that breaks the rule (or closes
a cycle between packages) fails here rather than in a reviewer's head."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {
    "webhook", "engine", "ml_integration", "storage", "tvgw", "settings", "pine", "common", "backtest",
    "wsgi",
}  # fmt: skip
#: The packages (directories) among them; ``wsgi`` is a module.
PACKAGES = sorted(OURS - {"wsgi"})

#: package -> the packages of ours it must never import (at module level or inside a function).
FORBIDDEN = {
    "webhook": {"tvgw", "backtest", "wsgi"},
    "backtest": {"tvgw", "webhook", "wsgi"},
    "settings": {"tvgw", "webhook", "backtest", "pine", "wsgi"},
    "pine": OURS - {"pine", "engine", "common"},
    "engine": {"webhook", "tvgw", "settings", "ml_integration", "backtest", "pine", "wsgi"},
    "ml_integration": {"webhook", "engine", "tvgw", "settings", "backtest", "pine", "wsgi"},
    "storage": OURS - {"storage"},
    "common": OURS - {"common"},
}


def imported_packages(package: str, root: Path = ROOT) -> dict[str, set[str]]:
    """Every top-level package of ours each module of ``package`` imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((root / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(root))] = names & OURS
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers_point_one_way(package: str) -> None:
    wrong = {
        module: sorted(names & FORBIDDEN[package])
        for module, names in imported_packages(package).items()
        if names & FORBIDDEN[package]
    }
    assert not wrong, f"{package} must not import {sorted(FORBIDDEN[package])}: {wrong}"


def package_cycles(root: Path = ROOT) -> list[list[str]]:
    """Every cycle in the graph of which of our packages imports which (each cycle once, as the
    packages along it from its smallest name)."""
    graph = {
        package: set().union(*imported_packages(package, root).values()) - {package}
        for package in PACKAGES
        if (root / package).is_dir()
    }
    cycles: set[tuple[str, ...]] = set()

    def walk(path: list[str]) -> None:
        for nxt in sorted(graph.get(path[-1], ())):
            if nxt == path[0]:
                cycles.add(tuple(path))
            elif nxt not in path and nxt > path[0]:
                walk([*path, nxt])

    for start in sorted(graph):
        walk([start])
    return [list(cycle) for cycle in sorted(cycles)]


def test_packages_import_without_a_cycle() -> None:
    """The command package imports the web layer; so the web layer may not import the command
    package, nor anything that does (the configuration once lived in ``tvgw/config.py``)."""
    assert package_cycles() == []


def test_the_cycle_check_sees_a_cycle(tmp_path: Path) -> None:
    """The check itself can fail: the cycle the configuration used to make (``tvgw.commands``
    imports the webhook, whose auth imported ``tvgw.config``) is found, and so is a longer one."""
    for path, text in {
        "tvgw/commands/serve.py": "from webhook import create_app\n",
        "webhook/auth.py": "from tvgw.config import Settings\n",
        "backtest/run.py": "from engine import alert\n",
        "engine/alert.py": "def f():\n    import pine.render\n",
        "pine/render.py": "import backtest.run\n",
    }.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    assert package_cycles(tmp_path) == [["backtest", "engine", "pine"], ["tvgw", "webhook"]]


def test_the_rule_sees_a_violation(tmp_path: Path) -> None:
    """The check itself can fail: an engine module that imports the webhook inside a function,
    and the command package at the top, is found."""
    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "bad.py").write_text(
        "import tvgw.config\n\ndef f():\n    from webhook.errors import ApiError\n    return ApiError\n"
    )
    assert imported_packages("engine", tmp_path) == {"engine/bad.py": {"tvgw", "webhook"}}
