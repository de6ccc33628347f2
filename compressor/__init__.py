"""compressor: shrink a PyTorch CNN to a budget for a deployment target."""

__version__ = "0.1.0"

from .errors import CompressError  # noqa: E402

__all__ = ["CompressError", "__version__"]
