"""Architecture: the chosen value of every decision, as JSON data.

An architecture holds the width of each channel group that is a decision and whether each
removable residual block is kept. Its fingerprint names the model and input shape the search
space was derived for, so it is never applied to a different model.
"""
from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path

from compress_base.errors import CompressError
from compress_base.fileio import write_json

FORMAT = 1
MAX_CHANNELS, MAX_SIDE = 4, 4096  # input_shape bounds: C in 1..4, H and W in 1..4096
MAX_CLASSES = 100_000
MAX_MULTIPLE = 1024
MAX_WIDTH = 1 << 20


def _is_int(value, lo: int, hi: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and lo <= value <= hi


def _is_shape(shape) -> bool:
    return (isinstance(shape, (list, tuple)) and len(shape) == 3 and _is_int(shape[0], 1, MAX_CHANNELS)
            and all(_is_int(s, 1, MAX_SIDE) for s in shape[1:]))


def check_fingerprint(fp: dict, source: str = "architecture") -> None:
    """Raise CompressError unless the fingerprint's numbers (those present) are in range: checked
    before any model is built at its input shape or with its settings."""
    shape = fp.get("input_shape")
    if "input_shape" in fp and not _is_shape(shape):
        raise CompressError(f"{source}: input_shape {shape!r} must be [C, H, W] with C in 1..{MAX_CHANNELS} and "
                            f"H, W in 1..{MAX_SIDE}: save the model again")
    if "num_classes" in fp and not _is_int(fp["num_classes"], 1, MAX_CLASSES):
        raise CompressError(f"{source}: num_classes {fp['num_classes']!r} must be an integer in 1..{MAX_CLASSES}: "
                            "save the model again")
    if "channel_multiple" in fp and not _is_int(fp["channel_multiple"], 1, MAX_MULTIPLE):
        raise CompressError(f"{source}: channel_multiple {fp['channel_multiple']!r} must be an integer in "
                            f"1..{MAX_MULTIPLE}: save the model again")
    ratio = fp.get("min_ratio")
    if "min_ratio" in fp and not (isinstance(ratio, numbers.Real) and not isinstance(ratio, bool)
                                  and math.isfinite(ratio) and 0 < ratio <= 1):
        raise CompressError(f"{source}: min_ratio {ratio!r} must be a number in (0, 1]: save the model again")
    keep = fp.get("keep")
    if "keep" in fp and not (isinstance(keep, list) and len(keep) <= 1000
                             and all(isinstance(k, str) and 0 < len(k) <= 200 for k in keep)):
        raise CompressError(f"{source}: keep must be a list of layer names or patterns: save the model again")


@dataclass
class Architecture:
    """Widths of channel groups and keep flags of residual blocks, plus the space's fingerprint."""

    widths: dict[str, int]
    blocks: dict[str, bool]
    fingerprint: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "fingerprint": dict(self.fingerprint),
            "widths": dict(self.widths),
            "blocks": dict(self.blocks),
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "architecture") -> Architecture:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CompressError(f"{source} is not an architecture file of format {FORMAT}")
        try:
            widths = {str(k): v for k, v in data["widths"].items()}
            blocks = {str(k): bool(v) for k, v in data["blocks"].items()}
        except (KeyError, AttributeError, TypeError, ValueError):
            raise CompressError(f"{source} lacks valid 'widths' and 'blocks' tables") from None
        for name, width in widths.items():
            if not _is_int(width, 1, MAX_WIDTH):
                raise CompressError(f"{source}: width {width!r} of group {name} must be a positive integer "
                                    "(a channel count): save the architecture again")
        fingerprint = data.get("fingerprint", {})
        if not isinstance(fingerprint, dict):
            raise CompressError(f"{source}: 'fingerprint' must be an object: save the architecture again")
        check_fingerprint(fingerprint, source)
        return cls({k: int(v) for k, v in widths.items()}, blocks, dict(fingerprint))

    def save(self, path: str | Path) -> Path:
        """Write the architecture as JSON (atomically)."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Architecture:
        """Read an architecture JSON file."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CompressError(f"cannot read architecture {path}: {exc}") from None
        return cls.from_dict(data, str(path))

    def __eq__(self, other) -> bool:
        return isinstance(other, Architecture) and (self.widths, self.blocks) == (other.widths, other.blocks)
