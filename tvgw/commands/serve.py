"""`tvgw serve`: run the gateway under gunicorn with the package's settings (:mod:`tvgw.gunicorn_conf`).

gunicorn runs in the directory the command was started in, so the relative paths of the
settings (``TVGW_DATABASE``, default ``var/tvgw.sqlite``; ``TVGW_MODEL_DIR``, default ``models``)
mean the same thing to this command, to every worker and to the other ``tvgw`` commands run
there. Nothing is looked up next to the installed package.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from tvgw.commands import add_command

if TYPE_CHECKING:
    from settings import Settings

#: gunicorn's settings module inside the package (the checkout's gunicorn.conf.py imports it).
GUNICORN_CONFIG = "python:tvgw.gunicorn_conf"
#: The WSGI application: the app factory, called once in each worker (no top-level module needed).
APP = "webhook:create_app()"


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(sub, "serve")
    parser.add_argument(
        "--bind", default=None, help="address:port (default 127.0.0.1:8000, from tvgw.gunicorn_conf)"
    )
    parser.set_defaults(func=run)


def gunicorn_argv(*, bind: str | None = None, workers: int | None = None, app: str = APP) -> list[str]:
    """The command that serves ``app`` with the package's gunicorn settings, from any directory."""
    argv = [sys.executable, "-m", "gunicorn", "-c", GUNICORN_CONFIG]
    if bind:
        argv += ["-b", bind]
    if workers:
        argv += ["-w", str(workers)]
    return [*argv, app]


def exec_gunicorn(bind: str | None) -> int:
    """Replace this process with gunicorn serving the gateway, in the current directory (never
    returns on success)."""
    argv = gunicorn_argv(bind=bind)
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
