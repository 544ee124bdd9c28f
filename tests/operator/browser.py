"""A headless Chromium driven over the Chrome DevTools Protocol (websocket-client), for the
dashboard test. Debian's ``chromium`` package; the test skips, saying why, when it is absent.

The flags keep Chromium off the network (no Google services, no component updates): the
machine running the tests may have no internet, and a test must not depend on it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
import websocket

from tests.conftest import free_port

__all__ = ["Browser", "find_chromium"]

FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
    "--disable-extensions", "--disable-dev-shm-usage", "--remote-allow-origins=*",
]  # fmt: skip


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One Chromium process with one page; collects console errors and uncaught exceptions."""

    def __init__(self, executable: str):
        self.profile = Path(tempfile.mkdtemp(prefix="tvgw-chromium-"))
        port = free_port()
        self.process = subprocess.Popen(
            [executable, *FLAGS, f"--remote-debugging-port={port}", f"--user-data-dir={self.profile}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.errors: list[str] = []
        self._id = 0
        page = self._first_page(f"http://127.0.0.1:{port}")
        self.ws = websocket.create_connection(page, timeout=30, suppress_origin=True)
        for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
            self.call(domain)

    def _first_page(self, base: str) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                pages = [
                    t for t in requests.get(base + "/json/list", timeout=2).json() if t["type"] == "page"
                ]
            except (requests.ConnectionError, ValueError):
                pages = []
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.process.returncode}")
            time.sleep(0.1)  # chromium (another process) has not opened its DevTools endpoint yet
        raise RuntimeError("chromium's DevTools endpoint did not come up in 30 s")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one CDP command and return its result, noting every event seen meanwhile."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            self._note(message)

    def _note(self, event: dict[str, Any]) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append(
                "console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            )
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append(
                "exception: " + str(details.get("exception", {}).get("description") or details)
            )
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"log: {entry.get('text')} {entry.get('url', '')}")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def wait_for(self, expression: str, timeout: float = 30, what: str = "") -> Any:
        """Poll a JavaScript expression until it is truthy (events keep being collected)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None  # the page is between documents
            if value:
                return value
            time.sleep(0.1)  # the page runs in chromium, another process: poll it
        raise AssertionError(
            f"timed out after {timeout} s waiting for {what or expression}; errors: {self.errors}"
        )

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            shutil.rmtree(self.profile, ignore_errors=True)
