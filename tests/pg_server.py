"""A throwaway PostgreSQL server for the tests and benchmarks: Debian's binaries, ``initdb`` into a
directory of its own, listening on a loopback port and a socket in that directory.

Standard library only, so ``.ci/run`` can start it before the virtualenv exists::

    python3 tests/pg_server.py start DIR      # prints the URL (postgresql://tvgw@127.0.0.1:PORT/postgres)
    python3 tests/pg_server.py stop DIR

PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` user that Debian's
package creates (the directory is handed to it). ``durable=False`` (the tests) turns fsync off:
a test server that loses its data to a power cut loses nothing of value; the benchmarks keep it on.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
from pathlib import Path

__all__ = ["bindir", "start", "stop"]

USER = "tvgw"


def bindir() -> Path | None:
    """The newest installed PostgreSQL's binaries (``/usr/lib/postgresql/N/bin``), or None."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    ) if Path("/usr/lib/postgresql").is_dir() else []
    return found[-1].parent if found else None


def _as_server_user(argv: list[str]) -> list[str]:
    """``argv`` run as the ``postgres`` user when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return argv
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", *argv]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(root: Path, *, durable: bool = False, port: int | None = None) -> str:
    """initdb into ``root/data`` and start the server; returns its URL (trust auth, loopback).
    As root, ``root`` is handed to the server user: its parents must let that user through
    (``tempfile.mkdtemp()`` in /tmp does)."""
    binaries = bindir()
    if binaries is None:
        raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql (apt-get install postgresql)")
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        server = pwd.getpwnam("postgres")
        os.chown(root, server.pw_uid, server.pw_gid)
    data, sock = root / "data", root / "sock"
    port = port or _free_port()
    env = {**os.environ, "LC_ALL": "C"}
    subprocess.run(
        _as_server_user([str(binaries / "initdb"), "-D", str(data), "-U", USER, "--auth=trust",
                         "-E", "UTF8", "--no-locale", "--no-sync"]),
        check=True, env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    if not sock.exists():
        subprocess.run(_as_server_user(["mkdir", "-p", str(sock)]), check=True)
    options = [f"-p {port}", "-h 127.0.0.1", f"-k {sock}", "-c max_connections=300"]
    if not durable:
        options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
    subprocess.run(
        _as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"),
                         "-o", " ".join(options), "-w", "-t", "60", "start"]),
        check=True, env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return f"postgresql://{USER}@127.0.0.1:{port}/postgres"


def stop(root: Path) -> None:
    """Stop the server started in ``root`` (fast shutdown) and remove its files."""
    binaries = bindir()
    data = root / "data"
    if binaries is not None and (data / "postmaster.pid").exists():
        subprocess.run(
            _as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
            check=False, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    command, folder = sys.argv[1], Path(sys.argv[2])
    if command == "start":
        print(start(folder, durable="--durable" in sys.argv))
    elif command == "stop":
        stop(folder)
    else:
        raise SystemExit(f"usage: {sys.argv[0]} start|stop DIR [--durable]")
