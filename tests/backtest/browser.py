"""Open a page in headless Chromium (Debian's ``chromium`` package) and return the DOM after
its scripts ran, with every console message and uncaught error it printed.

Minimal on purpose: ``--dump-dom`` with a virtual-time budget runs the page's JavaScript to
completion, and ``--enable-logging=stderr`` prints each console message as a ``CONSOLE`` line.
The flags keep Chromium off the network (no Google services, no updates): the report must open
offline, and a test must not depend on a connection.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PageRun", "find_chromium", "render"]

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--enable-logging=stderr",
    "--v=0",
)

_CONSOLE = re.compile(r"CONSOLE[^\]]*\]\s*(.*)")


@dataclass(frozen=True)
class PageRun:
    dom: str
    console: list[str]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def render(executable: str, page: Path, *, budget_ms: int = 20_000, timeout_s: float = 180) -> PageRun:
    """The DOM of ``page`` after ``budget_ms`` of virtual time, and its console lines."""
    with tempfile.TemporaryDirectory(prefix="tvgw-chromium-") as profile:
        done = subprocess.run(
            [
                executable,
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--virtual-time-budget={budget_ms}",
                "--dump-dom",
                page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited with {done.returncode}: {done.stderr[-2000:]}")
    console = [m.group(1) for line in done.stderr.splitlines() if (m := _CONSOLE.search(line))]
    return PageRun(dom=done.stdout, console=console)
