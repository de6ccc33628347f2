"""Budgets: upper bounds on MACs and params that a compressed architecture must meet."""
from __future__ import annotations

from dataclasses import dataclass

from .architecture import Architecture
from .errors import CompressError
from .units import format_count


@dataclass(frozen=True)
class Budget:
    """Upper bounds; ``None`` means unconstrained."""

    macs: int | None = None
    params: int | None = None

    def __post_init__(self):
        if self.macs is None and self.params is None:
            raise CompressError("no budget given: pass --budget-macs and/or --budget-params (e.g. 300M)")

    def to_dict(self) -> dict:
        return {"macs": self.macs, "params": self.params}

    def costs(self, space, arch: Architecture) -> dict:
        """The budgeted costs of ``arch``: {"macs": ..., "params": ...} for the active bounds."""
        out = {}
        if self.macs is not None:
            out["macs"] = space.macs(arch)
        if self.params is not None:
            out["params"] = space.params(arch)
        return out

    def fits(self, space, arch: Architecture) -> bool:
        """Whether ``arch`` meets every active bound."""
        return all(v <= getattr(self, k) for k, v in self.costs(space, arch).items())

    def excess(self, space, arch: Architecture) -> float:
        """Largest ratio cost/bound over the active bounds (<= 1 means within budget)."""
        return max(v / getattr(self, k) for k, v in self.costs(space, arch).items())

    def check_reachable(self, space) -> None:
        """Raise CompressError when even the smallest architecture in the space is over budget."""
        smallest = space.smallest()
        for key, value in self.costs(space, smallest).items():
            bound = getattr(self, key)
            if value > bound:
                unit = "MACs" if key == "macs" else "params"
                raise CompressError(
                    f"budget of {format_count(bound)} {unit} is below the smallest architecture in the search "
                    f"space ({format_count(value)} {unit} at input {'x'.join(map(str, space.input_shape))}): "
                    f"raise the budget to at least {value}"
                )
