"""fast.ai's Imagewoof/Imagenette archives: found, downloaded if allowed, extracted once and atomically."""
from __future__ import annotations

import logging
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

from torchvision.datasets.utils import download_url

from roadmap.data.errors import DataError
from roadmap.data.folders import check_root

log = logging.getLogger(__name__)

FASTAI_ARCHIVES = {"imagewoof": "imagewoof2-160", "imagenette": "imagenette2-160"}
FASTAI_URL = "https://s3.amazonaws.com/fast-ai-imageclas/{}.tgz"


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
        check_root(root, expected)
        raise DataError(f"{name}: no {stem}.tgz and no {stem}/{{train,val}} in '{root}'; expected {expected} "
                        "(or set data.download=true to fetch the official archive)")
    return extract_once(archive, cache_dir, stem)
