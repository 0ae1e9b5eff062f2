"""ImageDataModule: synthetic data that is deterministic and learnable, the recipes' transforms, one clear
DataError per kind of bad input, and one real batch from the Imagewoof archive when it is available."""
from __future__ import annotations

import logging
import os
import signal
import tarfile
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from scipy.io import savemat
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.data.auto_augment import RandAugment
from torchvision.datasets import ImageFolder
from torchvision.transforms import Normalize

import roadmap.data.datamodule
from roadmap.data import (DATASETS, BatchNormalize, BatchPool, DataError, ImageDataModule, build_transforms,
                          synthesize)

from helpers.configs import compose
from helpers.data import CLASSES, imagewoof_archive, make_folder


def make_archive(folder: Path, archive: Path, stem: str = "imagewoof2-160") -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=stem)
    return archive


def datamodule(**kwargs) -> ImageDataModule:
    return ImageDataModule(**{"image_size": 32, "batch_size": 4, "num_workers": 0, "num_classes": 3, **kwargs})


def raises_data_error(build, *needles: str) -> DataError:
    """`build()` raises a one-line DataError mentioning every needle."""
    with pytest.raises(DataError) as info:
        build()
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return info.value


def augment(recipe: str) -> dict:
    return dict(compose([f"recipe={recipe}"]).recipe.augment)


# --- synthetic -------------------------------------------------------------------------------------------------

def test_synthetic_is_deterministic_and_balanced() -> None:
    images, labels = synthesize.__wrapped__(60, 10, (0, 0))   # bypass the cache: generate twice
    again, again_labels = synthesize.__wrapped__(60, 10, (0, 0))
    assert np.array_equal(images, again) and np.array_equal(labels, again_labels)
    assert not np.array_equal(images, synthesize.__wrapped__(60, 10, (1, 0))[0])
    assert images.shape == (60, 64, 64, 3) and images.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == [6] * 10

    first, second = (datamodule(name="synthetic", num_classes=10, train_size=40, val_size=20, seed=3)
                     for _ in range(2))
    for dm in (first, second):
        dm.setup("fit")
    x1, y1 = next(iter(first.val_dataloader()))
    x2, y2 = next(iter(second.val_dataloader()))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert (first.num_train, first.num_val) == (40, 20)
    assert "synthetic: 40 train / 20 val images, 10 classes, 32px" in first.describe()


def test_synthetic_classes_are_distinguishable() -> None:
    """A nearest-class-mean classifier on 32-px pixels beats chance (10 %) by far; shuffled labels do not."""
    dm = datamodule(name="synthetic", num_classes=10, train_size=1000, val_size=500)
    dm.setup("fit")

    def pixels(dataset) -> tuple[np.ndarray, np.ndarray]:
        samples = [(dm.val_transform(Image.fromarray(image)), label)
                   for image, label in zip(dataset.images, dataset.targets)]
        return torch.stack([x for x, _ in samples]).flatten(1).numpy(), np.array([y for _, y in samples])

    (x, y), (x_val, y_val) = pixels(dm.train_set), pixels(dm.val_set)

    def accuracy(train_labels: np.ndarray) -> float:
        means = np.stack([x[train_labels == c].mean(0) for c in range(10)])
        predicted = ((x_val[:, None] - means[None]) ** 2).sum(-1).argmin(1)
        return float((predicted == y_val).mean())

    assert accuracy(y) > 0.25
    assert accuracy(np.random.default_rng(0).permutation(y)) < 0.16


# --- transforms ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_classic_and_modern_transforms() -> None:
    kinds = {}
    for recipe in ("classic", "modern"):
        train, val = build_transforms(64, augment(recipe))
        kinds[recipe] = {type(t).__name__ for t in train.transforms}, train, val
    classic, modern = kinds["classic"][1], kinds["modern"][1]
    assert {"RandomResizedCropAndInterpolation", "RandomHorizontalFlip"} <= kinds["classic"][0]
    assert not any(isinstance(t, RandAugment) for t in classic.transforms)
    assert "ColorJitter" not in kinds["classic"][0]
    assert any(isinstance(t, RandAugment) for t in modern.transforms)
    assert "bicubic" in repr(modern) and "bicubic" not in repr(classic)

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 100, 3), dtype=np.uint8))
    for _, train, val in kinds.values():
        out = val(image)
        assert out.shape == (3, 64, 64) and out.dtype == torch.uint8   # normalised per batch, not per image
        assert torch.equal(out, val(image))   # deterministic resize + centre crop
        assert train(image).dtype == torch.uint8
    raises_data_error(lambda: build_transforms(64, {"reprob": 0.25}), "reprob", "re_prob")
    raises_data_error(lambda: build_transforms(64, {"re_mode": "noise"}), "data.augment.re_mode", "pixel")


