"""Loading an artifact never runs code named in it, and every number read from it is checked first.

arch.json names the model to rebuild: torchvision names resolve through torchvision's registry,
the built-in ShrinkCNN through our own registry (its settings checked), and any other
``package.module:function`` only with ``model_fn=`` or ``trust_code=True``. Weights with NaN/Inf or
integer values for float tensors are refused, and model.pt is byte-reproducible.
"""
from __future__ import annotations

import json
import shutil
import sys
import textwrap

import pytest
import torch
from torch import nn

import compressor
from compress_base.errors import CompressError
from compressor import artifact
from compressor.architecture import Architecture
from compressor.models import ModelSpec, build_model, load_weights_into, resolve_model
from compressor.networks.shrinkcnn import SPEC_NAME, model_spec, shrinkcnn
from compressor.space import SearchSpace
from compressor.surgery import materialize

pytestmark = pytest.mark.usefixtures("single_thread")

SHAPE = (3, 16, 16)
USER_MODULE = "secload_user_nets"
USER_CODE = '''
from torch import nn


def tiny(num_classes=10, width=16):
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))
'''
EVIL_CODE = '''
from pathlib import Path
Path(__file__).with_name("IMPORTED").write_text("evil_mod ran")


def build(**kwargs):
    Path(__file__).with_name("CALLED").write_text("evil_mod ran")
'''


@pytest.fixture(scope="module")
def user_code(tmp_path_factory):
    """A user module on sys.path that builds a small two-conv network."""
    folder = tmp_path_factory.mktemp("usercode")
    (folder / f"{USER_MODULE}.py").write_text(textwrap.dedent(USER_CODE))
    sys.path.insert(0, str(folder))
    yield __import__(USER_MODULE)
    sys.path.remove(str(folder))
    sys.modules.pop(USER_MODULE, None)


def _save(model: nn.Module, spec: ModelSpec, out, ratio: float = 0.5):
    space = SearchSpace.build(model.eval(), SHAPE, spec.name)
    arch = space.uniform(ratio)
    small = materialize(space, model, arch)
    return artifact.save(small, arch, spec, out), small


@pytest.fixture(scope="module")
def user_artifact(user_code, tmp_path_factory):
    """A finished artifact of the user model (spec ``secload_user_nets:tiny`` with width 16)."""
    torch.manual_seed(0)
    spec = ModelSpec(f"{USER_MODULE}:tiny", 10, {"width": 16})
    out, small = _save(user_code.tiny(10, 16), spec, tmp_path_factory.mktemp("user") / "run")
    return out, small


@pytest.fixture(scope="module")
def nas_artifact(tmp_path_factory):
    """A finished artifact of a small ShrinkCNN (the built-in spec)."""
    torch.manual_seed(0)
    spec = model_spec([(0, 1), (1, 2), (0, 3)], 10, width=8, stem=8)
    out, small = _save(shrinkcnn(10, **spec.kwargs), spec, tmp_path_factory.mktemp("nas") / "run", ratio=1.0)
    return out, small


@pytest.fixture
def copy(tmp_path, user_artifact):
    """A fresh copy of the user artifact, to edit."""
    return shutil.copytree(user_artifact[0], tmp_path / "copy")


def _edit_arch(folder, edit) -> None:
    path = folder / "arch.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _set_spec(folder, spec: dict) -> None:
    _edit_arch(folder, lambda d: d["fingerprint"].__setitem__("spec", spec))


