"""Image datasets behind one LightningDataModule: a learnable synthetic set, fast.ai's Imagewoof/Imagenette
archives, CIFAR and any ImageFolder (ImageNet), all fed through timm's train/val transforms.

Every bad input raises `DataError` with a one-line message naming the path and what was expected, so a sweep
fails on its first job instead of after hours, or never starts reading the wrong folder.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Mapping
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Callable

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from timm.data.transforms import str_to_interp_mode
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms
from torchvision.datasets import CIFAR10, CIFAR100, ImageFolder
from torchvision.datasets.utils import download_url

log = logging.getLogger(__name__)

DATASETS = ("synthetic", "imagewoof", "imagenette", "cifar10", "cifar100", "imagenet", "folder")
FASTAI_ARCHIVES = {"imagewoof": "imagewoof2-160", "imagenette": "imagenette2-160"}
FASTAI_URL = "https://s3.amazonaws.com/fast-ai-imageclas/{}.tgz"
CIFAR = {"cifar10": CIFAR10, "cifar100": CIFAR100}
FOLDER_LAYOUT = "<root>/train/<class>/<image> and <root>/val/<class>/<image>"
# The classic recipe: RandomResizedCrop + horizontal flip, nothing else (conf/recipe/classic.yaml).
CLASSIC_AUGMENT = {"auto_augment": None, "re_prob": 0.0, "interpolation": "bilinear", "scale": (0.08, 1.0),
                   "hflip": 0.5, "color_jitter": None}
SYNTHETIC_SIZE = 64   # native side of generated images; the timm transforms resize them like photos
MIN_IMAGE_SIZE = 32   # total stride of every model in the roadmap
MAX_AUTO_WORKERS = 16  # data.num_workers=auto never starts more loader processes per training process


class DataError(ValueError):
    """Bad data configuration or files: the message names what, where, and what was expected."""


class BadImageError(DataError):
    """An image file that cannot be decoded; `path` lets `bad_images=skip` name it and move on.

    The message alone must rebuild it: a DataLoader worker re-raises it in the main process as `type(msg)`.
    """

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


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


class DecodedImages(Dataset):
    """An ImageFolder decoded once to uint8 pixels, resized so the shorter side is `side`, cached on disk and
    served from memory to the same transforms as PIL images (`data.decoded_cache=true`).

    For small datasets on few cores: JPEG decoding of the source images otherwise runs every epoch in loader
    processes that compete with the model for the cores. The cache file is keyed by folder, split, side and
    interpolation, and is written to a temporary file then renamed, so concurrent runs share it safely.
    """

    def __init__(self, folder: ImageFolder, side: int, interpolation: str, cache_dir: Path, transform: Callable,
                 skip_bad: bool = False) -> None:
        self.classes, self.transform = folder.classes, transform
        root = Path(folder.root).resolve()
        key = hashlib.sha1(str(root).encode()).hexdigest()[:8]
        path = cache_dir / "decoded" / f"{root.parent.name}-{root.name}-{key}-{side}px-{interpolation}.npz"
        if not path.is_file():
            self._build(folder, side, interpolation, path, skip_bad)
        with np.load(path) as cached:
            self.pixels, self.shapes, self.targets = cached["pixels"], cached["shapes"], cached["targets"].tolist()
        self.offsets = np.concatenate([[0], np.cumsum(self.shapes.prod(axis=1))])

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
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, pixels=np.concatenate([a.reshape(-1) for a in arrays]),
                         shapes=np.array([a.shape for a in arrays], dtype=np.int64), targets=np.array(targets))
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        pixels = self.pixels[self.offsets[index]:self.offsets[index + 1]].reshape(self.shapes[index])
        return self.transform(Image.fromarray(pixels)), self.targets[index]


def _check_root(root: Path, expected: str) -> None:
    if not root.exists():
        raise DataError(f"data.root '{root}' does not exist; expected {expected} (set data.root or ROADMAP_DATA_DIR)")
    if root.is_dir() and not any(root.iterdir()):
        raise DataError(f"data.root '{root}' is empty; expected {expected}")


def extract_once(archive: Path, cache_dir: Path, stem: str) -> Path:
    """Extract `archive` (holding `stem/train`, `stem/val`) to `cache_dir/stem` unless already there.

    It is unpacked into a temporary folder and renamed into place, so `cache_dir/stem` exists only complete:
    a killed or failed run leaves nothing that a later run could take for the dataset, and concurrent runs
    race harmlessly (the first rename wins).
    """
    target = cache_dir / stem
    if target.is_dir():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{stem}.partial-", dir=cache_dir))
    try:
        log.info("extracting %s into %s", archive, target)
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(tmp, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
            reason = " ".join(str(err).split())
            raise DataError(f"cannot extract archive '{archive}' ({reason}): corrupt or truncated? "
                            f"expected a .tgz holding {stem}/train and {stem}/val") from err
        extracted = tmp / stem
        if not ((extracted / "train").is_dir() and (extracted / "val").is_dir()):
            raise DataError(f"archive '{archive}' lacks {stem}/train or {stem}/val; "
                            f"expected {stem}/{{train,val}}/<wnid>/*.JPEG")
        try:
            extracted.rename(target)
        except OSError:
            if not target.is_dir():   # not a lost race with another run: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def fastai_folder(name: str, root: Path, cache_dir: Path, download: bool = False) -> Path:
    """The extracted `<stem>/` folder of a fast.ai archive: found under `root`, or extracted into `cache_dir`."""
    stem = FASTAI_ARCHIVES[name]
    expected = f"a folder holding {stem}.tgz, the archive itself, or {stem}/{{train,val}}/<wnid>/*.JPEG"
    for folder in (root / stem, root):
        if (folder / "train").is_dir() and (folder / "val").is_dir():
            return folder
    archive = root if root.suffix == ".tgz" else root / f"{stem}.tgz"
    if not archive.is_file() and download:
        url = FASTAI_URL.format(stem)
        try:
            download_url(url, str(archive.parent), archive.name)
        except OSError as err:
            raise DataError(f"{name}: cannot download {url} to '{archive}' ({err}); "
                            f"place {stem}.tgz in data.root instead") from err
    if not archive.is_file():
        _check_root(root, expected)
        raise DataError(f"{name}: no {stem}.tgz and no {stem}/{{train,val}} in '{root}'; expected {expected} "
                        "(or set data.download=true to fetch the official archive)")
    return extract_once(archive, cache_dir, stem)


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


def usable_cores() -> int:
    """The cores this process may run on: its SLURM or taskset allocation, not the whole machine."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _niced_worker(worker_id: int, nice: int, rank: int) -> None:
    """Seed the loader process as Lightning's seed_everything(workers=True) would, then lower its priority."""
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        pl_worker_init_function(worker_id, rank)
    os.nice(nice)


