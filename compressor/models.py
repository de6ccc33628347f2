"""Resolve a model spec into an ``nn.Module``: a torchvision name or ``package.module:function``.

Torchvision names resolve through torchvision's registry, our built-in builders (:data:`BUILTINS`)
through our own, with their arguments checked; the built-in networks a user types by a short name
(:data:`MODEL_NAMES`: the CIFAR ResNets ``resnet20`` ... ``resnet110``) are stored by their full
built-in spec name. Any other ``package.module:function`` is user code:
it is imported only when the caller trusts it (``trust_code=True``) or replaced by the caller's
own builder (``model_fn``); a spec read from a file never imports code on its own.

Weights are a torchvision weights name (``DEFAULT``, ``IMAGENET1K_V1``: fetched by torchvision,
so only when the user asks) or a state_dict file, always read with ``weights_only=True``, and
refused when they hold NaN/Inf or integer values for float tensors.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import numbers
import pickle
import sys
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
import torchvision
from torch import nn

from compress_base.errors import CompressError

from .architecture import MAX_CLASSES
from .distributed import local_rank_zero_first
from .networks.cifar_resnet import DEPTHS as CIFAR_DEPTHS
from .networks.cifar_resnet import cifar_resnet_from_spec

log = logging.getLogger(__name__)

# Models whose constructors add training-only auxiliary heads by default.
_NO_AUX = {"googlenet", "inception_v3"}
_OPT_IN = "pass compressor.load(path, model_fn=<your builder>) or trust_code=True (CLI: --trust-code)"


def check_num_classes(value, where: str = "model spec") -> int | None:
    """``value`` if it is None or an integer in 1..:data:`MAX_CLASSES`; a CompressError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= value <= MAX_CLASSES:
        raise CompressError(f"{where}: num_classes {value!r} must be an integer in 1..{MAX_CLASSES}: "
                            "give the number of classes the model predicts")
    return int(value)


@dataclass(frozen=True)
class ModelSpec:
    """How to rebuild the original model: enough to apply a saved architecture to it."""

    name: str
    num_classes: int | None = None
    kwargs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "num_classes": self.num_classes, "kwargs": dict(self.kwargs)}

    @classmethod
    def from_dict(cls, data: dict, source: str = "model spec") -> ModelSpec:
        """The spec in ``data`` (JSON read from ``source``), its fields' types checked."""
        name = data.get("name") if isinstance(data, dict) else None
        if not isinstance(name, str) or not name or len(name) > 200:
            raise CompressError(f"{source}: the model spec must be an object with a 'name' string, e.g. "
                                '{"name": "resnet18", "num_classes": 10, "kwargs": {}}: save the model again')
        kwargs = data.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise CompressError(f"{source}: the model spec's 'kwargs' must be an object: save the model again")
        return cls(name, check_num_classes(data.get("num_classes"), source), dict(kwargs))


