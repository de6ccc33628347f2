"""The run directory's manifest: what went in (settings, data), which versions ran, and the
SHA-256 of every artifact, so a result can be traced and checked later."""
from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

from compress_base.fileio import write_json

from . import __version__

MANIFEST = "manifest.json"
_PACKAGES = ("torch", "torchvision", "torch-pruning", "onnx", "onnxruntime", "numpy", "tensorrt")


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def versions() -> dict:
    """Versions of Python, this package and the libraries that shape a result."""
    found = {"python": sys.version.split()[0], "compressor": __version__, "platform": platform.platform()}
    for name in _PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def write_manifest(out: Path, inputs: dict, files: list[str]) -> Path:
    """Write ``manifest.json``: ``inputs``, versions, and the hash and size of ``files`` (the names in
    ``out`` this run wrote; a name that is not there is skipped). Other files in ``out`` are not the run's."""
    out = Path(out)
    artifacts = {
        name: {"sha256": sha256(out / name), "bytes": (out / name).stat().st_size}
        for name in sorted(set(files))
        if (out / name).is_file()
    }
    return write_json(out / MANIFEST, {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": inputs,
        "versions": versions(),
        "artifacts": artifacts,
    })
