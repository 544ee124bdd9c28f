"""The layers point one way (DESIGN.md): webhook (HTTP) → ml_integration (signal) → engine
(``process_signal``) → storage. Read from the source, so a new import that breaks the rule fails
here rather than in a reviewer's head."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"webhook", "engine", "ml_integration", "storage", "tvgw", "pine", "common", "backtest", "wsgi"}

#: package -> the packages of ours it must never import (at module level or inside a function).
FORBIDDEN = {
    "engine": {"webhook", "tvgw", "ml_integration", "backtest"},
    "ml_integration": {"webhook", "engine", "tvgw", "backtest"},
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


def test_the_rule_sees_a_violation(tmp_path: Path) -> None:
    """The check itself can fail: an engine module that imports the webhook inside a function,
    and the command package at the top, is found."""
    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "bad.py").write_text(
        "import tvgw.config\n\ndef f():\n    from webhook.errors import ApiError\n    return ApiError\n"
    )
    assert imported_packages("engine", tmp_path) == {"engine/bad.py": {"tvgw", "webhook"}}
