"""Tests for compressor.models: model specs, user factories, state_dict files, classifier swap."""
from __future__ import annotations

import textwrap

import pytest
import torch
from torch import nn

from compress_base.errors import CompressError
from compressor.models import (
    ModelSpec,
    build_model,
    classifier_layer,
    load_state_file,
    load_weights_into,
    replace_classifier,
    resolve_model,
)

pytestmark = pytest.mark.usefixtures("single_thread")

USER_MODULE = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        return self.head(self.features(x))


def tiny():
    """No num_classes argument: the library must swap the classifier itself."""
    return TinyNet()


def tiny_with_classes(num_classes=10):
    return TinyNet(num_classes)


def conv_head():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 10, 1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


def cifar_only():
    """Runs only at 3x32x32 (flatten -> linear), like many CIFAR models."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(8 * 16 * 16, 10))


def not_a_module():
    return {"weights": 1}


NOT_CALLABLE = 3
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    pkg = tmp_path / "usernets_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "usernets_pkg.nets"


def _tiny_state(classes=10) -> dict:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, classes))
    return net, {k: v.clone() for k, v in net.state_dict().items()}


# --------------------------------------------------------------------------- names and specs
def test_torchvision_name_builds_without_weights():
    model, spec, trained = resolve_model("resnet18", num_classes=7)
    assert spec == ModelSpec("resnet18", 7)
    assert trained is False  # random init: not fit to teach
    assert model.fc.out_features == 7
    assert not model.training


def test_googlenet_has_no_aux_heads():
    model = build_model(ModelSpec("googlenet"))
    assert model.aux1 is None and model.aux2 is None
    out = model.eval()(torch.zeros(1, 3, 64, 64))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 1000)


def test_spec_round_trips_through_dict():
    spec = ModelSpec("pkg.mod:fn", 5, {"width": 2})
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    assert ModelSpec.from_dict({"name": "resnet18"}) == ModelSpec("resnet18")


def test_unknown_model_name():
    with pytest.raises(CompressError) as info:
        resolve_model("resnet19x")
    msg = str(info.value)
    assert "resnet19x" in msg and "module:function" in msg.replace("package.module", "module")


def test_unknown_torchvision_weights_name():
    with pytest.raises(CompressError) as info:
        resolve_model("resnet18", weights="IMAGENET9K_V9")
    assert "IMAGENET1K_V1" in str(info.value)


@pytest.mark.parametrize(
    "spec, words",
    [
        ("no_such_module_xyz:net", ["no_such_module_xyz"]),
        ("usernets_pkg.nets:absent", ["absent"]),
        ("usernets_pkg.nets:NOT_CALLABLE", ["NOT_CALLABLE"]),
        ("usernets_pkg.nets:not_a_module", ["dict", "nn.Module"]),
        ("usernets_pkg.nets:", ["module:function"]),
    ],
)
def test_bad_user_spec(user_module, spec, words):
    with pytest.raises(CompressError) as info:
        resolve_model(spec, trust_code=True)
    for w in words:
        assert w in str(info.value)


def test_user_function(user_module):
    model, spec, trained = resolve_model(f"{user_module}:tiny", trust_code=True)
    assert trained is False
    assert spec.name == "usernets_pkg.nets:tiny"
    assert type(model).__name__ == "TinyNet" and model.head.out_features == 10
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 10)


def test_user_function_num_classes_replaces_classifier(user_module):
    torch.manual_seed(0)
    model, _, _ = resolve_model(f"{user_module}:tiny", num_classes=3, trust_code=True)
    assert isinstance(model.head, nn.Linear)
    assert (model.head.in_features, model.head.out_features) == (8, 3)
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 3)


def test_user_function_taking_num_classes_gets_it(user_module):
    model, _, _ = resolve_model(f"{user_module}:tiny_with_classes", num_classes=4, trust_code=True)
    assert model.head.out_features == 4


def test_conv_classifier_is_replaced(user_module):
    model, _, _ = resolve_model(f"{user_module}:conv_head", num_classes=6, trust_code=True)
    assert isinstance(model[2], nn.Conv2d) and model[2].out_channels == 6 and model[2].in_channels == 8
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 6)


def test_user_function_num_classes_for_model_with_fixed_input_size(user_module):
    model, _, _ = resolve_model(f"{user_module}:cifar_only", num_classes=5, trust_code=True)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 5)


def test_classifier_layer_and_replace():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 9))
    assert classifier_layer(net, (3, 8, 8)) == "4"
    replace_classifier(net, 2, (3, 8, 8))
    assert net[4].out_features == 2 and net[4].in_features == 4
    with pytest.raises(CompressError):
        classifier_layer(nn.Sequential(nn.ReLU()), (3, 8, 8))


# --------------------------------------------------------------------------- state_dict files
def test_load_state_file_round_trip(tmp_path):
    net, state = _tiny_state()
    path = tmp_path / "w.pt"
    torch.save(state, path)
    loaded = load_state_file(path)
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict", "model"])
def test_nested_state_dict(tmp_path, key):
    net, state = _tiny_state()
    path = tmp_path / "ckpt.pth"
    torch.save({key: state, "epoch": 3}, path)
    loaded = load_state_file(path)
    assert set(loaded) == set(state)
    assert torch.equal(loaded["2.weight"], state["2.weight"])


def test_pickled_module_is_refused(tmp_path):
    net, _ = _tiny_state()
    path = tmp_path / "whole_model.pt"
    torch.save(net, path)  # a pickled nn.Module, not a state_dict
    with pytest.raises(CompressError) as info:
        load_state_file(path)
    msg = str(info.value)
    assert "state_dict" in msg
    assert "weights" in msg.lower()


def test_corrupt_file(tmp_path):
    path = tmp_path / "w.pt"
    path.write_bytes(b"\x00\x01this is not a checkpoint" * 20)
    with pytest.raises(CompressError):
        load_state_file(path)


def test_truncated_file(tmp_path):
    net, state = _tiny_state()
    path = tmp_path / "w.pt"
    torch.save(state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CompressError) as info:
        load_state_file(path)
    assert "not a readable PyTorch checkpoint" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(CompressError) as info:
        load_state_file(tmp_path / "absent.pt")
    assert "does not exist" in str(info.value)


def test_not_a_dict_of_tensors(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"lr": 0.1, "epoch": 3}, path)
    with pytest.raises(CompressError) as info:
        load_state_file(path)
    assert "state_dict" in str(info.value)


def test_wrong_shapes_name_the_key():
    _, state = _tiny_state(classes=10)
    other, _ = _tiny_state(classes=5)
    with pytest.raises(CompressError) as info:
        load_weights_into(other, state, "w.pt")
    msg = str(info.value)
    assert "2.weight" in msg and "(10, 144)" in msg and "(5, 144)" in msg and "w.pt" in msg


def test_missing_and_unexpected_keys():
    net, state = _tiny_state()
    partial = dict(state)
    del partial["0.bias"]
    with pytest.raises(CompressError) as info:
        load_weights_into(net, partial, "w.pt")
    assert "0.bias" in str(info.value)
    extra = dict(state, **{"9.weight": torch.zeros(1)})
    with pytest.raises(CompressError) as info:
        load_weights_into(net, extra, "w.pt")
    assert "9.weight" in str(info.value)


def test_resolve_model_with_weights_file(tmp_path, user_module):
    torch.manual_seed(1)
    src, _, _ = resolve_model(f"{user_module}:tiny", trust_code=True)
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": src.state_dict()}, path)
    model, _, trained = resolve_model(f"{user_module}:tiny", weights=str(path), trust_code=True)
    assert trained is True
    x = torch.randn(1, 3, 16, 16)
    assert torch.equal(model(x), src(x))
    # the same file for a model with another head size names the mismatched key
    with pytest.raises(CompressError) as info:
        resolve_model(f"{user_module}:tiny_with_classes", weights=str(path), num_classes=3, trust_code=True)
    assert "head.weight" in str(info.value)
