"""What a user sees: a run's whole console in its run.log, and no third-party noise, while our own warnings show."""
from __future__ import annotations

import warnings

import pytest

from roadmap.console import quiet
from roadmap.runs import RUN_LOG

from conftest import run_py

NOISE = ("litlogger", "LeafSpec", "GPU available", "TPU available", "smaller than the logging interval")


def test_run_log_holds_the_console_and_the_noise_is_gone(tmp_path):
    proc = run_py("+roadmap=step00_baseline", "model.width_mult=0.25", log_dir=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    (log,) = tmp_path.rglob(RUN_LOG)
    text = log.read_text()
    for line in ("epoch 1/1 val/acc1",               # a progress line (printed)
                 "`Trainer.fit` stopped",             # Lightning's own (logged)
                 "step00_baseline seed 0: finished"):  # the closing line, naming the directory
        assert line in text and line in out, line
    assert str(log.parent) in text
    for noise in NOISE:   # TINY's 2-batch epochs would trigger Lightning's log_every_n_steps warning
        assert noise not in out, noise


def test_our_own_warnings_still_show():
    quiet()
    with pytest.warns(DeprecationWarning, match="old_flag is deprecated"):
        warnings.warn_explicit("old_flag is deprecated", DeprecationWarning, "roadmap/models/blocks.py", 1,
                               module="roadmap.models.blocks")
    with pytest.warns(UserWarning, match="corrupt image"):
        warnings.warn("skipping corrupt image 'x.jpg'")
