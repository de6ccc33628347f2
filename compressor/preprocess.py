"""What a model expects of its input pixels, and the transforms that produce it.

A :class:`Preprocess` describes the evaluation geometry (resize, centre crop), the normalisation
(mean, std on pixels scaled to 0-1), the channel order (RGB, grey replicated) and the training
augmentation. It comes from a torchvision weights enum (its own ``transforms()`` preset) or is the
default for the user's own data, and yields the evaluation and training transforms at any square
size. ``to_dict`` is what report.json and the ONNX metadata record, so that a deployer can feed the
engine the same pixels.

The transforms take a PIL image or a uint8 tensor (C x H x W, C = 1 or 3) and return a float
tensor of 3 x size x size.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms import InterpolationMode, transforms
from torchvision.transforms import functional as F

from compress_base.errors import CompressError

__all__ = ["AUGMENTATIONS", "IMAGENET_MEAN", "IMAGENET_STD", "Preprocess"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_RESIZED_CROP_SCALE = (0.35, 1.0)  # milder than torchvision's 0.08: fine-tuning runs few epochs

AUGMENTATIONS = {
    # natural images (photos): a random crop of 35-100% of the area, resized to the size, and a
    # random horizontal flip
    "natural": f"RandomResizedCrop(size, scale={RANDOM_RESIZED_CROP_SCALE}) + RandomHorizontalFlip",
    # small images whose orientation matters (digits, IDX sets): the evaluation geometry, then a
    # random crop of the size from the image padded with size/8 black pixels on each side; no flip
    "light": "evaluation geometry + RandomCrop(size, padding=max(1, size // 8), fill=0)",
}


@dataclass(frozen=True)
class Preprocess:
    """Evaluation geometry, normalisation and training augmentation of a model's input.

    ``resize`` and ``crop`` are the weights' evaluation sizes (e.g. 256 and 224): at another input
    size the shorter side is resized to ``round(size * resize / crop)`` and the centre ``size`` x
    ``size`` is kept. Without them (both None) the image is resized to ``size`` x ``size``.
    """

    resize: int | None
    crop: int | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    augment: str = "natural"
    source: str = "default"

    def __post_init__(self):
        if (self.resize is None) != (self.crop is None):
            raise CompressError(f"preprocessing needs both resize and crop or neither (got {self.resize}, {self.crop})")
        if self.crop is not None and not 0 < self.crop <= self.resize:
            raise CompressError(f"preprocessing crop {self.crop} must be positive and at most resize {self.resize}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise CompressError(f"preprocessing needs 3 means and 3 positive stds (got {self.mean}, {self.std})")
        if self.interpolation not in {m.value for m in InterpolationMode}:
            raise CompressError(f"unknown interpolation {self.interpolation!r}: use bilinear, bicubic or nearest")
        if self.augment not in AUGMENTATIONS:
            raise CompressError(f"unknown augmentation {self.augment!r}: use one of {', '.join(AUGMENTATIONS)}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    @classmethod
    def from_weights(cls, weights) -> Preprocess:
        """The preprocessing of a torchvision weights enum member, read from its ``transforms()``."""
        preset = weights.transforms()
        try:
            resize, crop = preset.resize_size[0], preset.crop_size[0]
            mean, std, interpolation = preset.mean, preset.std, preset.interpolation.value
        except (AttributeError, IndexError, TypeError):
            raise CompressError(
                f"weights {weights} have no image-classification preprocessing (resize, crop, mean, std): "
                "use classification weights"
            ) from None
        return cls(resize=int(resize), crop=int(crop), mean=tuple(mean), std=tuple(std),
                   interpolation=interpolation, source=f"torchvision {type(weights).__name__}.{weights.name}")

    @classmethod
    def default(cls) -> Preprocess:
        """For the user's own data: resize to the input size (no crop), ImageNet mean and std,
        bilinear, natural-image augmentation."""
        return cls(resize=None, crop=None, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                   source="default: resize to the input size, ImageNet mean/std")

    def resize_at(self, size: int) -> int | None:
        """The shorter side to resize to before the centre crop at ``size``, or None (plain resize)."""
        return None if self.crop is None else round(size * self.resize / self.crop)

    def eval_transform(self, size: int) -> transforms.Compose:
        """Deterministic transform to a 3 x ``size`` x ``size`` normalised tensor."""
        return transforms.Compose([*self._geometry(_check_size(size)), _NormalisedRGB(self.mean, self.std)])

    def train_transform(self, size: int) -> transforms.Compose:
        """Random augmentation (see ``AUGMENTATIONS``) to a 3 x ``size`` x ``size`` normalised tensor."""
        size = _check_size(size)
        if self.augment == "natural":
            steps = [transforms.RandomResizedCrop(size, scale=RANDOM_RESIZED_CROP_SCALE, antialias=True,
                                                  interpolation=InterpolationMode(self.interpolation)),
                     transforms.RandomHorizontalFlip()]
        else:
            steps = [*self._geometry(size), transforms.RandomCrop(size, padding=max(1, size // 8), fill=0)]
        return transforms.Compose([*steps, _NormalisedRGB(self.mean, self.std)])

    def to_dict(self, size: int | None = None) -> dict:
        """A JSON-ready description for report.json and ONNX metadata; with ``size``, also the
        concrete resize and crop of an input of that size."""
        out = {
            "resize": self.resize, "crop": self.crop, "mean": list(self.mean), "std": list(self.std),
            "interpolation": self.interpolation, "channel_order": "RGB", "layout": "NCHW",
            "pixel_scale": "8-bit value / 255, then (x - mean) / std per channel",
            "grayscale": "replicated to R, G and B", "train_augmentation": AUGMENTATIONS[self.augment],
            "source": self.source,
        }
        if size is not None:
            resize = self.resize_at(_check_size(size))
            out["at_input_size"] = {
                "size": size,
                "steps": (f"resize shorter side to {resize}, centre crop {size}x{size}" if resize is not None
                          else f"resize to {size}x{size}"),
            }
        return out

    def _geometry(self, size: int) -> list:
        interpolation = InterpolationMode(self.interpolation)
        resize = self.resize_at(size)
        if resize is None:
            return [transforms.Resize((size, size), interpolation=interpolation, antialias=True)]
        return [transforms.Resize(resize, interpolation=interpolation, antialias=True), transforms.CenterCrop(size)]


class _NormalisedRGB:
    """PIL image or uint8 tensor -> float tensor scaled to 0-1, grey replicated to 3 channels, normalised."""

    def __init__(self, mean, std):
        self.mean, self.std = list(mean), list(std)

    def __call__(self, image) -> torch.Tensor:
        pixels = image if isinstance(image, torch.Tensor) else F.pil_to_tensor(image)
        pixels = F.convert_image_dtype(pixels, torch.float)
        if pixels.shape[0] == 1:
            pixels = pixels.expand(3, -1, -1)
        return F.normalize(pixels, self.mean, self.std)

    def __repr__(self) -> str:
        return f"NormalisedRGB(mean={self.mean}, std={self.std})"


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise CompressError(f"input size {size!r} must be a positive integer, e.g. 224")
    return size
