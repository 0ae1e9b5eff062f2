"""Train one roadmap step (or a sweep of them): `python run.py +roadmap=step05_kernel7`, `python run.py -m ...`."""
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from roadmap.config import ROOT
from roadmap.runs import launch, launched_jobs
from roadmap.train import run_job


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    return run_job(cfg)


def closing_lines(jobs: list[dict]) -> tuple[list[str], int]:
    """One line per job of a sweep (name, seed, status, top-1, directory), then how many did not finish."""
    lines = [f"  {job.get('name')} seed {job.get('seed')}: {job['status']}"
             + (f", top-1 {job['acc1']:.2f} %" if job.get("acc1") is not None else "")
             + (f" ({job['error']})" if job["status"] != "finished" and job.get("error") else "")
             + f"  {job['run_dir']}" for job in jobs]
    failed = sum(job["status"] != "finished" for job in jobs)
    return lines, failed


if __name__ == "__main__":
    # the jobs record themselves in a launch file, whichever process or node runs them: the exit code and the
    # closing lines come from there, not from this process's memory
    log_dir = Path(os.environ.get("ROADMAP_OUTPUT_DIR", ROOT / "outputs"))
    code = 0
    with launch(log_dir) as record:
        try:
            main()
        except SystemExit as e:   # Hydra's own errors, and an interruption that ended the command
            code = e.code if isinstance(e.code, int) else 1
        finally:   # HYDRA_FULL_ERROR=1 lets a traceback through: the record goes all the same
            jobs = launched_jobs(record)
            record.unlink()
    lines, failed = closing_lines(jobs)
    if len(jobs) > 1 or failed:
        print(f"{len(jobs)} job(s), {failed} not finished:", *lines, sep="\n",
              file=sys.stderr if failed else sys.stdout)
    sys.exit(code or (1 if failed else 0))
