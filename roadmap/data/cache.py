"""Decode a small image dataset once to uint8 pixels on disk, then augment from memory."""
from __future__ import annotations

import hashlib
import logging
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from timm.data.transforms import str_to_interp_mode
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.datasets import ImageFolder

from roadmap.atomic import atomic_file
from roadmap.data.errors import BadImageError
from roadmap.data.folders import load_rgb

log = logging.getLogger(__name__)


class DecodedImages(Dataset):
    """An ImageFolder decoded once to uint8 pixels, resized so the shorter side is `side`, cached on disk and
    served from memory to the same transforms as PIL images (`data.decoded_cache=true`).

    For small datasets on few cores: JPEG decoding of the source images otherwise runs every epoch in loader
    processes that compete with the model for the cores. The cache file is keyed by the folder, its files and their
    labels (a changed folder, another split or `top_classes` gets a new file), the side and the interpolation, and
    is written to a temporary file then renamed, so concurrent runs share it safely.
    """

    def __init__(self, folder: ImageFolder, side: int, interpolation: str, cache_dir: Path, transform: Callable,
                 skip_bad: bool = False) -> None:
        self.classes, self.transform = folder.classes, transform
        root = Path(folder.root).resolve()
        listing = [str(root), *(f"{file}\t{target}" for file, target in folder.samples)]
        key = hashlib.sha1("\n".join(listing).encode()).hexdigest()[:8]
        path = cache_dir / "decoded" / f"{root.parent.name}-{root.name}-{key}-{side}px-{interpolation}.npz"
        if not path.is_file():
            self._build(folder, side, interpolation, path, skip_bad)
        try:
            self.pixels, self.shapes, self.targets = self._load(path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            log.warning("decoded-image cache %s cannot be read (%s: %s): rebuilding it", path, type(err).__name__, err)
            self._build(folder, side, interpolation, path, skip_bad)
            self.pixels, self.shapes, self.targets = self._load(path)
        self.offsets = np.concatenate([[0], np.cumsum(self.shapes.prod(axis=1))])

    @staticmethod
    def _load(path: Path) -> tuple[np.ndarray, np.ndarray, list[int]]:
        with np.load(path) as cached:
            return cached["pixels"], cached["shapes"], cached["targets"].tolist()

    @staticmethod
    def _build(folder: ImageFolder, side: int, interpolation: str, path: Path, skip_bad: bool) -> None:
        resize = transforms.Resize(side, interpolation=str_to_interp_mode(interpolation))
        arrays, targets = [], []
        log.info("decoding %d images of %s once at %d px into %s", len(folder.samples), folder.root, side, path)
        for file, target in folder.samples:
            try:
                image = load_rgb(file)
            except BadImageError as err:
                if not skip_bad:
                    raise
                log.warning("skipping corrupt or truncated image '%s' (data.bad_images=skip)", err.path)
                continue
            arrays.append(np.asarray(resize(image) if min(image.size) > side else image, dtype=np.uint8))
            targets.append(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as f:   # concurrent runs may build the same cache: each renames a whole file
            np.savez(f, pixels=np.concatenate([a.reshape(-1) for a in arrays]),
                     shapes=np.array([a.shape for a in arrays], dtype=np.int64), targets=np.array(targets))

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        pixels = self.pixels[self.offsets[index]:self.offsets[index + 1]].reshape(self.shapes[index])
        return self.transform(Image.fromarray(pixels)), self.targets[index]
