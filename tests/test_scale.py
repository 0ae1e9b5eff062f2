"""Scale-out: 2-process DDP on CPU agrees with one process, also as a 2-task SLURM job; the SLURM launcher composes."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from roadmap.config import CONF_DIR
from roadmap.train import train

from helpers import configs
from helpers.configs import REPO, SLURM, TINY

# lr 0 on a LayerNorm model: weights cannot drift, so validation compares the cross-rank metric reduction
# (torchmetrics sync, sync_dist losses) with a single process on the same 64 validation images. fp32: under bf16
# (precision=auto on a CPU with native bf16) a logit depends on how the batch is split, and one borderline image
# of 64 flipped in top-5, which says nothing about the reduction.
RUN = [*TINY, "+roadmap=step07_separate_downsampling", "model.width_mult=0.25", "recipe.lr=0", "logger=csv",
       "trainer.limit_val_batches=null", "data.val_size=64", "data.batch_size=8", "trainer.precision=32-true"]


def _run(log_dir, *extra):
    flags = [a for a in extra if a.startswith("-")]   # Hydra's (-m) precede the overrides
    proc = subprocess.run([sys.executable, str(REPO / "run.py"), *flags, *RUN, f"paths.log_dir={log_dir}",
                           *(a for a in extra if a not in flags)],
                          capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "ROADMAP_OUTPUT_DIR": str(log_dir)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (summary,) = log_dir.rglob("summary.json")  # written once, by rank 0
    return json.loads(summary.read_text())


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict:
    """The one-process run to compare with: train() in this process, as run.py runs it, on the same config (once
    for both tests a pytest-xdist worker runs)."""
    log_dir = tmp_path_factory.mktemp("single")
    train(configs.compose([*RUN, f"paths.log_dir={log_dir}", f"paths.output_dir={log_dir / 'run'}"]))
    return json.loads((log_dir / "run" / "summary.json").read_text())


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(single, tmp_path):
    ddp = _run(tmp_path / "ddp", "trainer.devices=2", "trainer.strategy=ddp")
    assert ddp["status"] == single["status"] == "finished"
    for key in ("acc1", "acc5", "val_loss"):
        assert abs(ddp[key] - single[key]) < 1e-4, (key, ddp[key], single[key])
    assert ddp["checkpoint_kept"] == single["checkpoint_kept"] == ["checkpoints/best.pt"]   # rank 0's, alone


@pytest.mark.slow
@pytest.mark.slurm
def test_a_two_task_slurm_job_reduces_metrics_across_ranks(single, tmp_path):
    """tasks_per_node=2: srun starts both ranks (Lightning's SLURM environment, gloo); rank 0 alone writes the
    summary and the launch record, with the metrics of the whole validation set, as one process computes them."""
    ddp = _run(tmp_path / "slurm", "-m", *SLURM, "hydra.launcher.tasks_per_node=2", "trainer.devices=2",
               "trainer.strategy=ddp")
    assert ddp["status"] == single["status"] == "finished"
    for key in ("acc1", "acc5", "val_loss"):
        assert abs(ddp[key] - single[key]) < 1e-4, (key, ddp[key], single[key])


@pytest.mark.parametrize("launcher", ["submitit_slurm", "slurm"])
def test_slurm_launcher_composes(launcher):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=trajectory", f"hydra/launcher={launcher}",
                                           "trainer.num_nodes=2"], return_hydra_config=True)
    launcher_cfg = cfg.hydra.launcher
    assert launcher_cfg._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    if launcher == "slurm":  # our preset: one GPU task per node, nodes follow the trainer
        assert launcher_cfg.nodes == 2 and launcher_cfg.gpus_per_node == 1 and launcher_cfg.timeout_min == 1440
