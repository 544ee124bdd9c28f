"""The model store: ``<model_dir>/<SYMBOL>_<TF>/<version>/`` directories and a ``latest`` file.

A version directory is written under a temporary name and renamed into place when complete,
then ``latest`` (a one-line text file naming the newest version) is replaced atomically, so a
gateway that looks at :func:`latest_version` never sees half a model. ``latest`` says what was
trained last, not what is served: the gateway enrolls it as champion or challenger and serves
the versions the database names (:mod:`ml_integration.champions`). Loading goes through
:meth:`MLTradingStrategy.load_strategy`, which checks every artifact's sha256 against
``metadata.json`` and refuses on mismatch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ml_integration.artifacts import verify
from ml_integration.exceptions import ModelIntegrityError, NotTrainedError
from ml_integration.strategy import MLTradingStrategy, SentimentSource

__all__ = [
    "StoredModel",
    "latest_version",
    "list_versions",
    "load_latest_strategy",
    "load_version_strategy",
    "model_key",
    "save_version",
    "stored_models",
    "version_error",
    "version_metadata",
]

_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")


def model_key(symbol: str, timeframe: str) -> str:
    """``("BTC/USDT", "1h")`` → ``"BTC_USDT_1h"`` (the directory name)."""
    key = f"{symbol.replace('/', '_').replace(':', '_')}_{timeframe}"
    if not _SAFE.match(key) or key.startswith("."):
        raise ValueError(f"symbol {symbol!r} / timeframe {timeframe!r} cannot name a model directory")
    return key


def _folder(model_dir: str | Path, symbol: str, timeframe: str) -> Path:
    return Path(model_dir) / model_key(symbol, timeframe)


def list_versions(model_dir: str | Path, symbol: str, timeframe: str) -> list[str]:
    """Saved versions, oldest first (names sort by time)."""
    folder = _folder(model_dir, symbol, timeframe)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def latest_version(model_dir: str | Path, symbol: str, timeframe: str) -> str | None:
    """The version ``latest`` names, or None when nothing was saved yet."""
    pointer = _folder(model_dir, symbol, timeframe) / "latest"
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    return name if name and _SAFE.match(name) else None


def save_version(
    strategy: MLTradingStrategy,
    model_dir: str | Path,
    symbol: str,
    timeframe: str,
    *,
    version: str | None = None,
) -> Path:
    """Save ``strategy`` as a new version and point ``latest`` at it; returns its directory."""
    folder = _folder(model_dir, symbol, timeframe)
    folder.mkdir(parents=True, exist_ok=True)
    name = version or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if not _SAFE.match(name) or name.startswith(".") or name == "latest":
        raise ValueError(f"version {name!r} must be letters, digits, '.', '_' or '-'")
    base, counter = name, 2
    while (folder / name).exists():
        name, counter = f"{base}-{counter}", counter + 1
    staging = folder / f".{name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    strategy.symbol, strategy.timeframe = symbol, timeframe
    strategy.save_strategy(staging, version=name)
    final = folder / name
    os.rename(staging, final)
    _point_latest(folder, name)
    return final


def _point_latest(folder: Path, name: str) -> None:
    """Replace ``latest`` atomically: a reader sees the old name or the new one, never half."""
    pointer_tmp = folder / f".latest.{os.getpid()}.tmp"
    pointer_tmp.write_text(name + "\n")
    os.replace(pointer_tmp, folder / "latest")


def version_metadata(model_dir: str | Path, symbol: str, timeframe: str, version: str) -> dict[str, Any]:
    """The sealed metadata of a saved version, after checking every artifact's sha256.

    Raises ``FileNotFoundError`` when the version does not exist and
    :class:`~ml_integration.exceptions.ModelIntegrityError` when it was altered."""
    if not _SAFE.match(version) or version.startswith(".") or version == "latest":
        raise FileNotFoundError(f"version {version!r} must be letters, digits, '.', '_' or '-'")
    path = _folder(model_dir, symbol, timeframe) / version
    if not path.is_dir():
        raise FileNotFoundError(f"no saved version {version!r} of {symbol} {timeframe} in {model_dir}")
    return verify(path)


def load_latest_strategy(
    model_dir: str | Path, symbol: str, timeframe: str, *, sentiment: SentimentSource | None = None
) -> MLTradingStrategy:
    """The newest saved strategy for ``symbol``/``timeframe``, hashes verified and warmed up."""
    name = latest_version(model_dir, symbol, timeframe)
    if name is None:
        raise NotTrainedError(
            f"no trained model for {symbol} {timeframe} in {model_dir}: run "
            f"`tvgw train --symbol {symbol} --timeframe {timeframe}`"
        )
    return load_version_strategy(model_dir, symbol, timeframe, name, sentiment=sentiment)


def load_version_strategy(
    model_dir: str | Path,
    symbol: str,
    timeframe: str,
    version: str,
    *,
    sentiment: SentimentSource | None = None,
) -> MLTradingStrategy:
    """Saved version ``version`` (the gateway serves the versions the database names champion
    and challenger), hashes verified and warmed up. Raises ``FileNotFoundError`` when it is
    not in the store."""
    if not _SAFE.match(version) or version.startswith(".") or version == "latest":
        raise FileNotFoundError(f"version {version!r} must be letters, digits, '.', '_' or '-'")
    folder = _folder(model_dir, symbol, timeframe) / version
    if not folder.is_dir():
        raise FileNotFoundError(f"no saved version {version!r} of {symbol} {timeframe} in {model_dir}")
    with _loading:
        return MLTradingStrategy(sentiment=sentiment).load_strategy(folder)


#: One load at a time per process. numpy reads an array file's header with ``ast.literal_eval``,
#: and CPython 3.11 before 3.11.8 can raise ``SystemError: AST constructor recursion depth
#: mismatch`` when two threads build ASTs at once (python/cpython#106905): a worker's preload
#: thread and a request loading a model did. Loads are rare (start-up, a new version), so the
#: lock costs nothing an alert waits on.
_loading = threading.Lock()


@dataclass(frozen=True)
class StoredModel:
    """One ``latest`` pointer of the store: what every worker will serve for that market.

    ``error`` says why it cannot be served (unreadable pointer or metadata, an artifact whose
    sha256 no longer matches); such an entry has no ``symbol``/``timeframe`` when even its
    ``strategy.json`` could not be read, only its directory ``key``.
    """

    key: str
    version: str | None
    symbol: str | None = None
    timeframe: str | None = None
    error: str | None = None

    @property
    def market(self) -> str:
        """``"BTC/USDT 1h"``, or the directory name when the entry is unreadable."""
        return f"{self.symbol} {self.timeframe}" if self.symbol and self.timeframe else self.key


def stored_models(model_dir: str | Path) -> list[StoredModel]:
    """Every ``latest`` pointer in ``model_dir``, sorted, each checked for integrity.

    The answer depends only on the files, so every worker (and every host sharing the
    directory) gives the same one. The sha256 check is remembered per version directory
    until a file in it changes (size or mtime), so health checks that call this every few
    seconds hash nothing new. Raises ``OSError`` when the directory itself cannot be read.
    """
    root = Path(model_dir)
    if not root.exists():
        return []
    folders = sorted(root.iterdir())  # raises when unreadable, where a glob would say "no models"
    return [_stored(folder / "latest") for folder in folders if (folder / "latest").is_file()]


def version_error(model_dir: str | Path, symbol: str, timeframe: str, version: str) -> str | None:
    """Why saved version ``version`` cannot be served (absent, or an artifact altered), or None.
    Like :func:`stored_models`, it hashes the files again only when one of them changed."""
    folder = _folder(model_dir, symbol, timeframe) / version
    if not _SAFE.match(version) or not folder.is_dir():
        return f"{symbol} {timeframe} version {version!r} is not in the model store {model_dir}"
    return _integrity_error(folder)


def _stored(pointer: Path) -> StoredModel:
    key = pointer.parent.name
    try:
        name = pointer.read_text().strip()
    except OSError as exc:
        return StoredModel(key, None, error=f"{key}: cannot read its latest pointer: {exc}")
    if not name or not _SAFE.match(name):
        return StoredModel(key, None, error=f"{key}: latest names no valid version ({name!r})")
    folder = pointer.parent / name
    try:
        meta = json.loads((folder / "strategy.json").read_text())
        symbol, timeframe = str(meta["symbol"]), str(meta["timeframe"])
    except (OSError, ValueError, KeyError) as exc:
        return StoredModel(key, name, error=f"{key} {name}: strategy.json unreadable: {exc}")
    return StoredModel(key, name, symbol, timeframe, error=_integrity_error(folder))


#: version directory → (its files' (name, size, mtime_ns), the integrity error or None)
_checked: dict[Path, tuple[tuple[tuple[str, int, int], ...], str | None]] = {}
_checked_lock = threading.Lock()


def _integrity_error(folder: Path) -> str | None:
    """``verify(folder)``'s refusal as text, or None; re-hashed only when a file changed."""
    try:
        stats = [(e.name, e.stat()) for e in os.scandir(folder) if e.is_file()]
        signature = tuple(sorted((name, st.st_size, st.st_mtime_ns) for name, st in stats))
    except OSError as exc:
        return f"{folder.name}: unreadable: {exc}"
    with _checked_lock:
        known = _checked.get(folder)
    if known is not None and known[0] == signature:
        return known[1]
    try:
        verify(folder)
        error = None
    except (ModelIntegrityError, OSError) as exc:
        error = str(exc)
    with _checked_lock:
        _checked[folder] = (signature, error)
    return error
