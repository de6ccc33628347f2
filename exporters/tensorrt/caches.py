"""The builder's timing-cache file, and atomic writes of the bytes TensorRT hands back."""
from __future__ import annotations

from pathlib import Path

from compress_base.errors import CompressError
from compress_base.fileio import write_atomic


def resolve_timing_cache(path) -> Path | None:
    """A timing-cache file path (None: no cache); a directory is a user error."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise CompressError(f"timing cache {path} is a directory; give a file name such as trt.cache")
    return path


def read_timing_cache(path: Path | None) -> bytes:
    """The cache's bytes, or ``b""`` (a fresh cache) when there is no file yet."""
    if path is None or not path.is_file():
        return b""
    return path.read_bytes()


def write_bytes_atomic(path: Path, data) -> Path:
    """Write a bytes-like object (``IHostMemory`` included) to ``path`` through a temporary name."""
    return write_atomic(path, lambda tmp: tmp.write_bytes(memoryview(data)))
