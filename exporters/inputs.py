"""The seeded random input every latency measurement and parity check feeds a model (numpy, no torch)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from compress_base.errors import CompressError

MAX_SIDE = 16384  # largest size of one input axis (batch aside)
MAX_VALUES = 2**28  # largest input, batch included: 1 GiB of float32


def check_input_size(dims: Sequence[int], batch: int, what: str = "the input") -> None:
    """Refuse a ``(batch, *dims)`` input too large to allocate, before anything is allocated."""
    values = batch * math.prod(dims)
    if max(dims, default=0) > MAX_SIDE or values > MAX_VALUES:
        raise CompressError(
            f"{what}: an input of {'x'.join(map(str, (batch, *dims)))} ({values:.3g} values) is beyond the limit "
            f"({MAX_SIDE} per axis, {MAX_VALUES} values in all); check the model's input shape, or pass a smaller "
            "--input-shape"
        )


def sample_input(input_shape: Sequence[int], batch: int = 1, seed: int = 0) -> np.ndarray:
    """A float32 array of shape ``(batch, *input_shape)`` drawn from a seeded standard normal."""
    try:
        dims = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        dims = ()
    if not dims or min(dims) < 1:
        raise CompressError(
            f"input shape {input_shape!r} is not a list of positive integers; "
            "give it without the batch dimension, e.g. (3, 224, 224)"
        )
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise CompressError(f"batch {batch!r} must be a positive integer, e.g. 1")
    check_input_size(dims, batch)
    return np.random.default_rng(seed).standard_normal((batch, *dims), dtype=np.float32)
