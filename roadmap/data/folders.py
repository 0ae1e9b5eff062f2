"""ImageFolder datasets (train/<class>/<image>, val/...) whose bad files and layouts are clear DataErrors."""
from __future__ import annotations

import copy
import logging
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image
from timm.data import ImageNetInfo
from torch.utils.data import Dataset, Subset
from torchvision.datasets import ImageFolder

from roadmap.data.errors import BadImageError, DataError

log = logging.getLogger(__name__)

FOLDER_LAYOUT = "<root>/train/<class>/<image> and <root>/val/<class>/<image>"
WNID = re.compile(r"n\d{8}")   # an ImageNet class id (WordNet synset), the folder names of ImageNet and its subsets


def class_names(folders: Sequence[str]) -> list[str]:
    """Class folders as a person reads them: an ImageNet wnid (Imagewoof's n02086240) becomes timm's ImageNet class
    name (Shih-Tzu, the first of its synonyms); a name two wnids share (crane, the bird and the machine) keeps its
    wnid, so the names stay unique keys of a summary's per-class accuracies. Other folder names are kept."""
    info = ImageNetInfo()

    def name(folder: str) -> str:
        try:
            return info.label_name_to_description(folder).split(",")[0] if WNID.fullmatch(folder) else folder
        except KeyError:   # a wnid timm's WordNet lemmas do not hold
            return folder
    names = [name(f) for f in folders]
    shared = {name for name, n in Counter(names).items() if n > 1}
    return [f"{name} ({folder})" if name in shared else name for name, folder in zip(names, folders)]


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


def image_folder(split_dir: Path, transform: Callable, layout: str = FOLDER_LAYOUT) -> ImageFolder:
    """An ImageFolder over `split_dir` whose loader reports undecodable files as `BadImageError`."""
    try:
        return ImageFolder(str(split_dir), transform=transform, loader=load_rgb)
    except FileNotFoundError as err:
        raise DataError(f"no class folders with images in '{split_dir}' ({err}); expected {layout}") from err


def narrowed(folder: ImageFolder, samples: list[tuple[str, int]], classes: list[str]) -> ImageFolder:
    """A copy of `folder` that lists only `samples`, labelled by index into `classes`: every attribute the
    subsets and `DecodedImages` read (root, classes, samples, targets) describes the same images."""
    narrow = copy.copy(folder)
    narrow.classes, narrow.class_to_idx = classes, {name: i for i, name in enumerate(classes)}
    narrow.samples = narrow.imgs = samples
    narrow.targets = [target for _, target in samples]
    return narrow


def best_represented(train: ImageFolder, val: ImageFolder, count: int) -> list[str]:
    """The `count` classes with the most training images (`data.top_classes`). Ties go to the class with more
    images in both splits, then to the first class folder by name: a split that gives every class the same
    training count (Stanford Dogs' official 100 a breed) still ranks the classes by what the dataset holds."""
    if not 1 <= count <= len(train.classes):
        raise DataError(f"data.top_classes={count} is invalid: allowed 1 to {len(train.classes)}, the classes "
                        f"in '{train.root}'")
    in_train = np.bincount(train.targets, minlength=len(train.classes))
    in_all = in_train + np.bincount(val.targets, minlength=len(train.classes))
    ranked = sorted(range(len(train.classes)), key=lambda c: (-in_train[c], -in_all[c], train.classes[c]))
    return [train.classes[c] for c in ranked[:count]]


def keep_classes(folder: ImageFolder, names: Sequence[str]) -> ImageFolder:
    """`folder` with only the classes `names`, relabelled 0..len(names)-1 in the folder's own (sorted) order."""
    wanted = set(names)
    kept = [name for name in folder.classes if name in wanted]
    relabel = {folder.class_to_idx[name]: i for i, name in enumerate(kept)}
    return narrowed(folder, [(path, relabel[target]) for path, target in folder.samples if target in relabel], kept)


def stratified_subset(dataset: Dataset, per_class: int, seed: int) -> Subset:
    """`per_class` samples of every class (all of a smaller class), the same for a given seed."""
    targets = np.asarray(dataset.targets)
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(targets == c))[:per_class] for c in np.unique(targets)]
    return Subset(dataset, np.sort(np.concatenate(picks)).tolist())
