"""hydra/launcher=slurm on a real cluster (`.ci/slurm`'s single node): a sweep closes as locally, a failure sets the
exit code, and a preempted job checkpoints, is requeued by SLURM and finishes; quiet while it does."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from roadmap.runs import CHECKPOINTS, LAST, RUN_LOG, SUMMARY

from conftest import REPO, SLURM, TINY, run_py

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
def test_a_sweep_through_slurm_finishes_both_jobs(tmp_path):
    proc = run_py("-m", *SLURM, "+roadmap=step00_baseline,step07_separate_downsampling", SMALL, log_dir=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    closing = proc.stdout[proc.stdout.index("2 job(s), 0 not finished:"):].splitlines()[1:]
    assert len(closing) == 2 and all(": finished, top-1 " in line for line in closing), out
    assert [s["status"] for s in _summaries(tmp_path)] == ["finished", "finished"]
    _quiet(out, tmp_path)


@pytest.mark.slow
def test_a_failing_slurm_job_fails_the_command(tmp_path):
    proc = run_py("-m", *SLURM, "+roadmap=step05_kernel7", "model.kernel_size=4", SMALL, log_dir=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "1 job(s), 1 not finished" in out and "model.kernel_size=4 is invalid" in out, out
    (summary,) = _summaries(tmp_path)
    assert summary["status"] == "failed" and "Traceback" not in proc.stderr
    _quiet(out, tmp_path)


@pytest.mark.slow
def test_a_preempted_slurm_job_checkpoints_is_requeued_and_finishes(tmp_path):
    """`scontrol requeue` (what a preemption with PreemptMode=REQUEUE does): SIGTERM mid-epoch 2 of 3, the
    checkpoint of the 5 steps done, SLURM's requeue, and the requeued job resumes to the 12 steps of a whole run."""
    name, ready = f"roadmap-{tmp_path.name}", tmp_path / "ready"
    cmd = [sys.executable, str(REPO / "run.py"), "-m", *TINY, f"paths.log_dir={tmp_path}", *SLURM,
           f"hydra.launcher.name={name}", "+roadmap=step00_baseline", SMALL, "trainer.max_epochs=3",
           "trainer.limit_train_batches=4", "+callbacks.hold._target_=conftest.HoldForSignal",
           f"+callbacks.hold.ready={ready}"]
    env = {**os.environ, "ROADMAP_OUTPUT_DIR": str(tmp_path), "PYTHONPATH": str(REPO / "tests")}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 240
        while not ready.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert ready.exists(), "the job never reached epoch 2"
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
