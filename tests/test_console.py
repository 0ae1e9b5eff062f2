"""What a user sees: a run's whole console in its run.log, and no third-party noise, while our own warnings show."""
from __future__ import annotations

import warnings

import pytest

from roadmap.console import quiet
from roadmap.runs import RUN_LOG

from helpers.commands import run_py

NOISE = ("litlogger", "LeafSpec", "GPU available", "TPU available", "smaller than the logging interval",
         "Automatic Mixed Precision", "to estimate number of stepping batches", "INFO: ")   # "INFO: " a 2nd copy


@pytest.mark.slow
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
    assert out.count("`Trainer.fit` stopped") == 1   # Lightning's lines once, through Hydra's handler


def test_our_own_warnings_still_show():
    """Under the filters quiet() installs (not pytest's), Lightning's LeafSpec deprecation is dropped while a
    deprecation raised in roadmap and a data warning still come through."""
    quiet()
    with warnings.catch_warnings(record=True) as seen:   # keeps the current filters, records what passes them
        for message, category, module in (
                ("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning,
                 "lightning.pytorch.utilities._pytree"),
                ("old_flag is deprecated", DeprecationWarning, "roadmap.models.blocks"),
                ("skipping corrupt image 'x.jpg'", UserWarning, "roadmap.data.cache")):
            warnings.warn_explicit(message, category, module.replace(".", "/") + ".py", 1, module=module)
    assert [str(w.message) for w in seen] == ["old_flag is deprecated", "skipping corrupt image 'x.jpg'"]
