"""`python run.py` as a user types it, in a fresh process: run to the end, or held mid-run for a signal."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from helpers.configs import REPO, TINY

HOLD = "+callbacks.hold._target_=helpers.faults.HoldForSignal"   # run.py finds it with tests/ on PYTHONPATH
READY = "ready"   # the file helpers.faults.HoldForSignal makes in the run directory when it holds


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
