"""Save and load a compressed model as its architecture (JSON) plus a state_dict.

No pickled modules are written or read: loading checks arch.json's numbers, rebuilds the original
model from its spec (never importing user code unless the caller says so), applies the
architecture, and loads the weights with ``torch.load(..., weights_only=True)``. The same
state_dict always gives the same bytes of model.pt.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from torch import nn

from compress_base.errors import CompressError
from compress_base.fileio import write_torch

from .architecture import Architecture
from .models import ModelSpec, build_model, load_state_file, load_weights_into
from .space import SearchSpace
from .surgery import materialize

log = logging.getLogger(__name__)

ARCH_FILE = "arch.json"
WEIGHTS_FILE = "model.pt"


def save(model: nn.Module, arch: Architecture, spec: ModelSpec, out_dir: str | Path) -> Path:
    """Write ``arch.json`` (architecture + model spec) and ``model.pt`` (state_dict) to ``out_dir``."""
    out = Path(out_dir)
    data = Architecture(arch.widths, arch.blocks, {**arch.fingerprint, "spec": spec.to_dict()})
    full = model.state_dict()
    state = OrderedDict((k, v.detach().cpu().contiguous()) for k, v in full.items())
    state._metadata = getattr(full, "_metadata", None)  # module versions some loaders check (MNASNet)
    write_torch(out / WEIGHTS_FILE, state)  # serialised in memory: the same state_dict gives the same bytes
    data.save(out / ARCH_FILE)
    return out


def load(path: str | Path, *, model_fn: Callable | None = None, trust_code: bool = False) -> nn.Module:
    """Load a compressed model saved by :func:`save` (a run directory or its ``model.pt``).

    A spec naming user code (``package.module:function``) is refused unless ``model_fn`` builds
    the original model (it gets num_classes) or ``trust_code`` allows importing the spec's name.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    weights = path if path.is_file() else folder / WEIGHTS_FILE
    arch_file = folder / ARCH_FILE
    if not arch_file.is_file() or not weights.is_file():
        raise CompressError(f"{path} is not a compressed model: expected {ARCH_FILE} and {WEIGHTS_FILE} there")
    arch = Architecture.load(arch_file)
    fp = arch.fingerprint
    for key in ("spec", "input_shape"):
        if key not in fp:
            raise CompressError(f"{arch_file} does not say which model it was made from (no '{key}'): "
                                "save the model again")
    spec = ModelSpec.from_dict(fp["spec"], str(arch_file))
    base = build_model(spec, trust_code=trust_code, model_fn=model_fn, origin=str(arch_file)).eval()
    space = SearchSpace.build(base, fp["input_shape"], fp.get("model", spec.name),
                              channel_multiple=fp.get("channel_multiple", 8), min_ratio=fp.get("min_ratio", 0.1),
                              keep=fp.get("keep", ()))
    small = materialize(space, base, arch)
    load_weights_into(small, load_state_file(weights), str(weights))
    return small.eval()
