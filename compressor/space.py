"""The search space of a model: coupled channel groups and removable residual blocks.

``SearchSpace.build`` traces the model once at the deployment input shape. Torch-Pruning's
dependency graph gives the coupled channel groups (every layer whose channels must shrink
together); ``torch.fx`` finds the residual blocks that may be dropped. Channels of each group are
ranked by importance (group L1 norm) so that a width keeps the most important ones. Layers the
user keeps (``keep``: module names or fnmatch patterns, Torch-Pruning's ``ignored_layers``) fix
every group touching them and every block holding them.

From the same trace the space records, for every parameter tensor and every convolution or linear
layer, how its size depends on the group widths. That is what lets :class:`~compressor.costs.CostModel`
count MACs and params of any architecture in closed form, without building it.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from compress_base.errors import CompressError

from . import __version__
from .architecture import Architecture
from .blocks import ResidualBlock, find_residual_blocks
from .costs import CostModel, CostTables
from .counting import count_macs
from .models import classifier_layer

log = logging.getLogger(__name__)

@dataclass
class Coupling:
    """Channels ``idxs`` of one layer dimension follow channels ``root_idxs`` of a group."""

    group: int
    idxs: np.ndarray
    root_idxs: np.ndarray


@dataclass
class ChannelGroup:
    """Channels that must be pruned together, with the widths a search may choose."""

    name: str  # the root layer, whose output channels define the group
    channels: int
    choices: tuple[int, ...]  # ascending; a single value means the group is fixed
    ranking: np.ndarray  # root channel indices, most important first
    importance: np.ndarray  # importance in ranking order, summing to 1
    members: list[str]
    fixed_reason: str | None = None
    layers: tuple[str, ...] = ()  # the Conv2d/Linear layers whose output channels it sets, in forward order
    position: int = 0  # forward order of its first layer among the model's Conv2d/Linear layers

    @property
    def is_decision(self) -> bool:
        return len(self.choices) > 1

    def keep(self, width: int) -> np.ndarray:
        """Root channel indices kept at ``width``, most important first."""
        return self.ranking[:width]

    def nearest(self, ratios: Sequence[float], with_full: bool = False) -> tuple[int, ...]:
        """The choices nearest ``ratio * channels`` for each ratio (plus the full width when
        ``with_full``), deduplicated and ascending: the widths a searcher lets this group take."""
        found = {round_width(self.channels, float(r), self.choices) for r in ratios}
        if with_full:
            found.add(self.channels)
        return tuple(sorted(found))


@dataclass
class Decision:
    """One choice a searcher makes: a group's width or a block's keep flag."""

    name: str
    kind: str  # "width" or "block"
    choices: tuple  # widths ascending, or (False, True)


def _choices(channels: int, multiple: int, min_ratio: float) -> tuple[int, ...]:
    lo = max(multiple, int(math.ceil(channels * min_ratio / multiple)) * multiple)
    grid = [w for w in range(lo, channels, multiple)]
    return tuple(grid + [channels])


def round_width(channels: int, ratio: float, choices: tuple[int, ...]) -> int:
    """The choice closest to ``ratio * channels`` (ties go to the wider)."""
    target = ratio * channels
    return min(choices, key=lambda c: (abs(c - target), -c))


def notch_ratios(notch: float) -> tuple[float, ...]:
    """``1, 1 - notch, 1 - 2 notch, ...`` down to the last positive ratio (rounded to 9 decimals,
    so that 1 - 7 * 0.1 is 0.3, not 0.29999999999999993)."""
    if not 0.0 < notch <= 1.0:
        raise CompressError(f"notch {notch!r} must lie in (0, 1], e.g. 0.1")
    ratios = []
    while (r := round(1.0 - len(ratios) * notch, 9)) > 1e-9:
        ratios.append(r)
    return tuple(ratios)


@dataclass
class SearchSpace:
    """Decisions of one model at one deployment input shape, and the tables to cost them."""

    groups: list[ChannelGroup]
    blocks: list[ResidualBlock]
    input_shape: tuple[int, int, int]
    fingerprint: dict
    couplings: dict[tuple[str, str], list[Coupling]]  # (layer or parameter name, "out"/"in")
    unwrapped: dict[str, int]  # raw nn.Parameters Torch-Pruning prunes, with their channel dim
    classifier: str
    cost: CostModel
    fixed_layers: list[dict] = field(default_factory=list)

    # ------------------------------------------------------------------ building
    @classmethod
    def build(
        cls,
        model: nn.Module,
        input_shape,
        model_name: str = "model",
        channel_multiple: int = 8,
        min_ratio: float = 0.1,
        keep: Sequence[str] = (),
    ) -> SearchSpace:
        """Trace ``model`` (eval mode, batch 1) and derive its decisions and cost tables.

        ``keep`` (module names or fnmatch patterns such as ``layer4.*``; a module kept keeps all
        inside it) fixes every channel group touching a kept layer and keeps every residual block
        holding one; each is listed in ``fixed_layers``. A pattern matching no module is a CompressError.
        """
        model.eval()
        input_shape = tuple(int(s) for s in input_shape)
        keeping = _keeper(model, tuple(keep), model_name)
        example = torch.zeros(1, *input_shape)
        shapes, positions = _trace_shapes(model, example)
        classifier = classifier_layer(model, input_shape)
        fixed_layers: list[dict] = []
        blocks = []
        for block in find_residual_blocks(model, shapes):
            pattern = next(filter(None, (keeping(n) for n, _ in model.get_submodule(block.name).named_modules(
                prefix=block.name))), None)
            if pattern is None:
                blocks.append(block)
            else:
                fixed_layers.append({"layers": [block.name], "reason": f"kept (--keep {pattern}): the residual "
                                     "block stays"})
        groups: list[ChannelGroup] = []
        couplings: dict[tuple[str, str], list[Coupling]] = {}
        unwrapped: dict[str, int] = {}
        try:
            graph = dependency_graph(model, example)
        except Exception as exc:  # noqa: BLE001 - Torch-Pruning cannot follow some graphs
            graph = None
            fixed_layers.append({"layers": ["*"], "reason": f"Torch-Pruning could not trace the model's "
                                 f"channel dependencies ({type(exc).__name__}: {exc}); all widths stay fixed"})
            log.warning("all channel widths stay fixed: %s", fixed_layers[-1]["reason"])
        if graph is not None:
            unwrapped = {graph._param_to_name[p]: dim for p, dim in graph.unwrapped_parameters}
            groups, couplings = _channel_groups(graph, model, classifier, channel_multiple, min_ratio, fixed_layers,
                                                keeping, {name: i for i, name in enumerate(positions)})
        kept = [e for e in fixed_layers if e["reason"].startswith("kept (")]
        if kept:
            log.info("--keep fixes %d channel groups and residual blocks", len(kept))
        partial = [e for e in fixed_layers if e["layers"] != ["*"] and e not in kept]
        if partial:
            log.warning("%d channel groups (%d layers) stay fixed, e.g. %s: %s", len(partial),
                        sum(len(e["layers"]) for e in partial), partial[0]["layers"][0], partial[0]["reason"])
        fingerprint = {
            "model": model_name,
            "input_shape": list(input_shape),
            "num_classes": _num_outputs(model, example),
            "channel_multiple": channel_multiple,
            "min_ratio": min_ratio,
            "compressor": __version__,
        }
        if keep:  # the space depends on it: loading rebuilds it with the same patterns
            fingerprint["keep"] = list(keep)
        tables = CostTables.from_model(model, groups, couplings, unwrapped, positions, blocks)
        space = cls(groups, blocks, input_shape, fingerprint, couplings, unwrapped, classifier,
                    CostModel(tables), fixed_layers)
        space.cost.calibrate_extra(count_macs(model, input_shape))
        return space

    # ------------------------------------------------------------------ decisions
    @property
    def decision_groups(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.is_decision]

    def decisions(self) -> list[Decision]:
        """Every decision: width of each non-fixed channel group, keep/drop of each block."""
        out = [Decision(g.name, "width", g.choices) for g in self.decision_groups]
        out += [Decision(b.name, "block", (False, True)) for b in self.blocks]
        return out

    def architecture(self, widths: dict | None = None, blocks: dict | None = None) -> Architecture:
        """An architecture with the given values; everything unspecified stays full."""
        w = {g.name: g.channels for g in self.decision_groups}
        w.update(widths or {})
        k = {b.name: True for b in self.blocks}
        k.update(blocks or {})
        return Architecture(w, k, dict(self.fingerprint))

    def full(self) -> Architecture:
        """The unpruned model."""
        return self.architecture()

    def smallest(self) -> Architecture:
        """Every group at its narrowest choice and every removable block dropped."""
        return self.architecture({g.name: g.choices[0] for g in self.decision_groups},
                                 {b.name: False for b in self.blocks})

    def width_table(self, ratios: Sequence[float], with_full: bool = False) -> dict[str, tuple[int, ...]]:
        """The one table of candidate widths: for every decision group, its choices nearest
        ``ratios`` of its channels (:meth:`ChannelGroup.nearest`). TAS (ratios 0.3..1 with the full
        width), ASNG (0.1..1) and AutoShrink (notches, :func:`notch_ratios`) search over it."""
        return {g.name: g.nearest(ratios, with_full) for g in self.decision_groups}

    def uniform(self, ratio: float) -> Architecture:
        """Every group at the choice nearest ``ratio`` of its width; all blocks kept."""
        return self.architecture({g.name: round_width(g.channels, ratio, g.choices) for g in self.decision_groups})

    def check(self, arch: Architecture) -> None:
        """Raise CompressError unless ``arch`` belongs to this space."""
        fp = arch.fingerprint
        for key in ("model", "input_shape", "num_classes"):
            if key in fp and fp[key] != self.fingerprint[key]:
                raise CompressError(
                    f"architecture was made for {key}={fp[key]!r}, this model has "
                    f"{self.fingerprint[key]!r}: search again for this model"
                )
        names = {g.name: g for g in self.decision_groups}
        if set(arch.widths) != set(names) or set(arch.blocks) != {b.name for b in self.blocks}:
            raise CompressError("architecture does not list this model's decisions: search again for this model")
        for name, width in arch.widths.items():
            if width not in names[name].choices:
                raise CompressError(f"width {width} of group {name} is not one of its choices")

    def encode(self, arch: Architecture) -> tuple[np.ndarray, np.ndarray]:
        """Width of every group (fixed ones included) and keep flag of every block, as arrays."""
        widths = np.array([arch.widths.get(g.name, g.channels) for g in self.groups], dtype=np.int64)
        kept = np.array([arch.blocks.get(b.name, True) for b in self.blocks], dtype=bool)
        return widths, kept

    # ------------------------------------------------------------------ costs
    def macs(self, arch: Architecture) -> int:
        """MACs of ``arch`` at the deployment input shape, in closed form."""
        return self.cost.macs(*self.encode(arch))

    def params(self, arch: Architecture) -> int:
        """Parameters of ``arch``, in closed form."""
        return self.cost.params(*self.encode(arch))

    def describe(self) -> dict:
        """Plain-data summary for ``compress inspect`` and reports."""
        full = self.full()
        return {
            "fingerprint": self.fingerprint,
            "macs": self.macs(full),
            "params": self.params(full),
            "smallest_macs": self.macs(self.smallest()),
            "classifier": self.classifier,
            "groups": [  # every channel group in forward order, the fixed ones with why
                {"name": g.name, "layers": list(g.layers), "channels": g.channels,
                 "choices": [g.choices[0], g.choices[-1], len(g.choices)], "members": len(g.members),
                 "fixed": g.fixed_reason}
                for g in sorted(self.groups, key=lambda g: g.position)
            ],
            "blocks": [{"name": b.name, "after_drop": b.post or "identity"} for b in self.blocks],
            "fixed_layers": self.fixed_layers,
        }


# ---------------------------------------------------------------------- tracing helpers
class _SortedLayerNormPruner(tp.pruner.function.LayernormPruner):
    """Torch-Pruning 1.6's LayerNorm pruner keeps channels in set order (``tensor.sort()`` is not
    in place), which scrambles weights once a group keeps few channels; this one keeps them sorted."""

    def prune_out_channels(self, layer: nn.Module, idxs) -> nn.Module:
        dim = self.pruning_dim
        if len(layer.normalized_shape) < -dim:
            return layer
        n = layer.normalized_shape[dim]
        keep = torch.tensor(sorted(set(range(n)) - {int(i) for i in idxs}), dtype=torch.long)
        if layer.elementwise_affine:
            layer.weight = self._prune_parameter_and_grad(layer.weight, keep, dim)
            if layer.bias is not None:
                layer.bias = self._prune_parameter_and_grad(layer.bias, keep, dim)
        shape = list(layer.normalized_shape)
        shape[dim] = len(keep)
        layer.normalized_shape = tuple(shape)
        return layer

    prune_in_channels = prune_out_channels


def dependency_graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``model``, with our fixes to its layer pruners."""
    norms = {type(m) for m in model.modules() if isinstance(m, nn.LayerNorm)}
    with torch.enable_grad():
        return tp.DependencyGraph().build_dependency(
            model, example, verbose=False, customized_pruners={t: _SortedLayerNormPruner() for t in norms}
        )


