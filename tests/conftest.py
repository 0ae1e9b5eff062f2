"""Shared fixtures: tiny, CPU-only, logger-free configs composed from the real conf/ tree."""
from __future__ import annotations

import copy
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from PIL import Image

import roadmap.config

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = os.environ.get("ROADMAP_DATA_DIR")
STEPS = sorted(p.stem for p in (REPO / "conf" / "roadmap").glob("*.yaml"))

# Small enough for 2 CPU cores: 32-px synthetic images, a handful of batches, no W&B.
TINY = ["data=synthetic", "data.image_size=32", "data.batch_size=16", "data.num_workers=0",
        "data.train_size=160", "data.val_size=64", "logger=none", "trainer.accelerator=cpu",
        "trainer.devices=1", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=2", "trainer.deterministic=true"]


@functools.cache
def _composed(overrides: tuple[str, ...], cwd: str) -> DictConfig:
    return roadmap.config.compose_with_hydra(overrides)


def compose_with_hydra(overrides: Sequence[str] = ()) -> DictConfig:
    """`roadmap.config.compose_with_hydra`, each list of overrides composed once a session (conf/ does not change
    while the suite runs; Hydra reads the working directory then, hence the key): a fresh copy on every call, for
    tests change theirs, made the current HydraConfig as Hydra's composition makes it."""
    cfg = copy.deepcopy(_composed(tuple(overrides), os.getcwd()))
    HydraConfig.instance().set_config(cfg)
    return cfg


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """`roadmap.compose` over the session's compositions: the same config without its `hydra` node."""
    return roadmap.config.without_hydra(compose_with_hydra(overrides))


def pytest_configure(config):
    """Under pytest-xdist each worker gets its share of the cores (its runs and their subprocesses inherit it, and
    `trainer.cpu_threads=auto` counts it), so two workers' OpenMP threads never fight over one core."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", 1))
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if worker and 1 < count <= len(cores):
        share = cores[int(worker.removeprefix("gw"))::count]
        os.sched_setaffinity(0, share)
        torch.set_num_threads(len(share))


@pytest.hookimpl(tryfirst=True)   # before pytest-xdist's own, which reads the group marks added here
def pytest_collection_modifyitems(config, items):
    """Tests marked `slurm` need a cluster: `.ci/slurm` starts one on this machine (root, Debian); else they skip.
    Under pytest-xdist they run one after another on one worker: the cluster has a task slot per core. The slow
    tests go first, so that no worker is left with a long one after the other has run out of tests."""
    items.sort(key=lambda item: "slow" not in item.keywords)
    skip = pytest.mark.skip(reason="no sbatch on PATH: start a local SLURM cluster with `sudo .ci/slurm`")
    for item in items:
        if "slurm" in item.keywords:
            item.add_marker(pytest.mark.xdist_group("slurm"))
            if shutil.which("sbatch") is None:
                item.add_marker(skip)


# hydra/launcher=slurm on `.ci/slurm`'s cluster: no GPU to ask for, one core and a little memory per task
SLURM = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.mem_gb=2"]


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


FINISHED = ("+roadmap=step00_baseline", "model.width_mult=0.25")   # the run many tests need finished before they start


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


def _run_py(args: Sequence[str], log_dir: Path, env: dict | None) -> tuple[list[str], dict]:
    """The command line and environment of `python run.py` with tiny CPU settings and its output in log_dir."""
    flags = [a for a in args if a.startswith("-")]  # Hydra's flags (-m) precede the overrides
    cmd = [sys.executable, str(REPO / "run.py"), *flags, *TINY, f"paths.log_dir={log_dir}",
           *(a for a in args if not a.startswith("-"))]
    full_env = ({k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
                | {"ROADMAP_OUTPUT_DIR": str(log_dir)} | (env or {}))   # the launch file too stays in log_dir
    return cmd, full_env


def run_py(*args: str, log_dir: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python run.py` as a user types it (tiny CPU settings), in a fresh process."""
    cmd, full_env = _run_py(args, log_dir, env)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=full_env)


HOLD = "+callbacks.hold._target_=conftest.HoldForSignal"   # run.py finds it with tests/ on PYTHONPATH
READY = "ready"   # the file HoldForSignal makes in the run directory when it holds


def start_held(*args: str, log_dir: Path, jobs: int = 1) -> subprocess.Popen:
    """run_py's command with HOLD, in the background: returned once `jobs` of its jobs hold before step 2 of
    epoch 2, so that a signal sent now arrives mid-epoch, after epoch 1's checkpoint, however slow the machine.
    Its output is a pipe (`communicate()`)."""
    cmd, env = _run_py([*args, HOLD], log_dir, {"PYTHONPATH": str(REPO / "tests")})
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while len(list(log_dir.rglob(READY))) < jobs and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if proc.poll() is not None or len(list(log_dir.rglob(READY))) < jobs:
        proc.kill()
        pytest.fail("run.py's jobs did not hold at epoch 2:\n" + proc.communicate()[0])
    return proc


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
    if not DATA_DIR:
        pytest.skip("ROADMAP_DATA_DIR is not set (point it at ../shared/data to run real-data tests)")
    path = Path(DATA_DIR) / "imagewoof2-160.tgz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path


class CrashAfterFirstEpoch(L.Callback):
    """Simulates a crash once epoch 1 is done (after its checkpoint was written)."""

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 0:
            raise RuntimeError("simulated crash after epoch 1")


class PoisonWeightsAtSecondEpoch(L.Callback):
    """Makes the loss NaN at the first batch of epoch 2, after epoch 1 was checkpointed."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            with torch.no_grad():
                next(pl_module.model.parameters()).fill_(float("nan"))


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """One extraction cache for the whole test session (the Imagewoof archive extracts once)."""
    return tmp_path_factory.mktemp("data_cache")


class CrashAfterSecondEpoch(L.Callback):
    """Simulates a crash once epoch 2 is done: last.ckpt is epoch 2's, last.prev.ckpt epoch 1's."""

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise RuntimeError("simulated crash after epoch 2")


class SigtermAt(L.Callback):
    """Sends this process SIGTERM, as SLURM does at preemption, when the given step of epoch 2 is about to run."""

    def __init__(self, batch: int = 0):
        self.batch = batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)


class HoldForSignal(L.Callback):
    """Before step 2 of epoch 2, once: creates READY in the run directory and waits (a minute at most) for a
    preemption signal, so a signal sent when it appears arrives mid-run however slow the machine (start_held)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        ready = Path(trainer.default_root_dir) / READY
        if trainer.current_epoch == 1 and batch_idx == 1 and not ready.exists():
            (preemption,) = (c for c in trainer.callbacks if type(c).__name__ == "Preemption")
            ready.touch()
            deadline = time.time() + 60
            while preemption.received is None and time.time() < deadline:
                time.sleep(0.05)
