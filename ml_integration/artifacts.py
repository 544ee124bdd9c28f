"""Sealing a model directory: sha256 of every artifact recorded in ``metadata.json``.

Loading verifies every hash first and refuses (:class:`ModelIntegrityError`) on a mismatch, a
missing file, or an unexpected extra file. The artifacts here are numpy ``.npz`` arrays (loaded
with ``allow_pickle=False``) and JSON, so nothing executes on load; the hashes still stop a
model that was edited or half-copied from serving silently different numbers.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
from pathlib import Path
from typing import Any

from ml_integration.exceptions import ModelIntegrityError

__all__ = ["METADATA_FILE", "library_versions", "seal", "sha256_file", "verify"]

METADATA_FILE = "metadata.json"


def library_versions(*distributions: str) -> dict[str, str]:
    """Python's version and each distribution's (``"not installed"`` when absent), for a
    model's metadata: pickled or exported weights are read back reliably only by the library
    versions that wrote them, so a model says which those were."""
    versions = {"python": platform.python_version()}
    for dist in distributions:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def seal(directory: str | Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """Write ``metadata.json`` with ``artifacts: {file: sha256}`` for every other file."""
    folder = Path(directory)
    artifacts = {
        p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != METADATA_FILE
    }
    sealed = {**metadata, "artifacts": artifacts}
    (folder / METADATA_FILE).write_text(json.dumps(sealed, indent=2, sort_keys=True, default=str))
    return sealed


def verify(directory: str | Path) -> dict[str, Any]:
    """The metadata of a sealed directory, after checking every artifact's sha256."""
    folder = Path(directory)
    meta_path = folder / METADATA_FILE
    if not meta_path.is_file():
        raise ModelIntegrityError(f"{folder}: no {METADATA_FILE}; not a saved model directory")
    try:
        metadata = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelIntegrityError(f"{meta_path}: not valid JSON ({exc})") from exc
    expected: dict[str, str] = metadata.get("artifacts") or {}
    if not expected:
        raise ModelIntegrityError(f"{meta_path}: lists no artifacts")
    present = {p.name for p in folder.iterdir() if p.is_file() and p.name != METADATA_FILE}
    extra = sorted(present - set(expected))
    if extra:
        raise ModelIntegrityError(
            f"{folder}: unexpected files {extra} (not recorded when the model was saved)"
        )
    for name, digest in expected.items():
        path = folder / name
        if not path.is_file():
            raise ModelIntegrityError(f"{folder}: artifact {name} is missing")
        actual = sha256_file(path)
        if actual != digest:
            raise ModelIntegrityError(
                f"{path}: sha256 {actual[:16]}… does not match the recorded {digest[:16]}…; refusing to load"
            )
    return metadata