class ImageDataModule(L.LightningDataModule):
    """One datamodule for every dataset of the replays; `name` picks the source, the rest is shared.

    name: synthetic | imagewoof | imagenette | cifar10 | cifar100 | imagenet | folder.
    root: imagewoof/imagenette: a folder with the fast.ai .tgz (or the archive, or its extracted folder);
        imagenet/folder: an ImageFolder root with train/ and val/; cifar: torchvision's root.
    cache_dir: where archives are extracted once and reused.
    augment: the recipe's augmentation keys (see `CLASSIC_AUGMENT`); crop_pct: val resize ratio.
    train_size / val_size: synthetic images generated; train_per_class / val_per_class: a seeded, stratified
        subset of a real dataset (cheap CPU proxies).
    bad_images: "fail" raises on an undecodable image; "skip" warns and substitutes the next sample.
    decoded_cache: decode and resize a folder dataset once (see `DecodedImages`): val images at the val
        transform's resize size, so evaluation is unchanged; train images at twice image_size, so random crops
        still come from more pixels than they keep.
    download: fetch the official archive (fast.ai, CIFAR) when it is absent.
    num_workers: loader processes, or "auto"; persistent_workers: keep them across epochs (default: yes).
    worker_nice: added to the loader processes' niceness: on few cores they then use the training threads'
        idle moments instead of preempting them in the middle of a parallel op.
    """

    def __init__(self, name: str = "synthetic", root: str | None = None, cache_dir: str = "~/.cache/roadmap",
                 num_classes: int = 10, image_size: int = 32, batch_size: int = 64, num_workers: int | str = "auto",
                 pin_memory: bool | None = None, persistent_workers: bool | None = None,
                 augment: Mapping[str, Any] | None = None, crop_pct: float = 0.875, seed: int = 0,
                 train_size: int = 2000, val_size: int = 500, train_per_class: int | None = None,
                 val_per_class: int | None = None, bad_images: str = "fail", download: bool = False,
                 decoded_cache: bool = False, worker_nice: int = 0) -> None:
        super().__init__()
        if name not in DATASETS:
            raise DataError(f"unknown data.name '{name}'; allowed: {', '.join(DATASETS)}")
        if image_size < MIN_IMAGE_SIZE:
            raise DataError(f"data.image_size={image_size} is too small: the models downsample by {MIN_IMAGE_SIZE}, "
                            f"so it must be >= {MIN_IMAGE_SIZE} (a multiple of {MIN_IMAGE_SIZE} is best)")
        if bad_images not in ("fail", "skip"):
            raise DataError(f"data.bad_images='{bad_images}'; allowed: fail, skip")
        if batch_size < 1:
            raise DataError(f"data.batch_size={batch_size}; expected a positive integer")
        if num_workers != "auto" and not (isinstance(num_workers, int) and num_workers >= 0):
            raise DataError(f"data.num_workers={num_workers!r} is invalid: allowed auto or an integer >= 0")
        if not (isinstance(worker_nice, int) and 0 <= worker_nice <= 19):
            raise DataError(f"data.worker_nice={worker_nice!r} is invalid: allowed an integer from 0 to 19")
        self.name, self.num_classes, self.image_size = name, num_classes, image_size
        self.root = Path(root).expanduser() if root is not None else None
        self.cache_dir = Path(cache_dir).expanduser()
        self.batch_size, self.num_workers, self.worker_nice, self.seed = batch_size, num_workers, worker_nice, seed
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = persistent_workers is not False
        self.train_size, self.val_size = train_size, val_size
        self.train_per_class, self.val_per_class = train_per_class, val_per_class
        self.bad_images, self.download, self.decoded_cache = bad_images, download, decoded_cache
        self.interpolation, self.crop_pct = (augment or {}).get("interpolation", CLASSIC_AUGMENT["interpolation"]), crop_pct
        self.train_transform, self.val_transform = build_transforms(image_size, augment, crop_pct)
        self.data_dir: Path | None = None
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def _root(self) -> Path:
        if self.root is None:
            raise DataError(f"data.root is not set; {self.name} needs it (set data.root or ROADMAP_DATA_DIR)")
        return self.root

    def _cifar(self, train: bool, download: bool = False) -> Dataset:
        cls, root = CIFAR[self.name], self._root()
        try:
            return cls(str(root), train=train, transform=self.train_transform if train else self.val_transform,
                       download=download)
        except RuntimeError as err:
            raise DataError(f"{self.name}: no readable {root}/{cls.base_folder}/ ({err}); expected torchvision's "
                            "CIFAR folder under data.root, or set data.download=true") from err

    def prepare_data(self) -> None:
        """Extract or download once per node (Lightning calls this on one process only)."""
        if self.name in FASTAI_ARCHIVES:
            fastai_folder(self.name, self._root(), self.cache_dir, self.download)
        elif self.name in CIFAR and self.download:
            self._cifar(train=True, download=True)
            self._cifar(train=False, download=True)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if self.name == "synthetic":
            train = SyntheticShapes(self.train_size, self.num_classes, (self.seed, 0), self.train_transform)
            val = SyntheticShapes(self.val_size, self.num_classes, (self.seed, 1), self.val_transform)
        else:
            train, val = self._real_sets()
        if self.batch_size > len(train):
            raise DataError(f"data.batch_size={self.batch_size} exceeds the {len(train)} training images of "
                            f"{self.name}: with drop_last no batch is left; lower data.batch_size or use more data")
        self.train_set, self.val_set = train, val
        if rank_zero_only.rank == 0:
            log.info(self.describe())

    def _real_sets(self) -> tuple[Dataset, Dataset]:
        if self.name in CIFAR:
            self.data_dir = self._root()
            train, val = self._cifar(train=True), self._cifar(train=False)
        else:
            if self.name in FASTAI_ARCHIVES:
                self.data_dir = fastai_folder(self.name, self._root(), self.cache_dir, self.download)
            else:
                self.data_dir = self._root()
                _check_root(self.data_dir, FOLDER_LAYOUT)
            for split in ("train", "val"):
                if not (self.data_dir / split).is_dir():
                    raise DataError(f"'{self.data_dir}' has no {split}/ folder; expected {FOLDER_LAYOUT}")
            train = image_folder(self.data_dir / "train", self.train_transform)
            val = image_folder(self.data_dir / "val", self.val_transform)
            if self.decoded_cache:
                skip = self.bad_images == "skip"
                val_side = math.floor(self.image_size / self.crop_pct)   # timm's eval resize: a no-op on these
                train = DecodedImages(train, 2 * self.image_size, self.interpolation, self.cache_dir,
                                      self.train_transform, skip)
                val = DecodedImages(val, val_side, self.interpolation, self.cache_dir, self.val_transform, skip)
            if val.classes != train.classes:
                raise DataError(f"'{self.data_dir}/val' has {len(val.classes)} class folders that differ from the "
                                f"{len(train.classes)} of train/; expected the same class folders in both")
        if len(train.classes) != self.num_classes:
            raise DataError(f"found {len(train.classes)} classes in '{self.data_dir}' but data.num_classes="
                            f"{self.num_classes}; set data.num_classes={len(train.classes)} or fix the folder")
        if self.train_per_class is not None:
            train = stratified_subset(train, self.train_per_class, self.seed)
        if self.val_per_class is not None:
            val = stratified_subset(val, self.val_per_class, self.seed)
        if self.bad_images == "skip" and not self.decoded_cache:   # the cache skipped them when it was built
            train, val = SkipBadImages(train), SkipBadImages(val)
        return train, val

    def _sets(self) -> tuple[Dataset, Dataset]:
        if self.train_set is None or self.val_set is None:
            raise RuntimeError("ImageDataModule.setup() has not run yet")
        return self.train_set, self.val_set

    @property
    def num_train(self) -> int:
        return len(self._sets()[0])

    @property
    def num_val(self) -> int:
        return len(self._sets()[1])

    def describe(self) -> str:
        """One line for logs: what is read from where."""
        where = f", root={self.data_dir}" if self.data_dir is not None else ""
        return (f"{self.name}: {self.num_train} train / {self.num_val} val images, {self.num_classes} classes, "
                f"{self.image_size}px{where}")

    def workers(self) -> int:
        """data.num_workers; auto: the cores each training process has beside its own (at most 16).
        On 2 CPU cores with 2 torch threads, 1 worker was as fast as 2-4 or faster in every job we timed
        (results/bench/cpu_threads.csv)."""
        if self.num_workers != "auto":
            return self.num_workers
        procs = self.trainer.num_devices if self.trainer is not None else 1
        return max(0, min(MAX_AUTO_WORKERS, usable_cores() // procs - 1))

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        workers = self.workers()
        init = (partial(_niced_worker, nice=self.worker_nice, rank=self.trainer.global_rank if self.trainer else 0)
                if self.worker_nice and workers else None)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=train, drop_last=train,
                          num_workers=workers, pin_memory=self.pin_memory, worker_init_fn=init,
                          persistent_workers=self.persistent_workers and workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._sets()[0], train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._sets()[1], train=False)

    def test_dataloader(self) -> DataLoader:
        """The val split: these datasets publish no labelled test split."""
        return self.val_dataloader()