def test_batch_normalize_matches_timm_and_erases_only_in_training() -> None:
    """A uint8 batch comes out as timm's ToTensor + Normalize would make each image; the modern recipe's random
    erasing (the ConvNeXt code's pixel mode, one region) touches training batches only."""
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    per_image = Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)   # after ToTensor's / 255
    expected = torch.stack([per_image(image.float() / 255) for image in x])
    modern = BatchNormalize(augment("modern"))
    assert torch.allclose(modern(x, train=False), expected, atol=1e-5)
    torch.manual_seed(0)
    trained = modern(x, train=True)
    erased = [not torch.allclose(a, b, atol=1e-5) for a, b in zip(trained, expected)]
    assert 4 <= sum(erased) <= 30   # p = 0.25 of 64 images
    assert torch.allclose(BatchNormalize(augment("classic"))(x, train=True), expected, atol=1e-5)


# --- bad configuration -----------------------------------------------------------------------------------------

def test_bad_arguments() -> None:
    raises_data_error(lambda: datamodule(name="mnist"), "mnist", "imagewoof", "folder")
    raises_data_error(lambda: datamodule(name="synthetic", image_size=16), "image_size=16", "32")
    raises_data_error(lambda: datamodule(name="synthetic", bad_images="ignore"), "ignore", "fail, skip")
    raises_data_error(lambda: datamodule(name="synthetic", train_size=10, batch_size=16).setup("fit"),
                      "batch_size=16", "10 training images")
    for bad in (-1, "many"):
        raises_data_error(lambda: datamodule(num_workers=bad), f"data.num_workers={bad!r}", "auto or an integer")


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # a mocked core count
@pytest.mark.parametrize("cores,procs,workers", [(2, 1, 1), (1, 1, 0), (16, 1, 15), (16, 2, 7), (128, 1, 16)])
def test_auto_workers_leave_each_training_process_a_core(monkeypatch: pytest.MonkeyPatch, cores: int, procs: int,
                                                         workers: int) -> None:
    monkeypatch.setattr(roadmap.data.datamodule, "usable_cores", lambda: cores)
    dm = datamodule(num_workers="auto", train_size=8, val_size=8)
    monkeypatch.setattr(dm, "trainer", SimpleNamespace(num_devices=procs))
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.num_workers == workers and loader.persistent_workers == (workers > 0)
    assert datamodule(num_workers=3).workers() == 3  # an explicit count is kept


def test_bad_roots(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    raises_data_error(lambda: datamodule(name="folder", root=str(missing)).setup("fit"),
                      str(missing), "does not exist", "train/<class>")
    raises_data_error(lambda: datamodule(name="imagewoof", root=str(missing)).prepare_data(),
                      str(missing), "imagewoof2-160.tgz")
    raises_data_error(lambda: datamodule(name="imagewoof", root=None).prepare_data(), "data.root")
    empty = tmp_path / "empty"
    empty.mkdir()
    raises_data_error(lambda: datamodule(name="imagenet", root=str(empty)).setup("fit"), str(empty), "is empty")
    raises_data_error(lambda: datamodule(name="imagenette", root=str(empty)).prepare_data(), str(empty), "empty")
    raises_data_error(lambda: datamodule(name="cifar10", root=str(empty)).setup("fit"),
                      str(empty), "cifar-10-batches-py")


def test_bad_folder_layouts(tmp_path: Path) -> None:
    no_val = make_folder(tmp_path / "no_val", splits=("train",))
    raises_data_error(lambda: datamodule(name="folder", root=str(no_val)).setup("fit"), str(no_val), "val/")
    folder = make_folder(tmp_path / "ok")
    raises_data_error(lambda: datamodule(name="folder", root=str(folder), num_classes=10).setup("fit"),
                      "found 3 classes", "num_classes=10", str(folder))
    raises_data_error(lambda: datamodule(name="folder", root=str(folder), batch_size=64).setup("fit"),
                      "batch_size=64", "12 training images")
    (folder / "val" / "dog").mkdir()
    Image.new("RGB", (40, 40)).save(folder / "val" / "dog" / "0.JPEG")
    raises_data_error(lambda: datamodule(name="folder", root=str(folder)).setup("fit"), "val", "differ")


def test_folder_subsets_are_stratified_and_seeded(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "ok", per_class=4)
    picks = []
    for _ in range(2):
        dm = datamodule(name="folder", root=str(folder), train_per_class=2, val_per_class=1, seed=5, batch_size=2)
        dm.setup("fit")
        assert (dm.num_train, dm.num_val) == (6, 3)
        picks.append(dm.train_set.indices)
        assert np.bincount([dm.train_set.dataset.targets[i] for i in dm.train_set.indices]).tolist() == [2, 2, 2]
    assert picks[0] == picks[1]
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 3, 32, 32) and str(folder) in dm.describe()