def classification_models() -> list[str]:
    """Names of torchvision's image classification models."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _torchvision_model(name: str, weights: str | None, num_classes: int | None) -> nn.Module:
    if name not in classification_models():
        known = [*MODEL_NAMES, *classification_models()]
        close = difflib.get_close_matches(name.lower(), known, n=5, cutoff=0.7)
        close += [m for m in known if name.lower()[:4] in m and m not in close][:5 - len(close)]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise CompressError(
            f"unknown model {name!r}{hint}: use a torchvision classification model name, one of "
            f"{', '.join(MODEL_NAMES)} (CIFAR ResNets) or package.module:function"
        )
    kwargs: dict = {}
    if name in _NO_AUX:
        kwargs["aux_logits"] = False
        kwargs["init_weights"] = True
    if weights is None:
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        return torchvision.models.get_model(name, weights=None, **kwargs)
    w = torchvision_weights(name, weights)
    kwargs.pop("init_weights", None)
    try:
        with local_rank_zero_first():  # under torchrun one download per machine, not one per process
            model = torchvision.models.get_model(name, weights=w, **kwargs)
    except (OSError, RuntimeError) as exc:  # urllib errors are OSErrors
        raise CompressError(
            f"could not load torchvision weights {w} ({type(exc).__name__}: {exc}); "
            "download them into the torch hub cache first, or pass a state_dict file"
        ) from None
    if num_classes is not None and num_classes != len(w.meta["categories"]):
        replace_classifier(model, num_classes)
    return model


def torchvision_weights(name: str, weights: str):
    """The weights enum member ``weights`` (``DEFAULT``, ``IMAGENET1K_V2``) of torchvision model ``name``."""
    enum = torchvision.models.get_model_weights(name)
    try:
        return enum[weights] if weights != "DEFAULT" else enum.DEFAULT
    except KeyError:
        options = ", ".join(["DEFAULT"] + [w.name for w in enum])
        raise CompressError(f"unknown weights {weights!r} for {name}: use one of {options}") from None


def _import_builder(spec: str, search_cwd: bool = False) -> Callable:
    """The function ``package.module:function`` names; with ``search_cwd`` the module may also come
    from the current directory (searched after the Python path)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise CompressError(f"model {spec!r} is not package.module:function")
    try:
        with _cwd_on_path(search_cwd):
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name != exc.name and not module_name.startswith(exc.name + "."):
            raise CompressError(f"importing {module_name!r} for model {spec!r} failed: it imports {exc.name!r}, "
                                "which cannot be found: install it or add its folder to PYTHONPATH") from None
        where = (f"the current directory ({Path.cwd()}) and the Python path" if search_cwd else
                 "the Python path only (a model spec read from a file is never imported from the current directory)")
        raise CompressError(f"cannot import {module_name!r} for model {spec!r}: looked in {where}; "
                            "check the name, or add its folder to PYTHONPATH") from None
    except Exception as exc:  # noqa: BLE001 - the user's module itself is broken
        raise CompressError(
            f"importing {module_name!r} failed ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
            "fix the module"
        ) from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise CompressError(f"{module_name!r} has no callable {attr!r}; check the model spec {spec!r}")
    return fn


@contextmanager
def _cwd_on_path(search_cwd: bool):
    """With ``search_cwd``, the current directory at the end of ``sys.path`` while inside (so it
    never shadows an installed module); else nothing."""
    entry = str(Path.cwd())
    added = search_cwd and entry not in sys.path
    if added:
        sys.path.append(entry)
        importlib.invalidate_caches()  # the folder may have changed since it was last listed
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


def _call_builder(fn: Callable, label: str, num_classes: int | None, kwargs: dict) -> nn.Module:
    """``fn(**kwargs)``, given ``num_classes`` if it takes it (else its classifier is swapped)."""
    try:
        takes_classes = "num_classes" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        takes_classes = False
    kwargs = dict(kwargs)
    if takes_classes and num_classes is not None:
        kwargs["num_classes"] = num_classes
    try:
        model = fn(**kwargs)
    except TypeError as exc:
        raise CompressError(
            f"{label} could not be called with {sorted(kwargs) or 'no arguments'} ({exc}); the function must "
            "build the model from num_classes alone (give its other arguments defaults)"
        ) from None
    if not isinstance(model, nn.Module):
        raise CompressError(f"{label} returned {type(model).__name__}, not a torch.nn.Module: "
                            "make the function return the model")
    if num_classes is not None and not takes_classes:
        replace_classifier(model, num_classes)
    return model


def _shrinkcnn(num_classes: int | None, kwargs: dict, where: str) -> nn.Module:
    from .networks.shrinkcnn import shrinkcnn_from_spec

    return shrinkcnn_from_spec(num_classes, kwargs, where)


# Built-in networks a user types by a short name (``--model resnet56``), with the spec name they are
# stored by: an artifact names the builder in full, so no torchvision name can ever shadow it.
MODEL_NAMES = {f"resnet{d}": f"compressor.networks.cifar_resnet:resnet{d}" for d in CIFAR_DEPTHS}


