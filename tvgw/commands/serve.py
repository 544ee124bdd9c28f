"""`tvgw serve`: run the gateway under gunicorn with the shipped gunicorn.conf.py."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import tvgw
from tvgw.commands import add_command

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


def run(args: argparse.Namespace) -> int:
    from tvgw.config import load_settings

    load_settings()  # fail here, with the variable named, rather than in every worker
    return exec_gunicorn(args.bind)