def _trace_shapes(model: nn.Module, example: torch.Tensor):
    """Input/output shapes of every module, and output positions of every Conv2d/Linear layer."""
    shapes: dict[str, tuple] = {}
    positions: dict[str, int] = {}

    def hook(name):
        def fn(mod, inputs, output):
            if inputs and isinstance(inputs[0], torch.Tensor) and isinstance(output, torch.Tensor):
                shapes.setdefault(name, (tuple(inputs[0].shape), tuple(output.shape)))
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                channels = output.shape[1] if isinstance(mod, nn.Conv2d) else output.shape[-1]
                positions[name] = positions.get(name, 0) + output.numel() // channels
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model(example)
    except Exception as exc:  # noqa: BLE001 - the user's model does not run at this shape
        raise CompressError(
            f"the model does not run on an input of shape {tuple(example.shape[1:])} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); check --input-shape"
        ) from None
    finally:
        for h in handles:
            h.remove()
    return shapes, positions


def _num_outputs(model: nn.Module, example: torch.Tensor) -> int:
    with torch.no_grad():
        out = model(example)
    return int(out.shape[-1])


def _is_grouped(module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups > 1 and not (
        module.groups == module.in_channels == module.out_channels
    )


def _keeper(model: nn.Module, patterns: tuple[str, ...], model_name: str):
    """``keeping(name)``: the first of ``patterns`` matching the module or parameter ``name`` or a
    module it lies in, else None. A pattern matching no module is a CompressError."""
    names = [n for n, _ in model.named_modules() if n]
    for pattern in patterns:
        if not any(fnmatchcase(n, pattern) for n in names):
            top = next((n.partition(".")[0] for n in names if "." in n), None)
            example = " or ".join([*names[:1], *([f"{top}.*"] if top else [])])
            raise CompressError(f"--keep {pattern!r} matches no layer of {model_name}: give module names or patterns "
                                f"as `compress inspect` lists them (e.g. {example or 'conv1'})")

    def keeping(name: str) -> str | None:
        parts = name.split(".")
        prefixes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
        return next((p for p in patterns if any(fnmatchcase(n, p) for n in prefixes)), None)
    return keeping


def _channel_groups(graph, model, classifier, multiple, min_ratio, fixed_layers, keeping, order):
    """Channel groups and the per-layer couplings that map group channels to layer channels;
    ``keeping(name)`` names the --keep pattern that fixes a layer, ``order`` is the forward order
    of the Conv2d/Linear layers."""
    names = dict(graph._module2name)
    names.update(graph._param_to_name)
    importance = tp.importance.GroupMagnitudeImportance(p=1, group_reduction="sum", normalizer=None)
    groups: list[ChannelGroup] = []
    couplings: dict[tuple[str, str], list[Coupling]] = {}
    ignored = [model.get_submodule(classifier)]
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=(nn.Conv2d, nn.Linear)):
        root = names[group[0].dep.target.module]
        channels = len(group[0].idxs)
        items = []
        reason = None
        for item in group:
            target = item.dep.target.module
            if target not in names:
                continue  # Torch-Pruning's own op nodes (add, cat, reshape): no parameters
            role = "out" if graph.is_out_channel_pruning_fn(item.dep.handler) else "in"
            items.append((names[target], role, np.asarray(item.idxs), np.asarray(item.root_idxs)))
            if _is_grouped(target):
                reason = f"grouped convolution {names[target]} (groups={target.groups})"
            elif isinstance(target, nn.GroupNorm):
                reason = f"group norm {names[target]}"
        if reason:
            reason += ": Torch-Pruning cannot keep its channels consistent per group, so they stay fixed"
        # a kept layer's own output channels first, else the first kept layer (forward order) reading them
        kept_by = sorted((role == "in", order.get(name, len(order)), name, pattern)
                         for name, role, _, _ in items if (pattern := keeping(name)))
        if kept_by:
            reads, _, name, pattern = kept_by[0]
            reason = f"kept (--keep {pattern}: input of {name})" if reads else f"kept (--keep {pattern})"
        with torch.no_grad():
            scores = importance(group)
        if scores is None or len(scores) != channels:
            scores = torch.ones(channels)
        scores = scores.double().cpu().numpy()
        ranking = np.argsort(-scores, kind="stable")
        imp = scores[ranking]
        imp = imp / imp.sum() if imp.sum() > 0 else np.full(channels, 1.0 / channels)
        members = sorted({n for n, _, _, _ in items})
        layers = sorted({n for n, role, _, _ in items if role == "out" and n in order}, key=order.__getitem__)
        choices = (channels,) if reason else _choices(channels, multiple, min_ratio)
        if reason:
            fixed_layers.append({"layers": members, "reason": reason})
        gi = len(groups)
        groups.append(ChannelGroup(root, channels, choices, ranking, imp, members, reason, tuple(layers),
                                   order[layers[0]] if layers else len(order)))
        for name, role, idxs, root_idxs in items:
            couplings.setdefault((name, role), []).append(Coupling(gi, idxs, root_idxs))
    return groups, couplings
