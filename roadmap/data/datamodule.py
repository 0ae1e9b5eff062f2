"""One LightningDataModule for every dataset of the replays: synthetic, fast.ai archives, CIFAR, any ImageFolder."""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import CIFAR10, CIFAR100, ImageFolder

from roadmap.config import CONF_DIR
from roadmap.data.archives import FASTAI_ARCHIVES, fastai_folder
from roadmap.data.cache import DecodedImages
from roadmap.data.dogs import breed, dogs_folders
from roadmap.data.errors import DataError
from roadmap.data.folders import (FOLDER_LAYOUT, SkipBadImages, best_represented, check_root, class_names, image_folder,
                                  keep_classes, stratified_subset)
from roadmap.data.pool import BatchPool
from roadmap.data.synthetic import SyntheticShapes
from roadmap.data.transforms import BatchNormalize, augment_settings, build_transforms

log = logging.getLogger(__name__)

DATASETS = tuple(sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml")))   # a config each, named by its file
CIFAR = {"cifar10": CIFAR10, "cifar100": CIFAR100}
# The rest are ImageFolder roots (extracted from an archive, or given), what top_classes can cut
FOLDER_DATASETS = tuple(name for name in DATASETS if name != "synthetic" and name not in CIFAR)
MIN_IMAGE_SIZE = 32   # total stride of every model in the roadmap
MAX_AUTO_WORKERS = 16  # data.num_workers=auto never starts more loader processes per training process


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

    name: a config of conf/data/ (`DATASETS`): synthetic, cifar10 | cifar100, or an ImageFolder dataset.
    root: imagewoof/imagenette: a folder with the fast.ai .tgz (or the archive, or its extracted folder);
        imagenet/folder: an ImageFolder root with train/ and val/; cifar: torchvision's root; stanford_dogs: the
        folder holding Images/ and the official lists, if any (`roadmap.data.dogs`: without them a fixed split).
    cache_dir: where archives are extracted once and reused.
    augment: the recipe's augmentation keys (see `transforms.CLASSIC_AUGMENT`); crop_pct: val resize ratio.
    train_size / val_size: synthetic images generated; train_per_class / val_per_class: a seeded, stratified
        subset of a real dataset (cheap CPU proxies).
    top_classes: an ImageFolder dataset cut to its N classes with the most training images (ties: more images in
        all, then the folder name), relabelled 0..N-1 in folder order, val too; num_classes must be N.
    bad_images: "fail" raises on an undecodable image; "skip" warns and substitutes the next sample.
    decoded_cache: decode and resize a folder dataset once (see `DecodedImages`): val images at the val
        transform's resize size, so evaluation is unchanged; train images at twice image_size, so random crops
        still come from more pixels than they keep.
    download: fetch the official archive (fast.ai, CIFAR) when it is absent.
    num_workers: loader processes, or "auto"; persistent_workers: keep them across epochs (default: yes).
    worker_nice: added to the loader processes' niceness: on few cores they then use the training threads'
        idle moments instead of preempting them in the middle of a parallel op.
    batch_processes: > 1: each batch is loaded by this many processes (this one included) while training waits
        (`BatchPool`), instead of by loader processes working beside it; for few cores, with num_workers=0.
    """

    def __init__(self, name: str = "synthetic", root: str | None = None, cache_dir: str = "~/.cache/roadmap",
                 num_classes: int = 10, image_size: int = 32, batch_size: int = 64, num_workers: int | str = "auto",
                 pin_memory: bool | None = None, persistent_workers: bool | None = None,
                 augment: Mapping[str, Any] | None = None, crop_pct: float = 0.875, seed: int = 0,
                 train_size: int = 2000, val_size: int = 500, train_per_class: int | None = None,
                 val_per_class: int | None = None, bad_images: str = "fail", download: bool = False,
                 decoded_cache: bool = False, worker_nice: int = 0, batch_processes: int = 0,
                 top_classes: int | None = None) -> None:
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
        if not (isinstance(batch_processes, int) and batch_processes >= 0):
            raise DataError(f"data.batch_processes={batch_processes!r} is invalid: allowed an integer >= 0")
        if batch_processes > 1 and num_workers != 0:
            raise DataError(f"data.batch_processes={batch_processes} needs data.num_workers=0 (got {num_workers!r}): "
                            "the pool loads each batch between steps, loader processes load ahead of them")
        if top_classes is not None:
            if name not in FOLDER_DATASETS:
                raise DataError(f"data.top_classes={top_classes!r} needs an ImageFolder dataset; data.name={name}, "
                                f"allowed: {', '.join(FOLDER_DATASETS)} (or data.top_classes=null)")
            if not (isinstance(top_classes, int) and top_classes >= 1):
                raise DataError(f"data.top_classes={top_classes!r} is invalid: allowed null or an integer >= 1")
            if num_classes != top_classes:
                raise DataError(f"data.num_classes={num_classes} but data.top_classes={top_classes}: the model "
                                f"classifies the kept classes, so set data.num_classes={top_classes}")
        self.batch_processes, self.top_classes = batch_processes, top_classes
        self.name, self.num_classes, self.image_size = name, num_classes, image_size
        self.root = Path(root).expanduser() if root is not None else None
        self.cache_dir = Path(cache_dir).expanduser()
        self.batch_size, self.num_workers, self.worker_nice, self.seed = batch_size, num_workers, worker_nice, seed
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = persistent_workers is not False
        self.train_size, self.val_size = train_size, val_size
        self.train_per_class, self.val_per_class = train_per_class, val_per_class
        self.bad_images, self.download, self.decoded_cache = bad_images, download, decoded_cache
        self.interpolation = augment_settings(augment)["interpolation"]   # the decoded cache resizes as they do
        self.crop_pct = crop_pct
        self.train_transform, self.val_transform = build_transforms(image_size, augment, crop_pct)
        self.normalize = BatchNormalize(augment)
        self.data_dir: Path | None = None
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self._class_names: list[str] | None = None

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
            self._class_names = [str(c) for c in range(self.num_classes)]
        else:
            train, val = self._real_sets()
        if self.batch_size > len(train):
            raise DataError(f"data.batch_size={self.batch_size} exceeds the {len(train)} training images of "
                            f"{self.name}: with drop_last no batch is left; lower data.batch_size or use more data")
        if self.batch_processes > 1:
            train, val = BatchPool(train, self.batch_processes), BatchPool(val, self.batch_processes)
        self.train_set, self.val_set = train, val
        if rank_zero_only.rank == 0:
            log.info(self.describe())

    def _folders(self) -> tuple[ImageFolder, ImageFolder]:
        """The train and val ImageFolders of a folder dataset, with the same class folders."""
        if self.name == "stanford_dogs":
            self.data_dir = self._root()
            return dogs_folders(self.data_dir, self.train_transform, self.val_transform)
        if self.name in FASTAI_ARCHIVES:
            self.data_dir = fastai_folder(self.name, self._root(), self.cache_dir, self.download)
        else:
            self.data_dir = self._root()
            check_root(self.data_dir, FOLDER_LAYOUT)
        for split in ("train", "val"):
            if not (self.data_dir / split).is_dir():
                raise DataError(f"'{self.data_dir}' has no {split}/ folder; expected {FOLDER_LAYOUT}")
        train = image_folder(self.data_dir / "train", self.train_transform)
        val = image_folder(self.data_dir / "val", self.val_transform)
        if val.classes != train.classes:
            raise DataError(f"'{self.data_dir}/val' has {len(val.classes)} class folders that differ from the "
                            f"{len(train.classes)} of train/; expected the same class folders in both")
        return train, val

    def _real_sets(self) -> tuple[Dataset, Dataset]:
        if self.name in CIFAR:
            self.data_dir = self._root()
            train, val = self._cifar(train=True), self._cifar(train=False)
            self._class_names = list(train.classes)
        else:
            train, val = self._folders()
            if self.top_classes is not None:
                kept = best_represented(train, val, self.top_classes)
                train, val = keep_classes(train, kept), keep_classes(val, kept)
            self._class_names = ([breed(c) for c in train.classes] if self.name == "stanford_dogs"
                                 else class_names(train.classes))
            if self.decoded_cache:
                skip = self.bad_images == "skip"
                val_side = math.floor(self.image_size / self.crop_pct)   # timm's eval resize: a no-op on these
                train = DecodedImages(train, 2 * self.image_size, self.interpolation, self.cache_dir,
                                      self.train_transform, skip)
                val = DecodedImages(val, val_side, self.interpolation, self.cache_dir, self.val_transform, skip)
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
    def class_names(self) -> list[str]:
        """A readable name per label, in label order (a Stanford Dogs breed, a folder's name, CIFAR's, or the
        synthetic label itself), for per-class results such as the confusion matrix."""
        if self._class_names is None:
            raise RuntimeError("ImageDataModule.setup() has not run yet")
        return self._class_names

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

    def on_after_batch_transfer(self, batch: tuple[torch.Tensor, torch.Tensor],
                                dataloader_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The loaders yield uint8 images; normalise (and, in training, randomly erase) them per batch on the
        device, as timm's prefetcher does: a quarter of the bytes to move, and less work an image on few CPU cores
        (results/cpu_replay/README.md, "How the budget was chosen")."""
        x, y = batch
        return self.normalize(x, train=self.trainer is not None and self.trainer.training), y

    def teardown(self, stage: str) -> None:
        """End the batch pools' processes with the job, not with the sweep that runs it."""
        for dataset in (self.train_set, self.val_set):
            if isinstance(dataset, BatchPool):
                dataset.close()

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._sets()[0], train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._sets()[1], train=False)

    def test_dataloader(self) -> DataLoader:
        """The val split: these datasets publish no labelled test split."""
        return self.val_dataloader()
