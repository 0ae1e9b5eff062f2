"""Train one roadmap step (or a sweep of them): `python run.py +roadmap=step05_kernel7`, `python run.py -m ...`."""
import os
import signal
import sys
from pathlib import Path

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from roadmap.config import ROOT, help_page
from roadmap.console import FULL_ERROR_ENV
from roadmap.runs import launch, launched_jobs, stop_jobs
from roadmap.schema import config_error
from roadmap.slurm import quiet_job_watcher


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from roadmap.train import run_job   # torch, Lightning, W&B: only once a job runs, not for --help or --cfg
    return run_job(cfg)


def closing_lines(jobs: list[dict]) -> tuple[list[str], int]:
    """One line per job of a sweep (name, seed, status, top-1, directory), then how many did not finish."""
    lines = [f"  {job.get('name')} seed {job.get('seed')}: {job['status']}"
             + (f", top-1 {job['acc1']:.2f} %" if job.get("acc1") is not None else "")
             + (f" ({job['error']})" if job["status"] != "finished" and job.get("error") else "")
             + f"  {job['run_dir']}" for job in jobs]
    failed = sum(job["status"] != "finished" for job in jobs)
    return lines, failed


def pass_signals_on(record: Path) -> None:
    """SIGTERM or SIGINT to this command (Docker and Kubernetes signal the main process alone) reaches each job
    running in another process of this machine (a joblib sweep's workers) as SIGTERM: each checkpoints, records
    `interrupted` and exits while this command waits for it, then closes as usual. A job running in this process
    stops as it would have (its `Preemption` takes SIGTERM; SIGINT is a KeyboardInterrupt). A second signal acts
    at once."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum: int, frame: object) -> None:
        for sig, action in previous.items():
            signal.signal(sig, action)
        if os.getpid() in stop_jobs(record, signal.SIGTERM) and signum == signal.SIGINT:
            raise KeyboardInterrupt
    for sig in previous:
        signal.signal(sig, handler)


if __name__ == "__main__":
    if {"--help", "-h"} & set(sys.argv[1:]):   # the help page, written by roadmap.config rather than Hydra
        try:
            print(help_page([a for a in sys.argv[1:] if not a.startswith("-")]))
        except (HydraException, OmegaConfBaseException) as e:
            sys.exit(f"config error: {config_error(e)}")
        sys.exit(0)
    # the jobs record themselves in a launch folder, whichever process or node runs them: the exit code and the
    # closing lines come from there, not from this process's memory
    log_dir = Path(os.environ.get("ROADMAP_OUTPUT_DIR", ROOT / "outputs"))
    # Hydra raises a composition error (a wrong type, an unknown key) only under HYDRA_FULL_ERROR, else prints it
    # over several lines: raised, it is printed below as one line, unless the user asked for the traceback
    os.environ.setdefault(FULL_ERROR_ENV, os.environ.get("HYDRA_FULL_ERROR", "0"))
    os.environ["HYDRA_FULL_ERROR"] = "1"
    quiet_job_watcher()
    code = 0
    with launch(log_dir) as record:
        pass_signals_on(record)
        try:
            main()
        except SystemExit as e:   # an interruption that ended the command
            code = e.code if isinstance(e.code, int) else 1
        except Exception as e:   # composition, or the launcher's own (a SLURM job that died without a result)
            if os.environ[FULL_ERROR_ENV] == "1":
                raise
            composing = isinstance(e, (HydraException, OmegaConfBaseException))
            if composing:
                print(f"config error: {config_error(e)}", file=sys.stderr)
            else:
                from roadmap.console import one_line
                print(f"launcher error: {one_line(e)}", file=sys.stderr)
            code = 1
        finally:   # HYDRA_FULL_ERROR=1 lets a traceback through: the record goes all the same
            jobs = launched_jobs(record)
    lines, failed = closing_lines(jobs)
    if len(jobs) > 1 or failed:
        print(f"{len(jobs)} job(s), {failed} not finished:", *lines, sep="\n",
              file=sys.stderr if failed else sys.stdout)
    sys.exit(code or (1 if failed else 0))
