"""timm's train and val transforms, configured by a recipe's `augment` keys."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform

from roadmap.data.errors import DataError

# The classic recipe: RandomResizedCrop + horizontal flip, nothing else (conf/recipe/classic.yaml).
CLASSIC_AUGMENT = {"auto_augment": None, "re_prob": 0.0, "interpolation": "bilinear", "scale": (0.08, 1.0),
                   "hflip": 0.5, "color_jitter": None}


def build_transforms(image_size: int, augment: Mapping[str, Any] | None = None,
                     crop_pct: float = 0.875) -> tuple[Callable, Callable]:
    """timm's train transform for the recipe's `augment` keys, and the deterministic resize + centre-crop val one."""
    aug = dict(CLASSIC_AUGMENT)
    unknown = set(augment or {}) - set(aug)
    if unknown:
        raise DataError(f"unknown data.augment keys {sorted(unknown)}; allowed: {sorted(aug)}")
    aug.update(augment or {})
    norm = {"mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD}
    train = create_transform(image_size, is_training=True, auto_augment=aug["auto_augment"], re_prob=aug["re_prob"],
                             interpolation=aug["interpolation"], scale=tuple(aug["scale"]), hflip=aug["hflip"],
                             color_jitter=aug["color_jitter"] or None, **norm)
    val = create_transform(image_size, is_training=False, crop_pct=crop_pct, interpolation=aug["interpolation"],
                           **norm)
    return train, val
