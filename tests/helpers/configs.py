"""Tiny, CPU-only, logger-free configs composed from the real conf/ tree, each composition once a session."""
from __future__ import annotations

import copy
import functools
import os
from collections.abc import Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import roadmap.config

REPO = Path(__file__).resolve().parents[2]
STEPS = sorted(p.stem for p in (REPO / "conf" / "roadmap").glob("*.yaml"))

# Small enough for 2 CPU cores: 32-px synthetic images, a handful of batches, no W&B.
TINY = ["data=synthetic", "data.image_size=32", "data.batch_size=16", "data.num_workers=0",
        "data.train_size=160", "data.val_size=64", "logger=none", "trainer.accelerator=cpu",
        "trainer.devices=1", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=2", "trainer.deterministic=true"]

FINISHED = ("+roadmap=step00_baseline", "model.width_mult=0.25")   # the run many tests need finished before they start

# hydra/launcher=slurm on `.ci/slurm`'s cluster: no GPU to ask for, one core and a little memory per task
SLURM = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.mem_gb=2"]


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
