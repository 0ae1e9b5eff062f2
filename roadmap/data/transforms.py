"""timm's train and val transforms, configured by a recipe's `augment` keys, split as timm's prefetcher splits them:
per image in the loader up to uint8 pixels, then per batch on the training device (`BatchNormalize`)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from timm.data.random_erasing import RandomErasing

from roadmap.data.errors import DataError

# The classic recipe: RandomResizedCrop + horizontal flip, nothing else (conf/recipe/classic.yaml).
CLASSIC_AUGMENT = {"auto_augment": None, "re_prob": 0.0, "re_mode": "pixel", "re_count": 1,
                   "interpolation": "bilinear", "scale": (0.08, 1.0), "hflip": 0.5, "color_jitter": None}
RE_MODES = ("const", "rand", "pixel")   # timm's RandomErasing fill modes


def augment_settings(augment: Mapping[str, Any] | None) -> dict[str, Any]:
    """The recipe's `augment` keys over the classic defaults; an unknown key or erasing mode is one DataError."""
    aug = dict(CLASSIC_AUGMENT)
    unknown = set(augment or {}) - set(aug)
    if unknown:
        raise DataError(f"unknown data.augment keys {sorted(unknown)}; allowed: {sorted(aug)}")
    aug.update(augment or {})
    if aug["re_mode"] not in RE_MODES:
        raise DataError(f"data.augment.re_mode={aug['re_mode']!r} is invalid: allowed {' | '.join(RE_MODES)}")
    return aug


def build_transforms(image_size: int, augment: Mapping[str, Any] | None = None,
                     crop_pct: float = 0.875) -> tuple[Callable, Callable]:
    """timm's train transform for the recipe's `augment` keys, and the deterministic resize + centre-crop val one.
    Both end in uint8 CHW tensors (timm's `use_prefetcher` form): normalisation and random erasing run on whole
    batches in `BatchNormalize`, where they cost a fraction of the per-image work and a quarter of the bytes."""
    aug = augment_settings(augment)
    train = create_transform(image_size, is_training=True, auto_augment=aug["auto_augment"],
                             interpolation=aug["interpolation"], scale=tuple(aug["scale"]), hflip=aug["hflip"],
                             color_jitter=aug["color_jitter"] or None, use_prefetcher=True)
    val = create_transform(image_size, is_training=False, crop_pct=crop_pct, interpolation=aug["interpolation"],
                           use_prefetcher=True)
    return train, val


class BatchNormalize:
    """uint8 batch -> float, normalised with ImageNet's mean/std, then (training only) timm's random erasing per
    image: what timm's PrefetchLoader does on the device, callable from a datamodule's batch hook."""

    def __init__(self, augment: Mapping[str, Any] | None = None) -> None:
        aug = augment_settings(augment)
        self.mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1) * 255
        self.re_prob, self.re_mode, self.re_count = aug["re_prob"], aug["re_mode"], aug["re_count"]

    def __call__(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        x = (x.float() - self.mean.to(x.device)) / self.std.to(x.device)
        if train and self.re_prob > 0:
            # erased pixels are drawn in normalised units, as timm's loader draws them
            x = RandomErasing(self.re_prob, mode=self.re_mode, max_count=self.re_count, device=x.device)(x)
        return x
