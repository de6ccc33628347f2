"""compressor.artifact: a compressed model saved as arch.json + a state_dict (no pickled modules)
and loaded back with compressor.load, on random architectures of many torchvision families."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

import compressor
from compress_base.errors import CompressError
from compressor import artifact
from compressor.architecture import Architecture
from compressor.surgery import DroppedBlock, materialize

from conftest import HEAVY_ZOO, SMALL_SHAPE, batch, max_abs_diff, random_architecture, zoo_params

pytestmark = pytest.mark.usefixtures("single_thread")


def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Change every float tensor (as fine-tuning would) so that a load that silently kept the
    rebuilt model's own weights could not pass."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]:
            t.mul_(1 + 0.05 * torch.randn(t.shape, generator=g).clamp(-4, 4))  # keeps variances > 0


@pytest.mark.parametrize("name", zoo_params((*HEAVY_ZOO, "resnext50_32x4d")))
def test_round_trip(zoo, tmp_path, name):
    entry = zoo(name)
    space = entry.space
    arch = random_architecture(space, seed=7)
    small = materialize(space, entry.model, arch)
    _perturb(small, 11)
    out = artifact.save(small, arch, entry.spec, tmp_path / "run")
    assert sorted(p.name for p in out.iterdir()) == ["arch.json", "model.pt"]

    # arch.json is plain JSON naming the model; model.pt is tensors only
    data = json.loads((out / "arch.json").read_text())
    assert data["fingerprint"]["spec"]["name"] == name
    assert data["fingerprint"]["input_shape"] == list(SMALL_SHAPE)
    assert data["widths"] == arch.widths and data["blocks"] == arch.blocks
    state = torch.load(out / "model.pt", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert set(state) == set(small.state_dict())

    loaded = compressor.load(out)
    assert not loaded.training
    x = batch()
    with torch.no_grad():
        assert max_abs_diff(loaded(x), small(x)) <= 1e-5
    assert sum(p.numel() for p in loaded.parameters()) == space.params(arch)
    for b in space.blocks:
        assert isinstance(loaded.get_submodule(b.name), DroppedBlock) != arch.blocks[b.name]


def test_load_from_weights_file_path(zoo, tmp_path):
    entry = zoo("resnet18")
    arch = random_architecture(entry.space, seed=2)
    small = materialize(entry.space, entry.model, arch)
    _perturb(small, 3)
    artifact.save(small, arch, entry.spec, tmp_path)
    loaded = artifact.load(tmp_path / "model.pt")
    x = batch()
    with torch.no_grad():
        assert torch.allclose(loaded(x), small(x), atol=1e-5, rtol=0)


@pytest.fixture
def saved(zoo, tmp_path):
    entry = zoo("resnet18")
    arch = entry.space.uniform(0.5)
    small = materialize(entry.space, entry.model, arch)
    return artifact.save(small, arch, entry.spec, tmp_path / "run")


@pytest.mark.parametrize("missing", ["arch.json", "model.pt"])
def test_missing_file(saved, missing):
    (saved / missing).unlink()
    with pytest.raises(CompressError) as info:
        compressor.load(saved)
    assert "arch.json" in str(info.value) and "model.pt" in str(info.value)


def test_missing_folder(tmp_path):
    with pytest.raises(CompressError):
        compressor.load(tmp_path / "nowhere")


def test_fingerprint_of_another_model(saved):
    """arch.json says it is for another model (its spec names resnet34): the resolved space's
    check refuses the architecture instead of building something wrong."""
    path = saved / "arch.json"
    data = json.loads(path.read_text())
    data["fingerprint"]["spec"]["name"] = "resnet34"
    data["fingerprint"].pop("model")
    path.write_text(json.dumps(data))
    with pytest.raises(CompressError) as info:
        compressor.load(saved)
    assert "search again" in str(info.value)


def test_fingerprint_with_other_classes(saved):
    path = saved / "arch.json"
    data = json.loads(path.read_text())
    data["fingerprint"]["num_classes"] = 10
    path.write_text(json.dumps(data))
    with pytest.raises(CompressError) as info:
        compressor.load(saved)
    assert "num_classes" in str(info.value)


def test_architecture_without_spec(saved):
    arch = Architecture.load(saved / "arch.json")
    fp = dict(arch.fingerprint)
    fp.pop("spec")
    Architecture(arch.widths, arch.blocks, fp).save(saved / "arch.json")
    with pytest.raises(CompressError) as info:
        compressor.load(saved)
    assert "spec" in str(info.value)


def test_weights_of_another_architecture(zoo, saved, tmp_path):
    """Swapping in model.pt of a different architecture fails naming a tensor, not deep in torch."""
    entry = zoo("resnet18")
    other = tmp_path / "other"
    arch = entry.space.uniform(0.25)
    artifact.save(materialize(entry.space, entry.model, arch), arch, entry.spec, other)
    shutil.copy(other / "model.pt", saved / "model.pt")
    with pytest.raises(CompressError) as info:
        compressor.load(saved)
    assert "has shape" in str(info.value)


def test_pickled_module_is_refused(zoo, saved):
    entry = zoo("resnet18")
    small = materialize(entry.space, entry.model, entry.space.uniform(0.5))
    torch.save(small, saved / "model.pt")  # a whole pickled module where a state_dict belongs
    with pytest.raises(CompressError) as info:
        compressor.load(saved)
    assert "state_dict" in str(info.value)


def test_save_leaves_no_temporary_files(saved):
    assert sorted(p.name for p in saved.iterdir()) == ["arch.json", "model.pt"]