# --- decoded cache ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_decoded_cache_serves_the_same_val_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Val images from the cache are bit-identical to decoding each JPEG (the cache stores them at the val
    transform's resize size); train images come through the same transforms; the cache is built once."""
    folder = make_folder(tmp_path / "ok", per_class=4)
    cache = tmp_path / "cache"
    plain = datamodule(name="folder", root=str(folder), augment=augment("modern"))
    cached = datamodule(name="folder", root=str(folder), augment=augment("modern"),
                        decoded_cache=True, cache_dir=str(cache))
    for dm in (plain, cached):
        dm.setup("fit")
    assert (cached.num_train, cached.num_val) == (12, 12) and cached.train_set.targets == plain.train_set.targets
    for (x, y), (x_cached, y_cached) in zip(plain.val_dataloader(), cached.val_dataloader()):
        assert torch.equal(x, x_cached) and torch.equal(y, y_cached)
    x, y = next(iter(cached.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and x.float().std() > 0
    # val at timm's resize size, floor(32 / 0.875) = 36 (its Resize is then a no-op); train at 2 x 32 (the 40-px
    # originals are kept as they are)
    assert sorted(p.name.split("-")[-2] for p in (cache / "decoded").iterdir()) == ["36px", "64px"]

    monkeypatch.setattr(roadmap.data.DecodedImages, "_build", lambda *a: pytest.fail("rebuilt the cache"))
    again = datamodule(name="folder", root=str(folder), augment=augment("modern"),
                       decoded_cache=True, cache_dir=str(cache), train_per_class=2)
    again.setup("fit")
    assert again.num_train == 6


def test_decoded_cache_follows_a_changed_folder(tmp_path: Path) -> None:
    folder, cache = make_folder(tmp_path / "ok", per_class=4), tmp_path / "cache"
    first = datamodule(name="folder", root=str(folder), decoded_cache=True, cache_dir=str(cache))
    first.setup("fit")
    Image.new("RGB", (40, 40)).save(folder / "train" / "ant" / "new.JPEG")
    second = datamodule(name="folder", root=str(folder), decoded_cache=True, cache_dir=str(cache))
    second.setup("fit")
    assert (first.num_train, second.num_train) == (12, 13)
    assert len(list((cache / "decoded").glob("ok-train-*.npz"))) == 2


def test_a_torn_decoded_cache_is_rebuilt_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder, cache = make_folder(tmp_path / "ok", per_class=2), tmp_path / "cache"
    first = datamodule(name="folder", root=str(folder), decoded_cache=True, cache_dir=str(cache))
    first.setup("fit")
    (torn, *_) = sorted((cache / "decoded").glob("ok-train-*.npz"))
    torn.write_bytes(torn.read_bytes()[:100])   # a copy cut short, or a disk that filled while it was copied
    again = datamodule(name="folder", root=str(folder), decoded_cache=True, cache_dir=str(cache))
    again.setup("fit")
    assert again.num_train == first.num_train == 6 and again.train_set.targets == first.train_set.targets
    assert np.array_equal(again.train_set.pixels, first.train_set.pixels)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert str(torn) in warning and "rebuilding it" in warning


def test_decoded_cache_skips_or_names_a_bad_image(folder_with_truncated_jpeg: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    folder, bad = folder_with_truncated_jpeg
    strict = datamodule(name="folder", root=str(folder), decoded_cache=True, cache_dir=str(tmp_path / "c1"))
    raises_data_error(lambda: strict.setup("fit"), str(bad), "data.bad_images=skip")
    lenient = datamodule(name="folder", root=str(folder), decoded_cache=True, cache_dir=str(tmp_path / "c2"),
                         bad_images="skip", batch_size=2)
    lenient.setup("fit")
    assert (lenient.num_train, lenient.num_val) == (6, 5)


class Niceness(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> int:
        return os.nice(0)   # the niceness of the process that loads the sample


def test_worker_nice_lowers_the_loader_priority(tmp_path: Path) -> None:
    dm = datamodule(name="folder", root=str(make_folder(tmp_path / "ok")), num_workers=1, worker_nice=5)
    dm.setup("fit")
    dm.train_set = Niceness()
    assert next(iter(dm.train_dataloader())).tolist() == [min(os.nice(0) + 5, 19)] * 4   # 19: the most nice
    raises_data_error(lambda: datamodule(worker_nice=-1), "data.worker_nice=-1", "0 to 19")


class LoadingProcess(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return np.full((2,), os.getpid()), index   # which process loaded the sample


@pytest.mark.slow
def test_batch_processes_load_a_batch_together_reproducibly(tmp_path: Path) -> None:
    """The pool splits each batch between this process and its own (`data.batch_processes`), and the augmented
    batch does not depend on how many processes share it: each image has its own seed from this process."""
    folder = make_folder(tmp_path / "ok", per_class=4)
    batches = []
    for processes in (0, 2, 3):
        dm = datamodule(name="folder", root=str(folder), augment=augment("modern"), batch_processes=processes)
        dm.setup("fit")
        torch.manual_seed(0)
        batches.append(next(iter(dm.train_dataloader())))
    (x0, y0), (x2, y2), (x3, y3) = batches
    assert torch.equal(x2, x3) and torch.equal(y2, y3) and x2.dtype == torch.uint8
    assert x2.shape == x0.shape and not torch.equal(x0, x2)   # same transform, other random draws than in-process
    pool = BatchPool(LoadingProcess(), 3)
    pids, indices = next(iter(torch.utils.data.DataLoader(pool, batch_size=8)))
    helpers = set(pids[:, 0].tolist()) - {os.getpid()}
    assert indices.tolist() == list(range(8)) and 1 <= len(helpers) <= 2   # the two shares, by either helper
    assert pids[0, 0] == os.getpid()   # the first share loads here
    pool.close()   # at the job's end (ImageDataModule.teardown) its processes end: a sweep runs many jobs
    for pid in helpers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    single = BatchPool(LoadingProcess(), 2)   # one helper: when it dies, no other can take its share
    pids, _ = next(iter(torch.utils.data.DataLoader(single, batch_size=8)))
    os.kill(int(pids[-1, 0]), signal.SIGKILL)
    with pytest.raises(BrokenProcessPool):   # the next batch raises; it does not hang
        next(iter(torch.utils.data.DataLoader(single, batch_size=8)))
    single.close()
    dm.teardown("fit")
    assert dm.train_set._pool is None and dm.val_set._pool is None
    raises_data_error(lambda: datamodule(batch_processes=-1), "data.batch_processes=-1", "integer >= 0")
    raises_data_error(lambda: datamodule(batch_processes=2, num_workers=1), "data.batch_processes=2",
                      "data.num_workers=0")


# --- archives --------------------------------------------------------------------------------------------------

def test_archive_is_extracted_once_and_found_three_ways(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    archive = make_archive(make_folder(tmp_path / "src"), data / "imagewoof2-160.tgz")
    cache = tmp_path / "cache"
    dm = datamodule(name="imagewoof", root=str(data), cache_dir=str(cache))
    dm.prepare_data()
    dm.setup("fit")
    assert dm.data_dir == cache / "imagewoof2-160" and (dm.num_train, dm.num_val) == (12, 12)
    assert sorted(p.name for p in cache.iterdir()) == ["imagewoof2-160"]   # no temporary folder left over
    by_path = datamodule(name="imagewoof", root=str(archive), cache_dir=str(tmp_path / "cache2"))
    by_path.setup("fit")
    assert by_path.data_dir == tmp_path / "cache2" / "imagewoof2-160"
    archive.write_bytes(b"not read again")   # the cache is reused, the archive is not opened
    reused = datamodule(name="imagewoof", root=str(data), cache_dir=str(cache))
    reused.setup("fit")
    assert reused.num_train == 12
    extracted = datamodule(name="imagewoof", root=str(cache), cache_dir=str(tmp_path / "unused"))
    extracted.setup("fit")
    assert extracted.data_dir == cache / "imagewoof2-160" and not (tmp_path / "unused").exists()


def test_download_when_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """download=true fetches the official archive when it is absent (no network here: the fetch is faked)."""
    source = make_archive(make_folder(tmp_path / "src"), tmp_path / "official.tgz")
    fetched = []

    def fake_download(url: str, root: str, filename: str) -> None:
        fetched.append(url)
        (Path(root) / filename).write_bytes(source.read_bytes())

    monkeypatch.setattr("roadmap.data.archives.download_url", fake_download)
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    dm = datamodule(name="imagewoof", root=str(data), cache_dir=str(cache), download=True)
    dm.prepare_data()
    dm.setup("fit")
    assert fetched == ["https://s3.amazonaws.com/fast-ai-imageclas/imagewoof2-160.tgz"] and dm.num_train == 12

    def offline(url: str, root: str, filename: str) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr("roadmap.data.archives.download_url", offline)
    raises_data_error(lambda: datamodule(name="imagenette", root=str(data), cache_dir=str(cache),
                                         download=True).prepare_data(), "imagenette2-160.tgz", "unreachable")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_archive_leaves_nothing_behind(tmp_path: Path, damage: str) -> None:
    archive = make_archive(make_folder(tmp_path / "src", per_class=8), tmp_path / "imagewoof2-160.tgz")
    if damage == "garbage":
        archive.write_bytes(np.random.default_rng(0).bytes(4096))
    else:
        archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    cache = tmp_path / "cache"
    raises_data_error(lambda: datamodule(name="imagewoof", root=str(archive), cache_dir=str(cache)).prepare_data(),
                      str(archive), "corrupt or truncated")
    assert list(cache.iterdir()) == []


def test_archive_without_the_expected_layout(tmp_path: Path) -> None:
    archive = make_archive(make_folder(tmp_path / "src", splits=("train",)), tmp_path / "imagewoof2-160.tgz")
    cache = tmp_path / "cache"
    raises_data_error(lambda: datamodule(name="imagewoof", root=str(archive), cache_dir=str(cache)).prepare_data(),
                      str(archive), "imagewoof2-160/val")
    assert list(cache.iterdir()) == []


# --- corrupt images --------------------------------------------------------------------------------------------

@pytest.fixture
def folder_with_truncated_jpeg(tmp_path: Path) -> tuple[Path, Path]:
    folder = make_folder(tmp_path / "ok", per_class=2)
    bad = folder / "val" / "ant" / "0.JPEG"
    bad.write_bytes(bad.read_bytes()[:200])
    return folder, bad


def test_truncated_jpeg_fails_clearly(folder_with_truncated_jpeg: tuple[Path, Path]) -> None:
    folder, bad = folder_with_truncated_jpeg
    dm = datamodule(name="folder", root=str(folder), batch_size=2)
    dm.setup("fit")   # nothing is decoded up front
    error = raises_data_error(lambda: next(iter(dm.val_dataloader())), str(bad), "data.bad_images=skip")
    assert isinstance(type(error)("message"), DataError)   # how a DataLoader worker re-raises it: type(message)


def test_truncated_jpeg_is_skipped_with_one_warning(folder_with_truncated_jpeg: tuple[Path, Path],
                                                    caplog: pytest.LogCaptureFixture) -> None:
    folder, bad = folder_with_truncated_jpeg
    dm = datamodule(name="folder", root=str(folder), batch_size=2, bad_images="skip")
    dm.setup("fit")
    with caplog.at_level(logging.WARNING, logger="roadmap.data"):
        batches = [list(dm.val_dataloader()) for _ in range(2)]
    assert sum(str(bad) in record.getMessage() for record in caplog.records) == 1
    x, y = batches[0][0]
    assert torch.equal(x[0], x[1]) and y.tolist() == [0, 0]   # index 0 replaced by index 1, same class here
    assert torch.equal(batches[0][0][0], batches[1][0][0])     # the same substitute every epoch


# --- Stanford Dogs and top_classes -----------------------------------------------------------------------------

# Uneven breeds, as Stanford Dogs' folders are named. The fixed split holds out round(20%) of each (at least one):
# train 7, 5, 10, 5, 2; so the top 3 are Shih-Tzu (10), Chihuahua (7), then a 5-5 tie that the folder name breaks:
# n02085782-Japanese_spaniel before n02088094-Afghan_hound.
BREEDS = {"n02085620-Chihuahua": 9, "n02085782-Japanese_spaniel": 6, "n02086240-Shih-Tzu": 12,
          "n02088094-Afghan_hound": 6, "n02100236-German_short-haired_pointer": 3}


@pytest.fixture
def dogs_root(tmp_path: Path) -> Path:
    """A tiny Stanford Dogs: root/Images/<wnid>-<breed>/<wnid>_<i>.jpg, 40 x 40 px."""
    rng = np.random.default_rng(0)
    for folder, count in BREEDS.items():
        (tmp_path / "dogs" / "Images" / folder).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "dogs" / "Images" / folder / f"{folder[:9]}_{i}.jpg")
    return tmp_path / "dogs"


def dogs(root: Path, **kwargs) -> ImageDataModule:
    """The set-up stanford_dogs datamodule over `root`."""
    dm = datamodule(**{"name": "stanford_dogs", "root": str(root), "num_classes": len(BREEDS), "batch_size": 2,
                       **kwargs})
    dm.setup("fit")
    return dm


def files_of(folder: ImageFolder) -> list[str]:
    """An ImageFolder's images as <class folder>/<file>, the official lists' form."""
    return [Path(path).relative_to(folder.root).as_posix() for path, _ in folder.samples]


def save_list(path: Path, files: list[str]) -> None:
    """An official-style list: `file_list` a MATLAB cell column of paths relative to Images/."""
    cells = np.empty((len(files), 1), dtype=object)
    for i, file in enumerate(files):
        cells[i, 0] = np.array([file])
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"file_list": cells})


def test_stanford_dogs_fixed_split_is_stratified_and_ignores_the_seed(dogs_root: Path) -> None:
    runs = [dogs(dogs_root, seed=seed) for seed in (0, 1)]
    train, val = files_of(runs[0].train_set), files_of(runs[0].val_set)
    assert (train, val) == (files_of(runs[1].train_set), files_of(runs[1].val_set))   # a fixed split
    assert not set(train) & set(val) and sorted(train + val) == sorted(
        f"{p.parent.name}/{p.name}" for p in (dogs_root / "Images").rglob("*.jpg"))
    assert np.bincount(runs[0].val_set.targets).tolist() == [2, 1, 2, 1, 1]   # 20% of 9, 6, 12, 6, 3, at least 1
    assert runs[0].class_names == ["Chihuahua", "Japanese spaniel", "Shih-Tzu", "Afghan hound",
                                   "German short-haired pointer"]
    assert runs[0].val_set.root == runs[0].train_set.root == str(dogs_root / "Images")


def test_top_classes_keeps_the_best_represented_breeds(dogs_root: Path) -> None:
    dm = dogs(dogs_root, num_classes=3, top_classes=3)
    assert dm.class_names == ["Chihuahua", "Japanese spaniel", "Shih-Tzu"]   # Afghan hound lost the 5-5 tie
    for split, per_class in ((dm.train_set, [7, 5, 10]), (dm.val_set, [2, 1, 2])):
        assert np.bincount(split.targets).tolist() == per_class   # labels 0..2, every kept image, no other
        assert split.classes == ["n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02086240-Shih-Tzu"]
        assert all(Path(path).parent.name == split.classes[target] for path, target in split.samples)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 3, 32, 32) and set(y.tolist()) <= {0, 1, 2}
    assert "3 classes" in dm.describe()


def test_stanford_dogs_official_lists_split_and_rank_ties_by_all_images(dogs_root: Path) -> None:
    """The official lists decide the split (their test list is val). Like the real ones, they give every breed the
    same training count, so top_classes ranks the tie by the images a breed has in all: Shih-Tzu, Chihuahua."""
    everything = sorted(f"{p.parent.name}/{p.name}" for p in (dogs_root / "Images").rglob("*.jpg"))
    listed_train = [f for f in everything if f.endswith(("_0.jpg", "_1.jpg"))]
    listed_test = [f for f in everything if f not in listed_train]
    save_list(dogs_root / "lists" / "train_list.mat", listed_train)
    save_list(dogs_root / "lists" / "test_list.mat", listed_test)
    dm = dogs(dogs_root)
    assert (files_of(dm.train_set), files_of(dm.val_set)) == (listed_train, listed_test)
    top = dogs(dogs_root, num_classes=2, top_classes=2)
    assert top.class_names == ["Chihuahua", "Shih-Tzu"] and np.bincount(top.val_set.targets).tolist() == [7, 10]
    for name in ("train_list.mat", "test_list.mat"):   # the lists beside Images/ are found too
        (dogs_root / "lists" / name).rename(dogs_root / name)
    assert files_of(dogs(dogs_root).val_set) == listed_test


def test_stanford_dogs_errors_are_one_line(dogs_root: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    raises_data_error(lambda: dogs(missing), str(missing), "does not exist", "Images/<wnid>-<breed>/*.jpg")
    raises_data_error(lambda: dogs(dogs_root / "Images"), "has no Images/ folder", "train_list.mat")
    save_list(dogs_root / "train_list.mat", ["n02085620-Chihuahua/n02085620_0.jpg"])
    raises_data_error(lambda: dogs(dogs_root), "train_list.mat alone", "test_list.mat")
    save_list(dogs_root / "test_list.mat", ["n02085620-Chihuahua/n02085620_0.jpg"])
    raises_data_error(lambda: dogs(dogs_root), "1 images are in both", "n02085620_0.jpg")
    save_list(dogs_root / "test_list.mat", ["n02085620-Chihuahua/n02085620_99.jpg"])
    raises_data_error(lambda: dogs(dogs_root), "1 images of the official lists are not in", "n02085620_99.jpg")
    (dogs_root / "test_list.mat").write_bytes(b"not a MATLAB file")
    raises_data_error(lambda: dogs(dogs_root), str(dogs_root / "test_list.mat"), "cannot read file_list")


def test_top_classes_errors_are_one_line(dogs_root: Path) -> None:
    raises_data_error(lambda: dogs(dogs_root, num_classes=6, top_classes=6), "data.top_classes=6", "allowed 1 to 5")
    raises_data_error(lambda: datamodule(name="folder", top_classes=0, num_classes=0), "data.top_classes=0",
                      "integer >= 1")
    raises_data_error(lambda: datamodule(name="folder", top_classes=2, num_classes=3),
                      "data.num_classes=3", "data.top_classes=2")
    raises_data_error(lambda: datamodule(name="cifar10", top_classes=2, num_classes=2),
                      "data.top_classes=2", "data.name=cifar10", "stanford_dogs")


def test_top_classes_composes_with_the_decoded_cache_subsets_and_batch_processes(dogs_root: Path,
                                                                                 tmp_path: Path) -> None:
    """The cache decodes only the kept breeds, under its own key (the plain dataset has other files and labels),
    and the stratified subset and the batch pool see the relabelled classes."""
    cache = tmp_path / "cache"
    top = dogs(dogs_root, num_classes=3, top_classes=3, decoded_cache=True, cache_dir=str(cache),
               train_per_class=2, val_per_class=1, batch_processes=2)
    subset = top.train_set.dataset   # BatchPool(Subset(DecodedImages))
    assert isinstance(subset.dataset, roadmap.data.DecodedImages) and len(subset.dataset) == 22   # 7 + 5 + 10
    assert np.bincount([subset.dataset.targets[i] for i in subset.indices]).tolist() == [2, 2, 2]
    x, y = next(iter(top.train_dataloader()))
    assert x.shape == (2, 3, 32, 32) and set(y.tolist()) <= {0, 1, 2} and top.num_val == 3
    top.teardown("fit")
    plain = dogs(dogs_root, decoded_cache=True, cache_dir=str(cache))
    assert plain.num_train == 29 and len(list((cache / "decoded").glob("dogs-Images-*.npz"))) == 4


def test_wnid_folders_are_named_as_imagenet_classes(tmp_path: Path) -> None:
    """Imagewoof's, Imagenette's and ImageNet's class folders are wnids; their names come from timm's ImageNetInfo,
    a name two wnids share keeps its wnid (per-class results are keyed by name), and other folders keep theirs."""
    wnids = ("n02012849", "n02086240", "n03126707", "n99999999", "tabby")
    folder = datamodule(name="folder", root=str(make_folder(tmp_path / "woof", classes=wnids, per_class=1)),
                        num_classes=len(wnids), batch_size=1)
    folder.setup("fit")
    assert folder.class_names == ["crane (n02012849)", "Shih-Tzu", "crane (n03126707)", "n99999999", "tabby"]


def test_class_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synthetic = datamodule(train_size=8, val_size=8)
    with pytest.raises(RuntimeError, match="setup"):
        synthetic.class_names
    synthetic.setup("fit")
    assert synthetic.class_names == [str(c) for c in range(3)]
    folder = datamodule(name="folder", root=str(make_folder(tmp_path / "ok")))
    folder.setup("fit")
    assert folder.class_names == list(CLASSES)

    class TwoClassCifar(torch.utils.data.Dataset):
        classes = ["airplane", "automobile"]

        def __init__(self, root: str, train: bool, transform: object, download: bool) -> None:
            pass

        def __len__(self) -> int:
            return 8

    monkeypatch.setitem(roadmap.data.datamodule.CIFAR, "cifar10", TwoClassCifar)
    cifar = datamodule(name="cifar10", root=str(tmp_path), num_classes=2)
    cifar.setup("fit")
    assert cifar.class_names == ["airplane", "automobile"]


@pytest.mark.parametrize("name,classes", [("stanford_dogs", 120), ("imagewoof", 10), ("imagenet", 1000)])
def test_num_classes_follows_top_classes(name: str, classes: int) -> None:
    assert compose([f"data={name}"]).data.num_classes == classes
    cfg = compose([f"data={name}", "data.top_classes=20"])
    assert cfg.data.num_classes == cfg.model.num_classes == 20
    assert instantiate(cfg.data).num_classes == 20   # and the datamodule accepts the pair


# --- configs and real data -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", DATASETS)
def test_every_data_config_instantiates(name: str) -> None:
    """Each conf/data/ config builds the datamodule its file is named after (`DATASETS` is read from the names)."""
    given = ["data.num_classes=3"] if name == "folder" else []   # the one config without a class count (below)
    dm = instantiate(compose([f"data={name}", "recipe=modern", *given]).data)
    assert isinstance(dm, ImageDataModule) and dm.name == name
    assert any(isinstance(t, RandAugment) for t in dm.train_transform.transforms)


def test_folder_config_demands_num_classes() -> None:
    assert OmegaConf.is_missing(compose(["data=folder"]).data, "num_classes")


@pytest.fixture(scope="session")
def imagewoof_dir(data_cache: Path) -> tuple[str, str]:
    """The real archive's folder and the session's cache (conftest), the archive extracted into it."""
    data_dir = str(imagewoof_archive().parent)
    dm = instantiate(compose(["data=imagewoof", f"data.root={data_dir}", f"paths.cache_dir={data_cache}"]).data)
    dm.prepare_data()
    return data_dir, str(data_cache)


@pytest.mark.data
def test_imagewoof_batch(imagewoof_dir: tuple[str, str]) -> None:
    data_dir, cache = imagewoof_dir
    cfg = compose(["data=imagewoof", f"data.root={data_dir}", f"paths.cache_dir={cache}", "data.image_size=64",
                   "data.train_per_class=2", "data.val_per_class=1", "data.batch_size=8", "data.num_workers=0"])
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    assert (dm.num_train, dm.num_val) == (20, 10)
    assert dm.data_dir == Path(cache) / "imagewoof2-160" and "imagewoof: 20 train / 10 val" in dm.describe()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 64, 64) and x.dtype == torch.uint8   # normalised per batch, on the device
    x, y = dm.on_after_batch_transfer((x, y), 0)
    assert x.dtype == torch.float32 and -3 < x.mean() < 3
    assert y.min() >= 0 and y.max() < 10
    x_val, y_val = next(iter(dm.val_dataloader()))
    assert x_val.shape == (8, 3, 64, 64)
    assert sorted(y for _, y in dm.val_set) == list(range(10))
