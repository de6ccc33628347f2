"""compressor: shrink a PyTorch CNN to a budget for a deployment target."""

__version__ = "0.1.0"

from compress_base.errors import CompressError  # noqa: E402


def load(path, *, model_fn=None, trust_code=False):
    """Load a compressed model (a run directory or its ``model.pt``); see ``compressor.artifact``.

    Code named in arch.json is never imported on its own: for a model built by
    ``package.module:function`` pass ``model_fn`` (your builder, given num_classes) or, if you trust
    the artifact's source, ``trust_code=True``.
    """
    from .artifact import load as _load

    return _load(path, model_fn=model_fn, trust_code=trust_code)


def compress(model, **kwargs):
    """Compress an ``nn.Module`` you hold, or a model name (``resnet18``, ``package.module:function``),
    with your own DataLoaders (``train_loader=``, ``val_loader=``) or an ImageFolder or IDX folder (``data=PATH``);
    see :func:`compressor.api.compress`."""
    from .api import compress as _compress

    return _compress(model, **kwargs)


__all__ = ["CompressError", "compress", "load", "__version__"]
