"""The three image sizes of a run, in one place.

- the **deployment shape** (``--input-shape``, default from the target profile): costs, latency,
  export; the shipped model's input;
- the **search resolution** (``--train-resolution``): a square proxy the searchers train and score
  on, as AutoShrink does;
- the **evaluation resolution** (``--eval-resolution``): teacher training, fine-tuning and every
  accuracy in the report. It is the deployment size whenever the user gives data or weights, so the
  reported accuracy is the shipped model's; only the bundled digits demo keeps the proxy (for
  speed), and its report says so.
"""
from __future__ import annotations

from dataclasses import dataclass

from compress_base.errors import CompressError

from .settings import RunConfig


@dataclass(frozen=True)
class Resolutions:
    """The run's three sizes: ``deployment`` (C, H, W), ``search`` and ``evaluation`` (square sides)."""

    deployment: tuple[int, int, int]
    search: int
    evaluation: int

    @property
    def at_deployment(self) -> bool:
        """Whether accuracy is measured at the deployment shape (the exported model's own input)."""
        return self.deployment[1] == self.deployment[2] == self.evaluation

    def to_dict(self) -> dict:
        return {"deployment": list(self.deployment), "search": self.search, "evaluation": self.evaluation}


def resolve(config: RunConfig, shape: tuple[int, int, int]) -> Resolutions:
    """The run's sizes from its settings and deployment shape (see the module docstring)."""
    side = shape[1]
    if config.eval_resolution is not None:
        evaluation = config.eval_resolution
    elif config.data is not None or config.weights is not None:
        if shape[1] != shape[2]:
            raise CompressError(f"input shape {'x'.join(map(str, shape))} is not square: give --eval-resolution "
                                "(the square side to fine-tune and evaluate at)")
        evaluation = side
    else:
        evaluation = config.train_resolution  # the digits demo: a proxy, said so in the report
    return Resolutions(deployment=tuple(shape), search=config.train_resolution, evaluation=evaluation)


def proxy_note(res: Resolutions) -> str | None:
    """The report's plain statement when accuracy is not measured at the deployment shape."""
    if res.at_deployment:
        return None
    shape = "x".join(map(str, res.deployment))
    return (f"accuracy was measured at {res.evaluation}x{res.evaluation}, not at the deployment shape {shape}: the "
            f"exported model was not evaluated at its own input size. Give --data (your images) or --weights to "
            f"train and evaluate at {shape}, or --eval-resolution {res.deployment[1]}")
