"""Batch ranges and input shapes: user arguments, optimization-profile shapes, run-time shapes.

Pure functions (no TensorRT): ``-1`` marks a dynamic axis, axis 0 is the batch axis.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from compress_base.errors import CompressError

log = logging.getLogger(__name__)


def is_int_at_least(value, minimum: int) -> bool:
    """Whether ``value`` is an int (not a bool) of at least ``minimum``."""
    return not isinstance(value, bool) and isinstance(value, int) and value >= minimum


def format_shape(shape: Sequence[int]) -> str:
    """``(-1, 3, 224, 224)`` -> ``"?x3x224x224"``."""
    return "x".join("?" if d < 0 else str(d) for d in shape)


def parse_batch_range(batch) -> tuple[int, int, int]:
    """``(min, opt, max)`` batch sizes from an int (fixed), a 3-sequence, or ``"1,4,8"``."""
    value = batch
    if isinstance(value, str):
        try:
            value = [int(p) for p in re.split(r"[,:]", value.strip())]
        except ValueError:
            value = None
        if value is not None and len(value) == 1:
            value = value[0]
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value, value)
    ok = (
        isinstance(value, (tuple, list))
        and len(value) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    )
    if not ok or not 1 <= value[0] <= value[1] <= value[2]:
        raise CompressError(
            f"batch range {batch!r} is not MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX; e.g. 1,1,8 "
            "(or one number for a fixed batch)"
        )
    return tuple(value)


def parse_sample_shape(input_shape) -> tuple[int, ...] | None:
    """An input shape without the batch axis, e.g. ``(3, 224, 224)``; None stays None."""
    if input_shape is None:
        return None
    try:
        dims = tuple(int(d) for d in input_shape)
        bad = any(isinstance(d, bool) for d in input_shape)
    except (TypeError, ValueError):
        dims, bad = (), True
    if bad or not dims or min(dims) < 1:
        raise CompressError(
            f"input shape {input_shape!r} is not a list of positive integers; give it without the "
            "batch dimension, e.g. (3, 224, 224)"
        )
    return dims


def profile_shapes(
    name: str,
    dims: Sequence[int],
    batch: tuple[int, int, int],
    input_shape: Sequence[int] | None,
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
    """Optimization-profile ``(min, opt, max)`` shapes of one network input, None if all static.

    ``dims`` is the input's shape in the parsed network, -1 for a dynamic axis; axis 0 is the
    batch axis and takes the ``batch`` range; other dynamic axes take ``input_shape`` (which must
    agree with the static ones).
    """
    dims = tuple(int(d) for d in dims)
    if not dims:
        raise CompressError(f"network input '{name}' is a scalar; TensorRT needs a batched tensor input")
    sample = tuple(dims[1:])
    if input_shape is not None:
        if len(input_shape) != len(sample):
            raise CompressError(
                f"network input '{name}' has shape {format_shape(dims)} but input_shape "
                f"{format_shape(input_shape)} has {len(input_shape)} dimensions; give {len(sample)} "
                "dimensions without the batch"
            )
        for d, want in zip(sample, input_shape):
            if d >= 0 and d != want:
                raise CompressError(
                    f"network input '{name}' takes {format_shape(sample)} but input_shape is "
                    f"{format_shape(input_shape)}; pass a matching input shape or re-export the model at it"
                )
        sample = tuple(input_shape)
    elif any(d < 0 for d in sample):
        raise CompressError(
            f"network input '{name}' has dynamic dimensions ({format_shape(dims)}); pass input_shape "
            "(e.g. 3x224x224) to fix them"
        )
    if dims[0] >= 0:
        if batch != (dims[0],) * 3:
            log.info("input '%s' has a fixed batch of %d; the batch range %s is ignored", name, dims[0], batch)
        if all(d >= 0 for d in dims):
            return None
        fixed = (dims[0], *sample)
        return fixed, fixed, fixed
    lo, opt, hi = batch
    return (lo, *sample), (opt, *sample), (hi, *sample)


def resolve_input_shape(
    name: str,
    dims: Sequence[int],
    profile_range: Sequence[Sequence[int]] | None,
    batch: int,
    input_shape: Sequence[int] | None = None,
    default_shape: Sequence[int] | None = None,
) -> tuple[int, ...]:
    """The concrete shape an engine input gets at ``batch``, checked against its profile range.

    Static dimensions of the engine win; ``input_shape`` must agree with them, ``default_shape``
    (e.g. a profile's shape) only fills dynamic ones.
    """
    dims = tuple(int(d) for d in dims)
    if not is_int_at_least(batch, 1):
        raise CompressError(f"batch {batch!r} must be a positive integer, e.g. 1")
    sample = list(dims[1:])
    for given, strict in ((input_shape, True), (default_shape, False)):
        if given is None:
            continue
        given = tuple(int(d) for d in given)
        if len(given) != len(sample):
            if strict:
                raise CompressError(
                    f"engine input '{name}' has shape {format_shape(dims)}; give an input shape of "
                    f"{len(sample)} dimensions, not {format_shape(given)}"
                )
            continue
        for i, (d, g) in enumerate(zip(dims[1:], given)):
            if d >= 0 and d != g and strict:
                raise CompressError(
                    f"engine input '{name}' takes {format_shape(dims[1:])}, not {format_shape(given)}; drop "
                    "the input shape or rebuild the engine at that shape"
                )
            if sample[i] < 0:
                sample[i] = g
    if dims[0] >= 0 and dims[0] != batch:
        raise CompressError(
            f"engine input '{name}' has a fixed batch of {dims[0]}, not {batch}; use batch {dims[0]} "
            "or rebuild the engine with a batch range"
        )
    if any(d < 0 for d in sample):
        raise CompressError(
            f"engine input '{name}' has dynamic dimensions ({format_shape(dims)}); give an input shape, "
            "e.g. 3x224x224"
        )
    shape = (batch, *sample)
    if profile_range is not None:
        lo, hi = tuple(profile_range[0]), tuple(profile_range[-1])
        if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
            raise CompressError(
                f"shape {format_shape(shape)} of engine input '{name}' is outside the engine's profile "
                f"{format_shape(lo)} .. {format_shape(hi)}; use a batch/shape in that range or rebuild the engine"
            )
    return shape
