"""INT8 calibration: re-batching calibration data, the cache file, and TensorRT's calibrator.

:class:`CalibrationBatches` and :class:`CalibratorCore` need no TensorRT; ``_make_calibrator``
wraps a core in TensorRT's ``IInt8EntropyCalibrator2`` at build time.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from compress_base.errors import CompressError, first_line
from exporters.tensorrt.caches import write_bytes_atomic
from exporters.tensorrt.shapes import format_shape, is_int_at_least

log = logging.getLogger(__name__)

DEFAULT_CALIBRATION_BATCH = 8


def check_calibration_batch_size(batch_size) -> None:
    """A CompressError unless ``batch_size`` is a positive int."""
    if not is_int_at_least(batch_size, 1):
        raise CompressError(f"calibration batch size {batch_size!r} must be a positive integer")


def _as_array(item) -> np.ndarray:
    if isinstance(item, (tuple, list)) and item and not isinstance(item[0], (int, float)):
        item = item[0]  # (images, labels) from a DataLoader
    if hasattr(item, "detach"):  # a torch tensor, wherever it lives
        item = item.detach().cpu().numpy()
    return np.asarray(item)


class CalibrationBatches:
    """Re-batch calibration data into fixed ``(batch_size, *sample_shape)`` float32 arrays.

    ``source`` yields numpy arrays (or torch tensors, or ``(images, labels)`` pairs) holding one
    sample ``sample_shape`` or a stack of them ``(n, *sample_shape)``. Samples are packed in order;
    the last incomplete batch is dropped. ``max_batches`` stops early. Counts of samples seen,
    batches given and samples dropped are kept for the log.
    """

    def __init__(
        self,
        source: Iterable,
        batch_size: int,
        sample_shape: Sequence[int],
        max_batches: int | None = None,
        dtype=np.float32,
    ):
        check_calibration_batch_size(batch_size)
        if max_batches is not None and (not isinstance(max_batches, int) or max_batches < 1):
            raise CompressError(f"max calibration batches {max_batches!r} must be a positive integer")
        self.source = source
        self.batch_size = batch_size
        self.sample_shape = tuple(int(d) for d in sample_shape)
        self.max_batches = max_batches
        self.dtype = np.dtype(dtype)
        self.samples = 0
        self.batches = 0
        self.dropped = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        pending: list[np.ndarray] = []
        have = 0
        for item in self.source:
            x = _as_array(item)
            if x.shape == self.sample_shape:
                x = x[None]
            if x.ndim != len(self.sample_shape) + 1 or x.shape[1:] != self.sample_shape:
                image = self.sample_shape[1:] if len(self.sample_shape) > 1 else self.sample_shape
                raise CompressError(
                    f"calibration data of shape {format_shape(x.shape)} does not fit the network input "
                    f"N x {format_shape(self.sample_shape)}; resize calibration images to {format_shape(image)}"
                )
            if not np.issubdtype(x.dtype, np.number) and x.dtype != np.bool_:
                raise CompressError(f"calibration data has dtype {x.dtype}; give numeric arrays")
            x = x.astype(self.dtype, copy=False)
            if not np.isfinite(x).all():
                raise CompressError("calibration data holds NaN or infinite values; check the preprocessing")
            self.samples += len(x)
            pending.append(x)
            have += len(x)
            while have >= self.batch_size:
                flat = np.concatenate(pending) if len(pending) > 1 else pending[0]
                yield np.ascontiguousarray(flat[: self.batch_size])
                self.batches += 1
                rest = flat[self.batch_size :]
                pending, have = ([rest] if len(rest) else []), len(rest)
                if self.max_batches is not None and self.batches >= self.max_batches:
                    self.dropped = have
                    return
        self.dropped = have


class CalibratorCore:
    """The TensorRT-independent half of the INT8 calibrator: batches, cache file, errors.

    With calibration data the cache file is not read (a stale cache from another model at the
    same path would give wrong scales) but rewritten after calibration; without data the cache
    is the only source. ``next_batch`` never raises (TensorRT calls it from C++): an exception is
    kept in ``error`` and ends calibration; :meth:`check` raises it after the build.
    """

    def __init__(self, batches: Iterable[np.ndarray] | None, cache_path: Path, batch_size: int):
        self.cache_path = Path(cache_path)
        self.batch_size = batch_size
        self._iter = iter(batches) if batches is not None else iter(())
        self._source = batches
        self.error: BaseException | None = None
        self.given = 0
        self.cache_read = False
        self.cache_written = False

    def next_batch(self) -> np.ndarray | None:
        if self.error is not None:
            return None
        try:
            x = next(self._iter)
        except StopIteration:
            return None
        except BaseException as exc:  # noqa: BLE001 - reported by check() after the build
            self.error = exc
            return None
        self.given += 1
        return x

    def read_cache(self) -> bytes | None:
        if self._source is not None:
            if self.cache_path.is_file():
                log.info("calibrating from the given data; %s will be overwritten", self.cache_path)
            return None
        if self.cache_path.is_file():
            data = self.cache_path.read_bytes()
            if data:
                self.cache_read = True
                log.info("using INT8 calibration cache %s", self.cache_path)
                return data
        return None

    def write_cache(self, data) -> None:
        write_bytes_atomic(self.cache_path, data)
        self.cache_written = True
        log.info("wrote INT8 calibration cache %s", self.cache_path)

    def check(self) -> None:
        """Raise what went wrong while TensorRT pulled calibration batches, if anything."""
        if self.error is not None:
            if isinstance(self.error, CompressError):
                raise self.error
            raise CompressError(
                f"reading calibration data failed: {first_line(self.error)}; check the calibration images"
            ) from self.error
        if not self.cache_read and self.given == 0:
            src = self._source
            seen = getattr(src, "samples", None)
            detail = f" ({seen} images)" if seen is not None else ""
            raise CompressError(
                f"calibration data gave no full batch of {self.batch_size}{detail}; give more "
                "calibration images or a smaller calibration batch"
            )


def _make_calibrator(trt, core: CalibratorCore, backend, nbytes: int):
    """TensorRT's entropy calibrator over ``core``, copying batches into one device buffer of ``backend``."""

    class _EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.buffer = backend.device_buffer(nbytes) if core._source is not None else None

        def get_batch_size(self):
            return core.batch_size

        def get_batch(self, names):
            x = core.next_batch()
            if x is None or self.buffer is None:
                return None
            try:
                backend.copy_to_device(self.buffer, x)
            except BaseException as exc:  # noqa: BLE001 - surfaced by core.check()
                core.error = exc
                return None
            return [self.buffer.ptr]

        def read_calibration_cache(self):
            return core.read_cache()

        def write_calibration_cache(self, cache):
            try:
                core.write_cache(cache)
            except BaseException as exc:  # noqa: BLE001
                core.error = exc

    return _EntropyCalibrator()
