"""A job's failure policy, in one place: whatever happens, the launch record gets the job's outcome, and the run
record a summary saying how it ended, written before any checkpoint is pruned (the template's `task_wrapper`)."""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from roadmap.callbacks import Preempted
from roadmap.checkpoints import prune
from roadmap.console import console_to, one_line, quiet
from roadmap.runs import CHECKPOINTS, RUN_LOG, RunError, Summary, launch_stopped, record_launch, run_lock
from roadmap.trainer import finish_wandb

log = logging.getLogger("roadmap")


def status_of(e: BaseException) -> str:
    return "interrupted" if isinstance(e, (KeyboardInterrupt, SystemExit)) else "failed"


@contextmanager
def launched(cfg: DictConfig, run_dir: Path) -> Iterator[dict[str, Any]]:
    """The job in its command's launch record (`runs.record_launch`): its start now, its outcome (the dict this
    yields, or the exception's) at the end. Meanwhile the run directory exists, its lock is held (one writer per
    run) and the console goes to its run.log."""
    job = {"run_dir": str(run_dir.resolve()), "name": cfg.name, "seed": cfg.seed,
           "started_at": datetime.now(timezone.utc).isoformat()}
    record = rank_zero_only(record_launch)   # the job's launch record is rank 0's, as its summary is
    record(job)
    outcome: dict[str, Any] = {"status": "failed"}
    try:
        if launch_stopped():   # the command was signalled while this job waited for a worker
            raise Preempted("the command was stopped before this job started; rerun it to run this job")
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunError(f"output directory {run_dir} is not writable ({e.strerror}): set "
                           "paths.log_dir=<writable dir> or ROADMAP_OUTPUT_DIR") from None
        quiet()
        with run_lock(run_dir) if rank_zero_only.rank == 0 else nullcontext(), console_to(run_dir / RUN_LOG):
            yield outcome
    except BaseException as e:
        outcome = {"status": status_of(e), "error": one_line(e)}
        raise
    finally:
        record({**job, **outcome})


@contextmanager
def summarised(summary: Summary, run_dir: Path, policy: str, started: float) -> Iterator[None]:
    """`summary` written to the run directory however the job ends (a failure: its status and one-line error),
    with its wall time; only then, once finished, the checkpoints pruned to the policy's, so a summary that cannot
    be written leaves the run resumable. The job's closing line, and its W&B run ended."""
    try:
        yield
    except BaseException as e:
        summary.status, summary.error = status_of(e), one_line(e)
        raise
    finally:
        summary.wall_s = time.perf_counter() - started
        summary.finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            if rank_zero_only.rank == 0:
                summary.write(run_dir)
                if summary.status == "finished":
                    prune(run_dir / CHECKPOINTS, policy)
                log.info(closing_line(summary))
        finally:
            finish_wandb()


def closing_line(summary: Summary) -> str:
    """What a run ends by saying: its status, top-1 when it finished, and where everything it wrote lies."""
    result = (f", top-1 {summary.acc1:.2f} % (best {summary.acc1_best:.2f})"
              if summary.status == "finished" and summary.acc1 is not None else "")
    return f"{summary.name} seed {summary.seed}: {summary.status}{result}; results in {summary.run_dir}"
