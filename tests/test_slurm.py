"""hydra/launcher=slurm on a real cluster (`.ci/slurm`'s single node): a sweep closes as locally, a failure sets the
exit code, and a preempted job checkpoints, is requeued by SLURM and finishes; quiet while it does."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from roadmap.runs import CHECKPOINTS, LAST, RUN_LOG, SUMMARY

from helpers.commands import run_py, start_held
from helpers.configs import SLURM

pytestmark = pytest.mark.slurm
SMALL = "model.width_mult=0.25"
NOISE = ("Bypassing sacct error", "accounting storage is disabled", "srun", "auto-requeueing")


def _summaries(log_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(log_dir.rglob(SUMMARY))]


def _quiet(out: str, log_dir: Path) -> None:
    """Nothing of the noise in the command's output or in the jobs' run.log, and no second checkpoint."""
    for text in (out, *(p.read_text() for p in log_dir.rglob(RUN_LOG))):
        for noise in NOISE:
            assert noise not in text, noise
    assert not list(log_dir.rglob("hpc_ckpt_*")), "Lightning's own SLURM checkpoint"


@pytest.mark.slow
def test_a_sweep_through_slurm_closes_as_locally_and_a_failed_job_fails_the_command(tmp_path):
    """Two jobs on the cluster, the second with a bad flag: the command closes with a line for each, the failed
    one's in one line, and exits 1, as a local sweep does (test_errors)."""
    proc = run_py("-m", *SLURM, "+roadmap=step05_kernel7", "model.kernel_size=3,4", SMALL, log_dir=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, out
    closing = proc.stderr[proc.stderr.index("2 job(s), 1 not finished:"):].splitlines()[1:3]
    finished = [line for line in closing if ": finished, top-1 " in line]
    failed = [line for line in closing if ": failed (" in line and "model.kernel_size=4 is invalid" in line]
    assert len(finished) == len(failed) == 1, out
    assert sorted(s["status"] for s in _summaries(tmp_path)) == ["failed", "finished"]
    _quiet(out, tmp_path)


@pytest.mark.slow
def test_a_preempted_slurm_job_checkpoints_is_requeued_and_finishes(tmp_path):
    """`scontrol requeue` (what a preemption with PreemptMode=REQUEUE does): SIGTERM mid-epoch 2 of 3, the
    checkpoint of the 5 steps done, SLURM's requeue, and the requeued job resumes to the 12 steps of a whole run."""
    name = f"roadmap-{tmp_path.name}"
    proc = start_held("-m", *SLURM, f"hydra.launcher.name={name}", "+roadmap=step00_baseline", SMALL,
                      "trainer.max_epochs=3", "trainer.limit_train_batches=4", log_dir=tmp_path)
    deadline = time.time() + 240
    try:
        job = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True).stdout.strip()
        subprocess.run(["scontrol", "requeue", job], check=True)
        # SLURM holds a requeued job for two minutes before it may start again: release it now
        while "PENDING" not in subprocess.run(["scontrol", "show", "job", job], capture_output=True,
                                              text=True).stdout and time.time() < deadline:
            time.sleep(0.2)
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    (summary,) = _summaries(tmp_path)
    assert summary["status"] == "finished" and summary["steps"] == 12
    log = next(tmp_path.rglob(RUN_LOG)).read_text()
    resumed = Path(summary["run_dir"]) / CHECKPOINTS / LAST
    assert "step00_baseline seed 0: interrupted" in log and f"resuming from {resumed}" in log
    _quiet(out, tmp_path)
