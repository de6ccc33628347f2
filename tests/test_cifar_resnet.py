"""The CIFAR ResNets (compressor/networks/cifar_resnet.py): sizes against He et al. 2016, names a
user types, and the same search space, surgery, artifact and ONNX parity as torchvision's models."""
from __future__ import annotations

import json

import pytest
import torch
import torchvision
from click.testing import CliRunner

import compressor
from compress_base.errors import CompressError
from compressor import artifact
from compressor.cli import main
from compressor.counting import count_macs, count_params
from compressor.models import BUILTINS, MODEL_NAMES, ModelSpec, build_model, resolve_model
from compressor.networks.cifar_resnet import cifar_resnet
from compressor.space import SearchSpace
from compressor.surgery import DroppedBlock, apply_masks, materialize
from exporters.onnx_export import export_onnx, verify_onnx

from conftest import batch, max_abs_diff, random_architecture, randomize_norms

pytestmark = pytest.mark.usefixtures("single_thread")

SHAPE = (3, 32, 32)
NAMES = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]


def _conv(cin, cout, k=3):
    return cin * cout * k * k


def _bn(c):
    return 2 * c


def _expected_macs(n: int, hw: int = 32, classes: int = 10) -> int:
    """MACs at batch 1 of resnet(6n+2) at hw x hw, by hand: convolutions and the classifier only."""
    s1, s2, s3 = hw * hw, (hw // 2) ** 2, (hw // 4) ** 2
    stem = s1 * _conv(3, 16)
    stage1 = 2 * n * s1 * _conv(16, 16)
    stage2 = s2 * (_conv(16, 32) + _conv(32, 32) + _conv(16, 32, 1)) + 2 * (n - 1) * s2 * _conv(32, 32)
    stage3 = s3 * (_conv(32, 64) + _conv(64, 64) + _conv(32, 64, 1)) + 2 * (n - 1) * s3 * _conv(64, 64)
    return stem + stage1 + stage2 + stage3 + 64 * classes


def test_resnet20_parameters_by_hand():
    stem = _conv(3, 16) + _bn(16)
    block16 = 2 * _conv(16, 16) + 2 * _bn(16)
    first32 = _conv(16, 32) + _conv(32, 32) + 2 * _bn(32) + _conv(16, 32, 1) + _bn(32)  # option B projection
    block32 = 2 * _conv(32, 32) + 2 * _bn(32)
    first64 = _conv(32, 64) + _conv(64, 64) + 2 * _bn(64) + _conv(32, 64, 1) + _bn(64)
    block64 = 2 * _conv(64, 64) + 2 * _bn(64)
    fc = 64 * 10 + 10
    want = stem + 3 * block16 + first32 + 2 * block32 + first64 + 2 * block64 + fc
    assert want == 272_474
    assert count_params(cifar_resnet(20)) == want


@pytest.mark.parametrize(("depth", "paper"), [(20, 0.27e6), (56, 0.85e6), (110, 1.7e6)])
def test_parameters_near_the_paper(depth, paper):
    params = count_params(cifar_resnet(depth))
    assert abs(params - paper) <= 0.03 * paper, params  # option B adds 2,752 parameters


@pytest.mark.parametrize(("depth", "n"), [(20, 3), (56, 9)])
def test_macs_closed_form(depth, n):
    assert count_macs(cifar_resnet(depth), SHAPE) == _expected_macs(n)


def test_names_registered_without_torchvision_clashes():
    assert not set(MODEL_NAMES) & set(torchvision.models.list_models())
    assert sorted(MODEL_NAMES, key=lambda m: int(m[6:])) == NAMES
    assert set(MODEL_NAMES.values()) <= set(BUILTINS)
    model, spec, trained = resolve_model("resnet56", num_classes=7)
    assert spec.name == "compressor.networks.cifar_resnet:resnet56" and not trained
    assert model.fc.out_features == 7 and len(model.layer3) == 9
    assert build_model(ModelSpec("resnet20")).fc.out_features == 10  # short names build too; 10 classes by default
    assert type(resolve_model("resnet18")[0]).__name__ == "ResNet"  # torchvision's names unchanged


def test_bad_requests_are_refused():
    with pytest.raises(CompressError, match="did you mean resnet56"):
        resolve_model("resnet57")
    with pytest.raises(CompressError, match="'resnet56' has no torchvision weights"):
        resolve_model("resnet56", "DEFAULT")
    with pytest.raises(CompressError, match="resnet20 takes no settings"):
        build_model(ModelSpec("compressor.networks.cifar_resnet:resnet20", 10, {"width": 2}))


@pytest.fixture(scope="module")
def resnet20():
    torch.manual_seed(0)
    model, spec, _ = resolve_model("resnet20")
    model = randomize_norms(model, seed=0, shape=SHAPE)
    return model, spec, SearchSpace.build(model, SHAPE, "resnet20")


def test_search_space(resnet20):
    model, _, space = resnet20
    # the blocks with identity shortcuts are removable; the two that downsample are not
    assert [b.name for b in space.blocks] == ["layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2",
                                              "layer3.1", "layer3.2"]
    assert all(b.post == "ReLU" for b in space.blocks)
    assert space.classifier == "fc" and not space.fixed_layers
    assert len(space.decision_groups) == 12  # 3 residual streams + 9 block interiors
    full = space.full()
    assert space.macs(full) == count_macs(model, SHAPE) == _expected_macs(3)
    assert space.params(full) == count_params(model)


def test_surgery_export_and_load_parity(resnet20, tmp_path):
    model, spec, space = resnet20
    arch = random_architecture(space, seed=3)
    assert not all(arch.blocks.values()) and any(arch.blocks.values())
    small = materialize(space, model, arch)
    x = batch(shape=SHAPE)
    with torch.no_grad():
        y_small = small(x)
        with apply_masks(space, model, arch):
            y_masked = model(x)
        y_full = model(x)
    assert max_abs_diff(y_small, y_masked) <= 1e-4
    assert max_abs_diff(y_small, y_full) > 1e-3  # the architecture changed the function
    assert count_macs(small, SHAPE) == space.macs(arch) < space.macs(space.full())
    assert count_params(small) == space.params(arch)
    for b in space.blocks:
        assert isinstance(small.get_submodule(b.name), DroppedBlock) != arch.blocks[b.name]

    path = export_onnx(small, SHAPE, tmp_path / "model.onnx")
    assert verify_onnx(small, path, SHAPE)["max_abs_diff"] <= 1e-4

    out = artifact.save(small, arch, spec, tmp_path / "run")
    saved = json.loads((out / "arch.json").read_text())["fingerprint"]["spec"]
    assert saved == {"name": "compressor.networks.cifar_resnet:resnet20", "num_classes": None, "kwargs": {}}
    loaded = compressor.load(out)  # a built-in spec: no trust_code, no model_fn
    with torch.no_grad():
        assert max_abs_diff(loaded(x), y_small) <= 1e-5


def test_inspect_command():
    result = CliRunner().invoke(main, ["inspect", "--model", "resnet56", "--input-shape", "3x32x32", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["macs"] == _expected_macs(9) and info["params"] == count_params(cifar_resnet(56))
    assert len(info["blocks"]) == 25  # 27 blocks, less the two that downsample
