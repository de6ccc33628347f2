"""Architecture: the chosen value of every decision, as JSON data.

An architecture holds the width of each channel group that is a decision and whether each
removable residual block is kept. Its fingerprint names the model and input shape the search
space was derived for, so it is never applied to a different model.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CompressError
from .fileio import write_json

FORMAT = 1


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
    def from_dict(cls, data: dict, source: str = "architecture") -> "Architecture":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CompressError(f"{source} is not an architecture file of format {FORMAT}")
        try:
            widths = {str(k): int(v) for k, v in data["widths"].items()}
            blocks = {str(k): bool(v) for k, v in data["blocks"].items()}
        except (KeyError, AttributeError, TypeError, ValueError):
            raise CompressError(f"{source} lacks valid 'widths' and 'blocks' tables") from None
        return cls(widths, blocks, dict(data.get("fingerprint", {})))

    def save(self, path: str | Path) -> Path:
        """Write the architecture as JSON (atomically)."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "Architecture":
        """Read an architecture JSON file."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CompressError(f"cannot read architecture {path}: {exc}") from None
        return cls.from_dict(data, str(path))

    def __eq__(self, other) -> bool:
        return isinstance(other, Architecture) and (self.widths, self.blocks) == (other.widths, other.blocks)
