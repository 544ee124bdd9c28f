"""`tvgw serve`: run the gateway under gunicorn with the shipped gunicorn.conf.py."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import tvgw
from tvgw.commands import add_command

if TYPE_CHECKING:
    from settings import Settings

#: The project checkout (wsgi.py and gunicorn.conf.py live at its top).
ROOT = Path(tvgw.__file__).resolve().parents[1]


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(sub, "serve")
    parser.add_argument(
        "--bind", default=None, help="address:port (default from gunicorn.conf.py, 127.0.0.1:8000)"
    )
    parser.set_defaults(func=run)


def gunicorn_argv(*, bind: str | None = None, workers: int | None = None, app: str = "wsgi:app") -> list[str]:
    """The command that serves ``app`` with the shipped gunicorn.conf.py (run it from ROOT)."""
    argv = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")]
    if bind:
        argv += ["-b", bind]
    if workers:
        argv += ["-w", str(workers)]
    return [*argv, app]


def exec_gunicorn(bind: str | None) -> int:
    """Replace this process with gunicorn serving wsgi:app (never returns on success)."""
    argv = gunicorn_argv(bind=bind)
    os.chdir(ROOT)
    os.execv(argv[0], argv)
    return 1  # pragma: no cover


def dashboard_hint(settings: Settings, bind: str | None) -> str:
    """Where the dashboard is and how to log in (printed by ``serve`` and ``quickstart``)."""
    address = bind or "127.0.0.1:8000"
    if not settings.api_token:
        return (
            f"dashboard: off. Set TVGW_API_TOKEN (a long random string) and restart; then open "
            f"http://{address}/ and log in with that token"
        )
    return (
        f"dashboard: http://{address}/ (log in with the value of TVGW_API_TOKEN); "
        f"API: http://{address}/api/openapi.json; metrics: http://{address}/metrics"
    )


def run(args: argparse.Namespace) -> int:
    from settings import load_settings

    settings = load_settings()  # fail here, with the variable named, rather than in every worker
    print(dashboard_hint(settings, args.bind), flush=True)
    return exec_gunicorn(args.bind)
