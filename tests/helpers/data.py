"""Image data for the tests: a tiny ImageFolder made on the spot, or the real Imagewoof archive if it is there."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASSES = ("ant", "bee", "cat")


def make_folder(root: Path, classes: tuple[str, ...] = CLASSES, per_class: int = 4,
                splits: tuple[str, ...] = ("train", "val")) -> Path:
    """A tiny ImageFolder: root/<split>/<class>/<i>.JPEG, 40 x 40 px."""
    rng = np.random.default_rng(0)
    for split in splits:
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.JPEG", quality=90)
    return root


def imagewoof_archive() -> Path:
    """The real Imagewoof archive, or skip with the reason."""
    data_dir = os.environ.get("ROADMAP_DATA_DIR")
    if not data_dir:
        pytest.skip("ROADMAP_DATA_DIR is not set (point it at ../shared/data to run real-data tests)")
    path = Path(data_dir) / "imagewoof2-160.tgz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path
