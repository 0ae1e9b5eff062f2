"""Stanford Dogs in its own layout (Images/<wnid>-<breed>/*.jpg): split by the official lists, or by a fixed rule."""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Callable

import numpy as np
from scipy.io import loadmat
from scipy.io.matlab import MatReadError
from torchvision.datasets import ImageFolder

from roadmap.data.errors import DataError
from roadmap.data.folders import check_root, image_folder, narrowed

LISTS = ("train_list.mat", "test_list.mat")
VAL_FRACTION = 0.2   # held out of each breed when the official lists are absent
DOGS_LAYOUT = (f"<root>/Images/<wnid>-<breed>/*.jpg, and Stanford Dogs' official {' and '.join(LISTS)} in <root> "
               f"or <root>/lists/ (without them {VAL_FRACTION:.0%} of each breed is held out)")


def breed(folder: str) -> str:
    """The readable name of a breed's folder: n02085782-Japanese_spaniel -> Japanese spaniel."""
    return folder.partition("-")[2].replace("_", " ") or folder


def official_lists(root: Path) -> tuple[Path, Path] | None:
    """The official train and test lists, in `root` or `root/lists`; None where neither is there."""
    for folder in (root, root / "lists"):
        found = [folder / name for name in LISTS if (folder / name).is_file()]
        if len(found) == len(LISTS):
            return found[0], found[1]
        if found:
            raise DataError(f"'{folder}' holds {found[0].name} alone; expected both {' and '.join(LISTS)} "
                            "(the official split) or neither (a fixed split)")
    return None


def read_list(path: Path) -> set[str]:
    """The images an official list names, relative to Images/ (n02085620-Chihuahua/n02085620_10074.jpg)."""
    try:
        entries = loadmat(str(path))["file_list"]
    except (MatReadError, OSError, ValueError, TypeError, KeyError) as err:
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        raise DataError(f"cannot read file_list from '{path}' ({reason}); expected Stanford Dogs' official "
                        f"{path.name}") from err
    return {str(np.ravel(entry)[0]) for entry in np.ravel(entries)}


def held_out(files: dict[str, int]) -> set[str]:
    """VAL_FRACTION of each class's `files` (at least one of a class of two or more), the first by a hash of the
    file's path. It does not depend on data.seed: the seeds of a study are scored on the same images, so their
    spread is training noise, not split noise, and they share one decoded cache."""
    by_class: dict[int, list[str]] = {}
    for file, target in files.items():
        by_class.setdefault(target, []).append(file)
    val: set[str] = set()
    for members in by_class.values():
        members.sort(key=lambda file: (zlib.crc32(file.encode()), file))
        val.update(members[:max(1, round(VAL_FRACTION * len(members))) if len(members) > 1 else 0])
    return val


def dogs_folders(root: Path, train_transform: Callable, val_transform: Callable) -> tuple[ImageFolder, ImageFolder]:
    """Train and val ImageFolders over `root/Images`: the official lists' split (test as val) where they are
    there, else `held_out`'s."""
    check_root(root, DOGS_LAYOUT)
    images = root / "Images"
    if not images.is_dir():
        raise DataError(f"'{root}' has no Images/ folder; expected {DOGS_LAYOUT}")
    train = image_folder(images, train_transform, DOGS_LAYOUT)
    val = image_folder(images, val_transform, DOGS_LAYOUT)
    files = {Path(path).relative_to(images).as_posix(): target for path, target in train.samples}
    lists = official_lists(root)
    if lists is None:
        val_files = held_out(files)
        train_files = set(files) - val_files
    else:
        train_files, val_files = read_list(lists[0]), read_list(lists[1])
        if missing := sorted((train_files | val_files) - set(files)):
            raise DataError(f"{len(missing)} images of the official lists are not in '{images}' (e.g. {missing[0]}); "
                            f"expected {DOGS_LAYOUT}")
        if shared := sorted(train_files & val_files):
            raise DataError(f"{len(shared)} images are in both {lists[0]} and {lists[1]} (e.g. {shared[0]}); "
                            "expected disjoint train and test lists")

    def split(folder: ImageFolder, kept: set[str]) -> ImageFolder:
        return narrowed(folder, [(path, target) for path, target in folder.samples
                                 if Path(path).relative_to(images).as_posix() in kept], folder.classes)

    return split(train, train_files), split(val, val_files)
