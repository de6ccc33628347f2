"""The seeded random input every latency measurement and parity check feeds a model (numpy, no torch)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from compressor.errors import CompressError


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
    return np.random.default_rng(seed).standard_normal((batch, *dims), dtype=np.float32)
