"""compressor: shrink a PyTorch CNN to a budget for a deployment target."""

__version__ = "0.1.0"

from .errors import CompressError  # noqa: E402


def load(path):
    """Load a compressed model (a run directory or its ``model.pt``); see ``compressor.checkpoint``."""
    from .checkpoint import load as _load

    return _load(path)


__all__ = ["CompressError", "load", "__version__"]
