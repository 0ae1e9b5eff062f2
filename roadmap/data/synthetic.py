"""A learnable synthetic image set generated in code: the default demo data, no download."""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

SYNTHETIC_SIZE = 64   # native side of generated images; the timm transforms resize them like photos
SHAPES = {  # unit-radius masks in the object's rotated frame (u, v)
    "disc": lambda u, v: u * u + v * v < 1.0,
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) < 0.8,
    "triangle": lambda u, v: (v < 0.6) & (v > 2.0 * np.abs(u) - 1.0),
    "ring": lambda u, v: np.abs(u * u + v * v - 0.65) < 0.35,
    "cross": lambda u, v: (np.minimum(np.abs(u), np.abs(v)) < 0.3) & (np.maximum(np.abs(u), np.abs(v)) < 0.9),
}


def _render(size: int, p: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Draw one chunk of images from per-image parameters `p` (see `synthesize`)."""
    def per_image(key: str) -> np.ndarray:
        return p[key].astype(np.float32)[:, None, None]

    grid = ((np.arange(size, dtype=np.float32) + 0.5) / size) * 2.0 - 1.0
    x = (grid[None, None, :] - per_image("cx")) / per_image("radius")
    y = (grid[None, :, None] - per_image("cy")) / per_image("radius")
    cos, sin = np.cos(per_image("angle")), np.sin(per_image("angle"))
    u, v = x * cos - y * sin, x * sin + y * cos
    mask = np.empty(u.shape, dtype=bool)
    for index, draw in enumerate(SHAPES.values()):
        mine = p["shape"] == index
        mask[mine] = draw(u[mine], v[mine])
    stripes = per_image("freq") * (u * np.cos(per_image("stripe_dir")) + v * np.sin(per_image("stripe_dir")))
    shade = np.where(mask, 0.65 + 0.35 * np.sin(2.0 * np.pi * stripes + per_image("stripe_phase")), 1.0)
    noise = rng.random(shade.shape, dtype=np.float32) * 0.2 - 0.1
    image = np.where(mask[..., None], p["colour"][:, None, None, :].astype(np.float32),
                     p["background"][:, None, None, :].astype(np.float32))
    image *= shade[..., None]
    image += noise[..., None]
    return (np.clip(image, 0.0, 1.0, out=image) * 255.0).astype(np.uint8)


@lru_cache(maxsize=8)
def synthesize(n: int, num_classes: int, seed: tuple[int, ...], size: int = SYNTHETIC_SIZE
               ) -> tuple[np.ndarray, np.ndarray]:
    """`n` balanced RGB images (uint8, n x size x size x 3) and labels, cached per process.

    A class fixes a shape (disc, square, triangle, ring, cross), a hue band and a stripe frequency; position,
    size, rotation, saturation, stripe angle, background and pixel noise are random, so a convnet must look at
    the object, not memorise pixels.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % num_classes)
    hue = ((labels + rng.uniform(-0.4, 0.4, n)) / num_classes) % 1.0
    sat, val = rng.uniform(0.55, 1.0, n), rng.uniform(0.65, 1.0, n)
    k = (np.array([5.0, 3.0, 1.0]) + 6.0 * hue[:, None]) % 6.0   # HSV -> RGB, vectorised
    params = {"shape": labels % 5, "freq": 1.0 + 1.5 * ((labels // 5) % 4),
              "colour": val[:, None] * (1.0 - sat[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)),
              "cx": rng.uniform(-0.35, 0.35, n), "cy": rng.uniform(-0.35, 0.35, n),
              "radius": rng.uniform(0.35, 0.65, n), "angle": rng.uniform(0.0, np.pi, n),
              "stripe_dir": rng.uniform(0.0, np.pi, n), "stripe_phase": rng.uniform(0.0, 2.0 * np.pi, n),
              "background": rng.uniform(0.15, 0.85, (n, 1)) + rng.uniform(-0.08, 0.08, (n, 3))}
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for start in range(0, n, 256):   # chunks keep the float temporaries small
        chunk = slice(start, start + 256)
        images[chunk] = _render(size, {key: value[chunk] for key, value in params.items()}, rng)
    images.flags.writeable = labels.flags.writeable = False   # shared by the cache: never mutate
    return images, labels


class SyntheticShapes(Dataset):
    """Generated images (see `synthesize`) served as PIL images, so the same timm transforms apply."""

    def __init__(self, n: int, num_classes: int, seed: tuple[int, ...], transform: Callable) -> None:
        self.images, self.targets = synthesize(n, num_classes, seed)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[index])), int(self.targets[index])
