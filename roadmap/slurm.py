"""What a job and the command that launched it do differently on a SLURM cluster: one preemption story, and no noise
from a cluster without accounting (README: When things go wrong)."""
from __future__ import annotations

import re
import shutil
import subprocess
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lightning.fabric.plugins.environments import SLURMEnvironment


def environment() -> list[SLURMEnvironment]:
    """Inside a SLURM job, Lightning's SLURM environment (ranks and addresses from srun) without its auto-requeue:
    on SIGUSR1 that writes a second full checkpoint (hpc_ckpt_N.ckpt, which a rerun would not fingerprint-check)
    and requeues the job itself. Here `roadmap.callbacks.Preemption` checkpoints and SLURM requeues."""
    from lightning.fabric.plugins.environments import SLURMEnvironment   # the launching command needs no Lightning
    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def accounting_disabled() -> bool:
    """Whether the cluster keeps no accounting (no slurmdbd, as on `.ci/slurm`'s), so that `sacct` cannot answer."""
    try:
        config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return re.search(r"^AccountingStorageType\s*=\s*accounting_storage/none", config, re.M) is not None


def quiet_job_watcher() -> None:
    """submitit asks `sacct` for its jobs' states at every poll and, where the cluster keeps no accounting, prints
    sacct's error and its own "Bypassing sacct error" warning each time. What it waits on is each job's result
    file, so on such a cluster its watcher asks nothing (a job that dies before writing one is then waited on until
    `scancel`). Clusters with accounting are left as they are."""
    if shutil.which("sacct") is None or not accounting_disabled():
        return
    from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

    class ResultFilesOnly(SlurmInfoWatcher):
        def _make_command(self) -> None:
            return None
    SlurmJob.watcher = ResultFilesOnly(delay_s=600)
