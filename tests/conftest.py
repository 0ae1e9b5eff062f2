"""pytest's hooks and the fixtures: each worker's share of the cores, the test order and SLURM groups, tiny run
configs and a run finished once a session. What tests import lives in helpers/ (pytest-xdist's controller imports
this file too, and so nothing here loads torch or Lightning on import)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers.configs import FINISHED, TINY, compose


def pytest_configure(config):
    """Under pytest-xdist each worker gets its share of the cores (its runs and their subprocesses inherit it, and
    `trainer.cpu_threads=auto` counts it), so two workers' OpenMP threads never fight over one core."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", 1))
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if worker and 1 < count <= len(cores):
        import torch   # here, in a worker: the controller runs no test
        share = cores[int(worker.removeprefix("gw"))::count]
        os.sched_setaffinity(0, share)
        torch.set_num_threads(len(share))


@pytest.hookimpl(tryfirst=True)   # before pytest-xdist's own, which reads the group marks added here
def pytest_collection_modifyitems(config, items):
    """Tests marked `slurm` need a cluster: `.ci/slurm` starts one on this machine (root, Debian); else they skip.
    Under pytest-xdist they run one after another on one worker: the cluster has a task slot per core. The tests
    marked `data` share a worker too, and so one extraction of the real archive (`data_cache`; ~13,000 files, ~5 s
    to extract). The slow tests go first, so that no worker is left with a long one after the other has run out of
    tests."""
    items.sort(key=lambda item: "slow" not in item.keywords)
    skip = pytest.mark.skip(reason="no sbatch on PATH: start a local SLURM cluster with `sudo .ci/slurm`")
    for item in items:
        if "slurm" in item.keywords:
            item.add_marker(pytest.mark.xdist_group("slurm"))
            if shutil.which("sbatch") is None:
                item.add_marker(skip)
        if "data" in item.keywords:
            item.add_marker(pytest.mark.xdist_group("data"))


@pytest.fixture
def tiny_cfg(tmp_path):
    """compose(...) with the TINY overrides and the run directory in tmp_path."""
    def make(*overrides: str):
        base = TINY
        if any(o.startswith("data=") for o in overrides):  # another dataset: drop the synthetic-only keys
            base = [o for o in TINY if not o.startswith(("data=", "data.train_size", "data.val_size"))]
        return compose([*base, f"paths.output_dir={tmp_path / 'run'}", f"paths.log_dir={tmp_path}",
                        f"paths.cache_dir={tmp_path / 'cache'}", *overrides])
    return make


@pytest.fixture(scope="session")
def finished_once(tmp_path_factory) -> Path:
    """tiny_cfg(*FINISHED) trained to the end once a session: the directory of a finished run."""
    from roadmap.train import train   # Lightning and W&B: only for the tests that train
    root = tmp_path_factory.mktemp("finished")
    train(compose([*TINY, f"paths.output_dir={root / 'run'}", f"paths.log_dir={root}",
                   f"paths.cache_dir={root / 'cache'}", *FINISHED]))
    return root / "run"


@pytest.fixture
def finished(finished_once, tmp_path) -> Path:
    """tmp_path/run holding a copy of that finished run, where tiny_cfg(*FINISHED) puts its own: as if this test had
    trained it (paths are no part of a run's identity, so the copy is the same run), without training it again."""
    return Path(shutil.copytree(finished_once, tmp_path / "run"))


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """One extraction cache for the whole test session (the Imagewoof archive extracts once: the tests marked
    `data` run on one pytest-xdist worker)."""
    return tmp_path_factory.mktemp("data_cache")