def native_input_shape(name: str) -> tuple[int, int, int] | None:
    """The input a built-in network was designed for (the CIFAR ResNets: 3x32x32), else None."""
    return (3, 32, 32) if name in MODEL_NAMES or name in MODEL_NAMES.values() else None

# Our own builders, by name: a spec naming one loads without opt-in (the name is a key here, never
# imported); each checks the kwargs it is given. "compressor.nas.shrinkcnn:shrinkcnn" is the name
# artifacts written before the network moved to compressor.networks carry.
BUILTINS: dict[str, Callable[[int | None, dict, str], nn.Module]] = {
    "compressor.networks.shrinkcnn:shrinkcnn": _shrinkcnn,
    "compressor.nas.shrinkcnn:shrinkcnn": _shrinkcnn,
    **{MODEL_NAMES[f"resnet{d}"]: partial(cifar_resnet_from_spec, d) for d in CIFAR_DEPTHS},
}


def build_model(spec: ModelSpec, weights: str | None = None, *, trust_code: bool = False,
                model_fn: Callable | None = None, origin: str | None = None, search_cwd: bool = False) -> nn.Module:
    """Build the model a spec names, optionally with torchvision weights (``DEFAULT``, ...).

    ``model_fn``, when given, builds the model instead of the spec's name: it gets num_classes if
    it takes it, and the spec's kwargs only with ``trust_code``. A ``package.module:function``
    spec that is not built in is imported only with ``trust_code``, from the current directory as
    well only with ``search_cwd`` (a name the user typed, never one read from a file). ``origin``
    names the file the spec came from, for errors.
    """
    where = origin or "model spec"
    num_classes = check_num_classes(spec.num_classes, where)
    if model_fn is not None:
        if not callable(model_fn):
            raise CompressError(f"model_fn {model_fn!r} is not callable: pass the function that builds the model")
        return _call_builder(model_fn, "model_fn", num_classes, spec.kwargs if trust_code else {})
    name = MODEL_NAMES.get(spec.name, spec.name)
    if name in BUILTINS:
        if weights is not None:
            raise CompressError(f"model {name.rpartition(':')[2]!r} has no torchvision weights (got {weights!r}): "
                                "train it from scratch (no --weights) or pass a state_dict file")
        return BUILTINS[name](num_classes, spec.kwargs, where)
    if ":" in spec.name:
        if not trust_code:
            raise CompressError(f"{where} names model {spec.name!r}, user code that is imported only when you "
                                f"trust its source: {_OPT_IN}")
        with _cwd_on_path(search_cwd):  # the builder may import its neighbours as it runs
            return _call_builder(_import_builder(spec.name, search_cwd), repr(spec.name), num_classes, spec.kwargs)
    if spec.kwargs:
        raise CompressError(f"{where} gives kwargs {sorted(spec.kwargs)} for torchvision model {spec.name!r}, "
                            "which is built from num_classes alone: remove its 'kwargs'")
    return _torchvision_model(spec.name, weights, num_classes)


def load_state_file(path: str | Path) -> dict:
    """Read a state_dict file with ``weights_only=True``; unwrap ``{"state_dict": ...}``."""
    path = Path(path)
    if not path.is_file():
        raise CompressError(f"weights file {str(path)!r} does not exist: give a state_dict file or a "
                            "torchvision weights name such as DEFAULT")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):
            raise CompressError(f"{path} is not a readable PyTorch checkpoint (corrupt, truncated or not written by "
                                "torch.save): save it again with torch.save(model.state_dict(), path)") from None
        raise CompressError(
            f"{path} needs code to load (it holds pickled objects, not only tensors); refused because weights are "
            "read with weights_only=True: save model.state_dict() with torch.save and pass that file"
        ) from None
    except Exception:  # noqa: BLE001 - a damaged file fails anywhere in the unpickler
        raise CompressError(f"{path} is not a readable PyTorch checkpoint (corrupt, truncated or not written by "
                            "torch.save): save it again with torch.save(model.state_dict(), path)") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CompressError(f"{path} does not hold a state_dict (a dict of tensors)")
    return state