def _same_outputs(a: nn.Module, b: nn.Module) -> bool:
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.allclose(a.eval()(x), b.eval()(x), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- code named by a file
def test_code_spec_in_arch_json_is_refused(copy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _set_spec(copy, {"name": "subprocess:run", "num_classes": None,
                     "kwargs": {"args": "touch PWNED", "shell": True}})
    with pytest.raises(CompressError) as info:
        compressor.load(copy)
    msg = str(info.value)
    assert "\n" not in msg
    for words in ("'subprocess:run'", str(copy / "arch.json"), "model_fn=", "trust_code=True", "--trust-code"):
        assert words in msg
    assert not (tmp_path / "PWNED").exists()


def test_module_shipped_beside_the_artifact_is_not_imported(copy, monkeypatch):
    (copy / "evil_mod.py").write_text(textwrap.dedent(EVIL_CODE))
    monkeypatch.chdir(copy)
    monkeypatch.syspath_prepend(str(copy))  # as `python -c` run inside the folder would have it
    _set_spec(copy, {"name": "evil_mod:build", "num_classes": 10, "kwargs": {}})
    with pytest.raises(CompressError, match="evil_mod:build"):
        compressor.load(copy)
    assert "evil_mod" not in sys.modules
    assert not (copy / "IMPORTED").exists() and not (copy / "CALLED").exists()


def test_torchvision_spec_never_gets_file_kwargs(copy):
    _set_spec(copy, {"name": "resnet18", "num_classes": 10, "kwargs": {"weights": "DEFAULT"}})
    with pytest.raises(CompressError) as info:
        compressor.load(copy)
    assert "resnet18" in str(info.value) and "kwargs" in str(info.value)


@pytest.mark.parametrize("spec", [{"num_classes": 10}, {"name": 5}, {"name": ""}, {"name": "resnet18", "kwargs": [1]},
                                  "resnet18"])
def test_malformed_spec(copy, spec):
    _set_spec(copy, spec)
    with pytest.raises(CompressError, match="spec"):
        compressor.load(copy)


def test_trust_code_loads_the_user_model_with_its_kwargs(user_artifact):
    out, small = user_artifact
    with pytest.raises(CompressError, match="trust_code"):
        compressor.load(out)
    loaded = compressor.load(out, trust_code=True)
    assert _same_outputs(loaded, small)


def test_model_fn_gets_num_classes_and_never_file_kwargs(copy, user_artifact, user_code):
    calls = []

    def builder(num_classes, **kwargs):
        calls.append((num_classes, kwargs))
        return user_code.tiny(num_classes)

    _edit_arch(copy, lambda d: d["fingerprint"]["spec"]["kwargs"].update(evil="rm -rf /"))
    loaded = compressor.load(copy, model_fn=builder)
    assert calls == [(10, {})]
    assert _same_outputs(loaded, user_artifact[1])


def test_model_fn_without_num_classes(user_artifact, user_code):
    loaded = compressor.load(user_artifact[0], model_fn=lambda: user_code.tiny(10))
    assert _same_outputs(loaded, user_artifact[1])


def test_model_fn_that_is_not_callable(user_artifact):
    with pytest.raises(CompressError, match="model_fn"):
        compressor.load(user_artifact[0], model_fn="secload_user_nets:tiny")


def test_resolve_model_imports_user_code_only_when_trusted(user_code):
    with pytest.raises(CompressError, match="trust_code"):
        resolve_model(f"{USER_MODULE}:tiny", num_classes=3)
    model, spec, _ = resolve_model(f"{USER_MODULE}:tiny", num_classes=3, trust_code=True)
    assert spec.name == f"{USER_MODULE}:tiny" and model[-1].out_features == 3


# --------------------------------------------------------------------------- the built-in builder
def test_builtin_shrinkcnn_loads_without_opt_in(nas_artifact):
    out, small = nas_artifact
    assert json.loads((out / "arch.json").read_text())["fingerprint"]["spec"]["name"] == SPEC_NAME
    assert _same_outputs(compressor.load(out), small)


@pytest.mark.parametrize("kwargs, words", [
    ({"width": 10**6}, ["width", "1..128"]),
    ({"width": "16"}, ["width"]),
    ({"cells_per_stage": 0}, ["cells_per_stage"]),
    ({"stem": True}, ["stem"]),
    ({"scales": [1] * 100}, ["scales"]),
    ({"scales": [1, 2, 10**6]}, ["scales"]),
    ({"stem_stride": 3}, ["stem_stride"]),
    ({"edges": [[0, 99]]}, ["edge"]),
    ({"edges": [[0, 1]] * 1000}, ["edges"]),
    ({"edges": "0-1"}, ["edges"]),
    ({"nodes": 10**6}, ["nodes"]),
])
def test_builtin_shrinkcnn_settings_are_checked(kwargs, words):
    spec = model_spec([(0, 1), (1, 2)], 10, width=8, stem=8)
    bad = ModelSpec(spec.name, 10, {**spec.kwargs, **kwargs})
    with pytest.raises(CompressError) as info:
        build_model(bad, origin="x/arch.json")
    for w in words:
        assert w in str(info.value)


@pytest.mark.parametrize("name", [SPEC_NAME, "resnet18", f"{USER_MODULE}:tiny"])
def test_num_classes_is_bounded(name):
    with pytest.raises(CompressError, match="100000"):
        build_model(ModelSpec(name, 10**9), trust_code=True)


# --------------------------------------------------------------------------- numbers in arch.json
def _fingerprint(key, value):
    return lambda d: d["fingerprint"].__setitem__(key, value)


def _first_width(value):
    def edit(d):
        d["widths"][next(iter(d["widths"]))] = value
    return edit


@pytest.mark.parametrize("edit, words", [
    (_fingerprint("input_shape", [3, 100000, 100000]), ["input_shape", "4096"]),
    (_fingerprint("input_shape", [3, 64]), ["input_shape"]),
    (_fingerprint("input_shape", [0, 64, 64]), ["input_shape"]),
    (_fingerprint("input_shape", "3x64x64"), ["input_shape"]),
    (_fingerprint("num_classes", 10**9), ["num_classes", "100000"]),
    (lambda d: d["fingerprint"]["spec"].__setitem__("num_classes", 10**9), ["num_classes", "100000"]),
    (_fingerprint("channel_multiple", 0), ["channel_multiple"]),
    (_fingerprint("channel_multiple", -8), ["channel_multiple"]),
    (_fingerprint("channel_multiple", 2.5), ["channel_multiple"]),
    (_fingerprint("min_ratio", 0), ["min_ratio", "(0, 1]"]),
    (_fingerprint("min_ratio", 1.5), ["min_ratio"]),
    (_fingerprint("min_ratio", "0.1"), ["min_ratio"]),
    (_first_width(-8), ["width", "-8"]),
    (_first_width(0), ["width"]),
    (_first_width(2.5), ["width"]),
    (lambda d: d["fingerprint"].pop("input_shape"), ["input_shape"]),
])
def test_numbers_are_checked_before_building(copy, monkeypatch, edit, words):
    _edit_arch(copy, edit)
    monkeypatch.setattr(artifact, "build_model", lambda *a, **k: pytest.fail("built before checking"))
    with pytest.raises(CompressError) as info:
        compressor.load(copy, trust_code=True)
    msg = str(info.value)
    assert "arch.json" in msg and "\n" not in msg
    for w in words:
        assert w in msg


def test_width_larger_than_the_original_names_the_group(copy):
    _edit_arch(copy, _first_width(4096))
    with pytest.raises(CompressError, match="4096"):
        compressor.load(copy, trust_code=True)


def test_architecture_widths_must_be_positive_integers():
    with pytest.raises(CompressError, match="width"):
        Architecture.from_dict({"format": 1, "widths": {"a": -1}, "blocks": {}}, "a.json")


# --------------------------------------------------------------------------- weights
def _edit_weights(folder, edit) -> None:
    state = torch.load(folder / "model.pt", weights_only=True)
    edit(state)
    torch.save(state, folder / "model.pt")


def test_nan_weights_are_refused_at_load(copy):
    key = "0.weight"
    _edit_weights(copy, lambda s: s[key].view(-1)[0].fill_(float("nan")))
    with pytest.raises(CompressError) as info:
        compressor.load(copy, trust_code=True)
    msg = str(info.value)
    assert "NaN/Inf" in msg and key in msg and "diverged" in msg and "learning rate" not in msg


def test_inf_buffer_is_refused():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state["1.running_var"][2] = float("inf")
    with pytest.raises(CompressError, match=r"NaN/Inf values in 1\.running_var"):
        load_weights_into(net, state, "w.pt")


def test_integer_weights_for_float_tensors_are_refused(copy):
    key = "0.weight"
    _edit_weights(copy, lambda s: s.__setitem__(key, (s[key] * 100).to(torch.int8)))
    with pytest.raises(CompressError) as info:
        compressor.load(copy, trust_code=True)
    msg = str(info.value)
    assert key in msg and "int8" in msg and "float" in msg


def test_integer_buffers_that_are_integer_in_the_model_load():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    assert state["1.num_batches_tracked"].dtype == torch.int64
    load_weights_into(net, state, "w.pt")


# --------------------------------------------------------------------------- reproducible bytes
def test_model_pt_is_byte_reproducible(user_artifact, user_code, tmp_path):
    _, small = user_artifact
    arch = Architecture.load(user_artifact[0] / "arch.json")
    spec = ModelSpec(f"{USER_MODULE}:tiny", 10, {"width": 16})
    first = artifact.save(small, arch, spec, tmp_path / "a")
    second = artifact.save(small, arch, spec, tmp_path / "some" / "other-folder")
    assert (first / "model.pt").read_bytes() == (second / "model.pt").read_bytes()
    assert (first / "arch.json").read_bytes() == (second / "arch.json").read_bytes()
    state = torch.load(second / "model.pt", weights_only=True)
    assert set(state) == set(small.state_dict())
    assert sorted(p.name for p in second.iterdir()) == ["arch.json", "model.pt"]
