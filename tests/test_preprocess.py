"""Tests of compressor.preprocess: the weights' own preprocessing read from torchvision's presets,
the evaluation transform at any size, the training augmentations, grey to RGB, to_dict."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import models
from torchvision.transforms import functional as F

from compress_base.errors import CompressError
from compressor.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess

WEIGHTS = [models.ResNet50_Weights.IMAGENET1K_V2, models.EfficientNet_B3_Weights.IMAGENET1K_V1,
           models.MobileNet_V3_Large_Weights.DEFAULT]


def _photo(width=300, height=260, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _ramp(width=32, height=32):
    """Grey image getting brighter left to right."""
    row = np.linspace(40, 250, width).astype(np.uint8)
    return Image.fromarray(np.tile(row, (height, 1))).convert("RGB")


@pytest.mark.parametrize("weights", WEIGHTS, ids=lambda w: type(w).__name__)
def test_from_weights_reads_the_preset(weights):
    preset = weights.transforms()
    p = Preprocess.from_weights(weights)
    assert (p.resize, p.crop) == (preset.resize_size[0], preset.crop_size[0])
    assert p.mean == tuple(preset.mean) and p.std == tuple(preset.std)
    assert p.interpolation == preset.interpolation.value
    assert p.source == f"torchvision {type(weights).__name__}.{weights.name}"


@pytest.mark.parametrize("weights", WEIGHTS, ids=lambda w: type(w).__name__)
def test_eval_transform_at_the_weights_size_equals_the_preset(weights):
    preset = weights.transforms()
    image = _photo()
    ours = Preprocess.from_weights(weights).eval_transform(preset.crop_size[0])(image)
    assert torch.equal(ours, preset(image))


def test_eval_transform_at_another_size_scales_the_resize():
    p = Preprocess.from_weights(models.ResNet50_Weights.IMAGENET1K_V2)  # 232 / 224
    assert p.resize_at(160) == 166 and p.resize_at(224) == 232
    image = _photo()
    x = p.eval_transform(160)(image)
    manual = F.center_crop(F.resize(image, 166, antialias=True), 160)
    assert torch.equal(x, F.normalize(F.to_tensor(manual), p.mean, p.std))


def test_default_resizes_to_the_size_without_crop():
    p = Preprocess.default()
    assert (p.resize, p.crop, p.mean, p.std) == (None, None, IMAGENET_MEAN, IMAGENET_STD)
    image = _photo(50, 20)
    x = p.eval_transform(16)(image)
    assert x.shape == (3, 16, 16)
    expected = F.normalize(F.to_tensor(F.resize(image, [16, 16], antialias=True)), IMAGENET_MEAN, IMAGENET_STD)
    assert torch.allclose(x, expected, atol=1e-6)


def test_grey_is_replicated_to_rgb_from_pil_and_tensors():
    p = Preprocess.default()
    grey = Image.fromarray(np.random.default_rng(1).integers(0, 256, (12, 12), dtype=np.uint8))
    as_rgb = p.eval_transform(12)(grey.convert("RGB"))
    assert torch.equal(p.eval_transform(12)(grey), as_rgb)
    tensor = torch.from_numpy(np.asarray(grey).copy()).unsqueeze(0)
    assert torch.allclose(p.eval_transform(12)(tensor), as_rgb, atol=1e-6)
    unnormalised = as_rgb * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    assert torch.allclose(unnormalised[0], unnormalised[1], atol=1e-6)
    assert torch.allclose(unnormalised[0], unnormalised[2], atol=1e-6)


def _left_right(x):
    """Whether the left half of the (normalised) image is darker than its right half."""
    return bool(x[0, :, : x.shape[2] // 2].mean() < x[0, :, x.shape[2] // 2:].mean())


def test_natural_augmentation_crops_and_flips():
    transform = Preprocess.default().train_transform(24)
    image = _ramp()
    shots = []
    for seed in range(24):
        torch.manual_seed(seed)
        shots.append(transform(image))
    assert all(s.shape == (3, 24, 24) for s in shots)
    assert {_left_right(s) for s in shots} == {True, False}  # some flipped, some not
    torch.manual_seed(3)
    assert torch.equal(transform(image), shots[3])
    steps = [type(t).__name__ for t in transform.transforms]
    assert steps[:2] == ["RandomResizedCrop", "RandomHorizontalFlip"]
    assert transform.transforms[0].scale == (0.35, 1.0)


def test_light_augmentation_pads_and_crops_but_never_flips():
    p = Preprocess(resize=None, crop=None, mean=(0.0,) * 3, std=(1.0,) * 3, augment="light")
    transform, plain = p.train_transform(32), p.eval_transform(32)(_ramp())
    shots = []
    for seed in range(24):
        torch.manual_seed(seed)
        shots.append(transform(_ramp()))
    assert all(_left_right(s) for s in shots)
    assert any(not torch.equal(s, plain) for s in shots)
    assert any((s == 0).all(dim=0).any() for s in shots)  # black padding shows at some edge
    assert all(s.shape == (3, 32, 32) for s in shots)


def test_to_dict_is_json_and_says_what_a_deployer_needs():
    p = Preprocess.from_weights(models.ResNet50_Weights.IMAGENET1K_V2)
    d = json.loads(json.dumps(p.to_dict(160)))
    assert (d["resize"], d["crop"], d["interpolation"]) == (232, 224, "bilinear")
    assert d["mean"] == list(IMAGENET_MEAN) and d["std"] == list(IMAGENET_STD)
    assert d["channel_order"] == "RGB" and d["layout"] == "NCHW" and "255" in d["pixel_scale"]
    assert d["grayscale"] == "replicated to R, G and B"
    assert d["at_input_size"] == {"size": 160, "steps": "resize shorter side to 166, centre crop 160x160"}
    assert "RandomResizedCrop" in d["train_augmentation"]
    assert Preprocess.default().to_dict(32)["at_input_size"]["steps"] == "resize to 32x32"
    assert "at_input_size" not in Preprocess.default().to_dict()


@pytest.mark.parametrize("kwargs, match", [
    ({"resize": 256, "crop": None}, "both resize and crop"),
    ({"resize": 200, "crop": 224}, "at most resize"),
    ({"std": (0.2, 0.0, 0.2)}, "positive stds"),
    ({"mean": (0.5, 0.5)}, "3 means"),
    ({"interpolation": "cubic"}, "unknown interpolation"),
    ({"augment": "heavy"}, "unknown augmentation"),
])
def test_bad_descriptions_are_refused(kwargs, match):
    fields = {"resize": None, "crop": None, "mean": IMAGENET_MEAN, "std": IMAGENET_STD} | kwargs
    with pytest.raises(CompressError, match=match):
        Preprocess(**fields)


def test_bad_sizes_and_weights_are_refused():
    with pytest.raises(CompressError, match="input size"):
        Preprocess.default().eval_transform(0)
    with pytest.raises(CompressError, match="no image-classification preprocessing"):
        Preprocess.from_weights(models.detection.FasterRCNN_ResNet50_FPN_Weights.DEFAULT)
