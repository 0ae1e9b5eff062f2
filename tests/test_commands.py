"""run.py's commands that train nothing: --help lists what there is to run, --cfg job prints the config, and a config
error is one line; none of them loads torch, Lightning or W&B, or writes a file."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.configs import REPO

HEAVY = ("torch", "lightning", "wandb")
# run.py as `python run.py ARGS` runs it, then which of HEAVY the process imported, on its last line
PROBE = ("import atexit, runpy, sys; "
         f"atexit.register(lambda: print(sorted(m for m in {HEAVY!r} if m in sys.modules))); "
         "sys.argv = ['run.py', *sys.argv[1:]]; runpy.run_path('run.py', run_name='__main__')")


def run_light(*args: str, out: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    """`python run.py ARGS` in a fresh process with its outputs in `out`, and the heavy modules it imported."""
    env = {**os.environ, "ROADMAP_OUTPUT_DIR": str(out), "ROADMAP_DATA_DIR": str(out / "my_data")}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO, env=env)
    return proc, ast.literal_eval(proc.stdout.strip().splitlines()[-1])


def _configs(folder: str) -> list[str]:
    root = REPO / folder
    return [str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml")]


@pytest.mark.slow
def test_help_lists_what_there_is_to_run_and_loads_nothing_heavy(tmp_path):
    proc, heavy = run_light("--help", out=tmp_path)
    assert proc.returncode == 0, proc.stderr
    page = proc.stdout
    assert heavy == [] and list(tmp_path.iterdir()) == []   # nothing imported that it does not need, nothing written
    assert "A ConvNet for the 2020s" in page and page.count("  python ") >= 5   # what it is, example commands
    for folder in ("conf/roadmap", "experiments/experiment", "experiments/budget", "experiments/ablation",
                   "conf/model", "conf/data", "conf/recipe"):
        names = _configs(folder)
        assert names and all(f"\n  {name} " in page for name in names), folder   # one line each, read from disk
    assert "_schema" not in page and "== Config ==" not in page   # no schema entries, no config dump
    assert page.index("step02a_stage_ratio") < page.index("step02_macro_design")   # Table 10's order
    assert 'Step 05 — "Increasing the kernel size"' in page   # each config's own summary
    assert str(tmp_path / "my_data") in page   # where data is looked for, as it resolves
    bad, _ = run_light("--help", "data.image_size=abc", out=tmp_path)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
        "config error: data.image_size: Value 'abc' of type 'str' could not be converted to Integer"]


@pytest.mark.slow
def test_cfg_job_resolve_prints_the_resolved_config(tmp_path):
    """It failed with an unnamed TypeError: the checkpoint directory of a job that has no run directory yet."""
    proc, heavy = run_light("+roadmap=step05_kernel7", "--cfg", "job", "--resolve", out=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert heavy == [] and list(tmp_path.iterdir()) == []
    assert "kernel_size: 7" in proc.stdout and "name: step05_kernel7" in proc.stdout   # resolved
    assert "dirpath: null" in proc.stdout and "${" not in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("override,line", [
    ("data.image_size=abc", "config error: data.image_size: Value 'abc' of type 'str' could not be converted"),
    ("model.kernel_sise=7", "config error: model.kernel_sise is not a key of model; allowed: depths"),
])
def test_a_config_error_loads_nothing_heavy(tmp_path, override, line):
    proc, heavy = run_light(override, out=tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip().startswith(line) and "Traceback" not in proc.stderr, proc.stderr
    assert heavy == [] and list(tmp_path.iterdir()) == []