def load_weights_into(model: nn.Module, state: dict, source: str) -> None:
    """Load ``state`` strictly; a mismatch, an integer tensor for a float one or a NaN/Inf value is
    a CompressError naming the first offending key."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        if wrong:
            k = wrong[0]
            what = f"{k} has shape {tuple(state[k].shape)}, the model wants {tuple(own[k].shape)}"
        elif missing:
            what = f"{len(missing)} keys are missing, e.g. {missing[0]}"
        else:
            what = f"{len(unexpected)} keys are unexpected, e.g. {unexpected[0]}"
        raise CompressError(
            f"weights {source} do not fit the model: {what}; check --model and --num-classes"
        )
    _check_values(own, state, source)
    model.load_state_dict(state)


def _check_values(own: dict, state: dict, source: str) -> None:
    for key, want in own.items():
        have = state[key]
        if want.is_floating_point() and not have.is_floating_point():
            raise CompressError(
                f"weights {source} store {key} as {str(have.dtype).replace('torch.', '')}, the model needs "
                f"floating point ({str(want.dtype).replace('torch.', '')}): save the float state_dict "
                "(model.state_dict() before any integer cast or quantization)"
            )
        if have.is_floating_point() and not bool(torch.isfinite(have).all()):
            raise CompressError(
                f"weights {source} hold NaN/Inf values in {key}: the model that wrote them diverged "
                "(or the file is damaged); use weights saved before it diverged"
            )


def resolve_model(
    name: str, weights: str | None = None, num_classes: int | None = None, kwargs: dict | None = None, *,
    trust_code: bool = False, origin: str | None = None, search_cwd: bool = False,
) -> tuple[nn.Module, ModelSpec, bool]:
    """Build the model and load its weights.

    ``trust_code`` allows importing a ``package.module:function`` name: pass it for a name the
    user typed, never for one read from a file they did not vouch for (``origin`` names that file
    in errors). ``search_cwd`` (with ``trust_code``) also finds the module in the current
    directory: only for a name typed on the command line. Returns the model, the spec that
    rebuilds it, and whether it is ready to teach: weights were loaded and its classifier was not
    replaced for a different number of classes.
    """
    spec = ModelSpec(MODEL_NAMES.get(name, name), num_classes, dict(kwargs or {}))  # short names stored in full
    is_file = weights is not None and (Path(weights).suffix in {".pt", ".pth", ".bin", ".ckpt"}
                                       or Path(weights).exists())
    model = build_model(spec, None if is_file else weights, trust_code=trust_code, origin=origin,
                        search_cwd=search_cwd)
    trained = weights is not None
    if is_file:
        load_weights_into(model, load_state_file(weights), weights)
    elif weights is not None and num_classes is not None:
        trained = _num_outputs(model) == num_classes
    return model.eval(), spec, trained


def _num_outputs(model: nn.Module) -> int:
    name = classifier_layer(model, (3, 224, 224))
    layer = model.get_submodule(name)
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def classifier_layer(model: nn.Module, input_shape) -> str:
    """Name of the layer that produces the logits: the last Conv/Linear run in the forward pass."""
    order: list[str] = []
    hooks = [
        m.register_forward_hook(lambda mod, i, o, n=n: order.append(n))
        for n, m in model.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape))
    except Exception:  # noqa: BLE001 - the model may only run at its own input size
        order = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    finally:
        for h in hooks:
            h.remove()
    if not order:
        raise CompressError("the model has no Conv2d or Linear layer to compress")
    return order[-1]


def replace_classifier(model: nn.Module, num_classes: int, input_shape=(3, 224, 224)) -> None:
    """Swap the logits layer for a freshly initialised one with ``num_classes`` outputs."""
    name = classifier_layer(model, input_shape)
    old = model.get_submodule(name)
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    else:
        new = nn.Conv2d(old.in_channels, num_classes, old.kernel_size, old.stride, old.padding,
                        bias=old.bias is not None)
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)
    log.info("replaced classifier %s: %d classes", name, num_classes)
