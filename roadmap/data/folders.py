"""ImageFolder datasets (train/<class>/<image>, val/...) whose bad files and layouts are clear DataErrors."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision.datasets import ImageFolder

from roadmap.data.errors import BadImageError, DataError

log = logging.getLogger(__name__)

FOLDER_LAYOUT = "<root>/train/<class>/<image> and <root>/val/<class>/<image>"


def load_rgb(path: str) -> Image.Image:
    """ImageFolder's loader, but a file PIL cannot decode becomes a `BadImageError` naming it."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError) as err:
        raise BadImageError(f"unreadable image '{path}' ({err}): corrupt or truncated? "
                            "set data.bad_images=skip to substitute another sample", path) from err


class SkipBadImages(Dataset):
    """Substitutes the next readable sample for an undecodable one, warning once per file (`bad_images=skip`)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.warned: set[str] = set()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        for offset in range(len(self)):
            try:
                return self.dataset[(index + offset) % len(self)]
            except BadImageError as err:
                if err.path not in self.warned:
                    self.warned.add(err.path)
                    log.warning("skipping corrupt or truncated image '%s' (data.bad_images=skip)", err.path)
        raise DataError(f"no readable image left in a dataset of {len(self)} (data.bad_images=skip)")


def check_root(root: Path, expected: str) -> None:
    if not root.exists():
        raise DataError(f"data.root '{root}' does not exist; expected {expected} (set data.root or ROADMAP_DATA_DIR)")
    if root.is_dir() and not any(root.iterdir()):
        raise DataError(f"data.root '{root}' is empty; expected {expected}")


def image_folder(split_dir: Path, transform: Callable) -> ImageFolder:
    """An ImageFolder over `split_dir` whose loader reports undecodable files as `BadImageError`."""
    try:
        return ImageFolder(str(split_dir), transform=transform, loader=load_rgb)
    except FileNotFoundError as err:
        raise DataError(f"no class folders with images in '{split_dir}' ({err}); expected {FOLDER_LAYOUT}") from err


def stratified_subset(dataset: Dataset, per_class: int, seed: int) -> Subset:
    """`per_class` samples of every class (all of a smaller class), the same for a given seed."""
    targets = np.asarray(dataset.targets)
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(targets == c))[:per_class] for c in np.unique(targets)]
    return Subset(dataset, np.sort(np.concatenate(picks)).tolist())
