"""The Pine parse happens once per session (and, through pytest's cache directory, once per
pynescript version and script text across sessions), before any test takes a timestamp."""

from __future__ import annotations

from importlib import resources

import pytest

from pine.render import KINDS
from tests.pine import tradingview


def _bundled_sources() -> list[str]:
    return [(resources.files("pine") / name).read_text(encoding="utf-8") for name in KINDS.values()]


def pytest_configure(config: pytest.Config) -> None:
    cache = getattr(config, "cache", None)
    if cache is not None:
        tradingview.TREE_CACHE = cache.mkdir("pine-trees")


#: Test files that parse the bundled scripts in quick tests (slow while the cache is cold).
PARSING_FILES = ("test_scripts.py", "test_continuity_fields.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """While no parsed tree is cached (a fresh clone), the first Pine parse costs 40 s on an idle
    2-core machine and minutes on a busy one, so the Pine tests count as slow and the quick subset
    (``-m "not slow"``) leaves them out; the first whole-suite run fills the cache, and from then
    on they are quick and run in the subset too."""
    if all(tradingview.is_cached(source) for source in _bundled_sources()):
        return
    marker = pytest.mark.slow(reason="the Pine parse cache is cold (the first parse takes 40 s or more)")
    for item in items:
        if item.path.parent.name == "pine" and item.path.name in PARSING_FILES:
            item.add_marker(marker)


@pytest.fixture(scope="session")
def parsed_bundled_scripts() -> list[tradingview.PineScript]:
    """Every bundled script parsed up front: the slow first parse (ANTLR warm-up) is paid here,
    in setup, and never inside a test between taking ``timenow`` and posting the alert."""
    return [tradingview.parse_script(source) for source in _bundled_sources()]
