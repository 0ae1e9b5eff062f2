"""A real multirun (2 steps x 2 seeds, synthetic, CPU) through run.py: its console, then roadmap.report on its
directory. That a finished run is skipped is test_runs' (in this process); that a sweep's rerun finds its
jobs' directories is the signal test's."""
from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
from matplotlib.image import imread

from roadmap.report import write_report

from helpers.configs import REPO, TINY


@pytest.mark.slow
def test_tiny_multirun_then_report(tmp_path):
    env = {**os.environ, "ROADMAP_OUTPUT_DIR": str(tmp_path)}   # where the command's launch file goes
    proc = subprocess.run(
        [sys.executable, str(REPO / "run.py"), "-m", *TINY, "group=tiny", f"paths.log_dir={tmp_path}",
         "model.width_mult=0.25", "+roadmap=step00_baseline,step07_separate_downsampling", "seed=0,1"],
        capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the sweep ends with one line per job: name, seed, status, top-1 and directory
    closing = proc.stdout[proc.stdout.index("4 job(s), 0 not finished:"):].splitlines()[1:]
    assert len(closing) == 4 and all(": finished, top-1 " in line and str(tmp_path) in line for line in closing)
    out = proc.stdout + proc.stderr   # and no per-job banner of Hydra's
    assert "Launching 4 jobs" not in out and "#1 : " not in out
    assert len(out.splitlines()) <= 4 * 5 + 1, out   # per job: data, epoch, fit stopped, finished, its closing line
    summaries = sorted(p.relative_to(tmp_path).parts[2:4] for p in (tmp_path / "tiny").rglob("summary.json"))
    assert [(s.split(",")[0], d) for s, d in summaries] == [
        ("step00_baseline", "seed0"), ("step00_baseline", "seed1"),
        ("step07_separate_downsampling", "seed0"), ("step07_separate_downsampling", "seed1")]

    paths = write_report([tmp_path / "tiny"], tmp_path / "report")
    table = pd.read_csv(paths["csv"])
    for column in ("row", "n", "mean_top1", "std_top1", "ci95_top1", "delta_prev", "delta_prev_ci95",
                   "paper_top1", "paper_delta", "sign_agrees", "params_m", "gmacs", "train_img_per_s", "wall_s"):
        assert column in table.columns
    assert list(table["n"]) == [2, 2] and list(table["paper_top1"]) == [76.13, 81.97]
    assert table["delta_prev"].notna().sum() == 1 and table["ci95_top1"].notna().all()
    image = imread(paths["png"])
    assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0
    assert "step07_separate_downsampling" in open(paths["md"]).read()

