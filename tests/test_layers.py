"""Imports run one way: compressor → exporters → profiles → compress_base, and inside compressor
from the top layer down (docs/ARCHITECTURE.md). Every import counts, lazy ones included: a lazy
import up is still a dependency up."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ["compress_base", "profiles", "exporters", "compressor"]  # each may import those before it

# Inside compressor: a module may import its own layer and the layers before it.
LAYERS = [
    ("base", ["units", "progress", "runtime", "distributed", "manifest"]),
    ("engine", ["architecture", "blocks", "space", "costs", "budget", "surgery", "counting", "models", "networks",
                "artifact"]),
    ("training", ["data", "image_files", "idx", "preprocess", "train", "resume"]),
    ("search", ["search", "latency", "nas"]),
    ("report", ["run_report", "report_checks", "report_uncertainty", "report_warnings", "report_summary",
                "report_content", "report_plots", "report_run_plots", "report", "report_html", "report_sections",
                "report_page", "merge", "merge_render"]),
    ("run", ["settings", "resolution", "rundir", "run_state", "executor", "stages", "target", "pipeline", "api"]),
    # the package's __init__ is the public facade (compressor.load, compressor.compress)
    ("cli", ["cli", "cli_support", "__main__", "__init__"]),
]
RANK = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}


def _modules(package: str):
    return sorted((REPO / package).rglob("*.py"))


def _imports(path: Path, package: str) -> list[str]:
    """Absolute dotted names of everything ``path`` imports (relative imports resolved)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    here = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                found += [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            else:
                found.append(node.module)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_down_only(package):
    above = PACKAGES[PACKAGES.index(package) + 1:]
    bad = [(str(p.relative_to(REPO)), name) for p in _modules(package) for name in _imports(p, package)
           if name.split(".")[0] in above]
    assert not bad, f"{package} imports a package above it: {bad}"


def _layer_of(dotted: str) -> int | None:
    parts = dotted.split(".")
    if parts[0] != "compressor":
        return None
    module = parts[1] if len(parts) > 1 else "__init__"
    is_module = (REPO / "compressor" / module).is_dir() or (REPO / "compressor" / f"{module}.py").is_file()
    return RANK[module if is_module else "__init__"]  # `from . import __version__` is the package's


def test_every_compressor_module_has_a_layer():
    names = {p.relative_to(REPO / "compressor").parts[0].removesuffix(".py") for p in _modules("compressor")}
    assert names <= set(RANK), f"modules without a layer in this test and docs/ARCHITECTURE.md: {names - set(RANK)}"


def test_compressor_layers_import_down_only():
    bad = []
    for path in _modules("compressor"):
        own = _layer_of(".".join(path.relative_to(REPO).with_suffix("").parts))
        for name in _imports(path, "compressor"):
            if name == "compressor.__version__":  # a constant, not a dependency
                continue
            layer = _layer_of(name)
            if layer is not None and layer > own:
                bad.append(f"{path.relative_to(REPO)} ({LAYERS[own][0]}) imports {name} ({LAYERS[layer][0]})")
    assert not bad, "\n".join(bad)
