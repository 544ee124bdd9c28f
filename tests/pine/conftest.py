"""The Pine parse happens once per session (and, through pytest's cache directory, once per
pynescript version and script text across sessions), before any test takes a timestamp."""

from __future__ import annotations

from importlib import resources

import pytest

from pine.render import KINDS
from tests.pine import tradingview


@pytest.fixture(scope="session", autouse=True)
def parsed_bundled_scripts(request: pytest.FixtureRequest) -> dict[str, tradingview.PineScript]:
    """Every bundled script parsed up front: the slow first parse (ANTLR warm-up) is paid here,
    in setup, and never inside a test between taking ``timenow`` and posting the alert."""
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        tradingview.TREE_CACHE = cache.mkdir("pine-trees")
    return {
        kind: tradingview.parse_script((resources.files("pine") / name).read_text(encoding="utf-8"))
        for kind, name in KINDS.items()
    }
