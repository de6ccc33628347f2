"""Find removable residual blocks: modules whose output is ``input + branch(input)``.

A block may apply one parameter-free activation after the addition (ResNet's ``relu(x + f(x))``);
dropping the block then leaves that activation applied to the input. Detection reads the block's
``torch.fx`` graph, so it follows the code, not class names.
"""
from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

_ADD_FUNCS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_"}
_ACT_FUNCS = {F.relu: nn.ReLU, torch.relu: nn.ReLU, F.relu6: nn.ReLU6, F.silu: nn.SiLU,
              F.gelu: nn.GELU, F.hardswish: nn.Hardswish}


@dataclass(frozen=True)
class ResidualBlock:
    """A block that may be dropped; ``activation`` is what it leaves applied to its input."""

    name: str
    activation: nn.Module | None = field(default=None, compare=False, repr=False)

    @property
    def post(self) -> str | None:
        """Class name of the activation after the addition, or None."""
        return type(self.activation).__name__ if self.activation is not None else None

    def post_module(self) -> nn.Module:
        """A fresh module computing what remains of the block once it is dropped."""
        return copy.deepcopy(self.activation) if self.activation is not None else nn.Identity()


def _is_add(node: torch.fx.Node) -> bool:
    return (node.op == "call_function" and node.target in _ADD_FUNCS) or (
        node.op == "call_method" and node.target in _ADD_METHODS
    )


def residual_post(module: nn.Module) -> tuple[bool, nn.Module | None]:
    """Whether ``module`` computes ``[act](x + branch(x))``, and (a copy of) that activation."""
    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception:  # noqa: BLE001 - untraceable code simply is not a block we can drop
        return False, None
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    outputs = [n for n in graph.nodes if n.op == "output"]
    if len(inputs) != 1 or len(outputs) != 1 or not isinstance(outputs[0].args[0], torch.fx.Node):
        return False, None
    x, node, post = inputs[0], outputs[0].args[0], None
    if node.op == "call_module":
        sub = module.get_submodule(node.target)
        if any(True for _ in sub.parameters()) or len(node.args) != 1:
            return False, None
        post, node = copy.deepcopy(sub), node.args[0]
        if getattr(post, "inplace", False):
            post.inplace = False  # it will act on the block's input, which others may still read
    elif node.op == "call_function" and node.target in _ACT_FUNCS and len(node.args) == 1 and not node.kwargs:
        post, node = _ACT_FUNCS[node.target](), node.args[0]
    if not isinstance(node, torch.fx.Node) or not _is_add(node) or len(node.args) != 2:
        return False, None
    a, b = node.args
    if x not in (a, b) or a is b:
        return False, None
    return True, post


def find_residual_blocks(model: nn.Module, shapes: dict[str, tuple]) -> list[ResidualBlock]:
    """Removable blocks of ``model``; ``shapes`` maps module names to (input, output) shapes.

    A block qualifies when its code is ``[act](x + branch(x))`` and its output shape equals its
    input shape. The outermost qualifying module wins; nested ones are not listed.
    """
    found: list[ResidualBlock] = []
    for name, module in model.named_modules():
        if not name or not any(True for _ in module.children()):
            continue
        if any(name.startswith(b.name + ".") for b in found):
            continue
        io = shapes.get(name)
        if io is None or io[0] != io[1]:
            continue
        ok, post = residual_post(module)
        if ok:
            found.append(ResidualBlock(name, post))
    return found
