"""eval_only=true: a trained run's weights, scored again on the val split, give the run's own top-1, per class and
as a confusion matrix, in the eval/ folder of the run directory; a missing or unfitting ckpt_path is one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from roadmap import compose
from roadmap.runs import BEST_WEIGHTS, CHECKPOINTS, CONFUSION, EVAL, SUMMARY, run_dirs
from roadmap.train import run_job, train

from conftest import TINY, run_py

RUN = ("+roadmap=step00_baseline", "model.width_mult=0.25", "trainer.precision=32-true")   # fp32: half the time


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished tiny run's directory (checkpoint=resume keeps best.pt), trained in-process: this process's
    kernels are then warm for the in-process evaluations."""
    run_dir = tmp_path_factory.mktemp("trained")
    train(compose([*TINY, *RUN, f"paths.output_dir={run_dir}", f"paths.log_dir={run_dir}"]))
    return run_dir


def _class_names() -> list[str]:
    """What the evaluation should name the classes: the datamodule's names, else the class indices."""
    datamodule = instantiate(compose(TINY).data)
    datamodule.setup("validate")
    return getattr(datamodule, "class_names", None) or [str(i) for i in range(datamodule.num_classes)]


def test_eval_through_run_py_reproduces_the_runs_top1(trained, tmp_path):
    best = trained / CHECKPOINTS / BEST_WEIGHTS
    # quoted, as a run directory's path holds the '=' and ',' of its overrides
    proc = run_py(*RUN, "eval_only=true", f"ckpt_path='{best}'", log_dir=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (summary,) = tmp_path.rglob(SUMMARY)
    assert summary.parent.name == EVAL and summary.parent.parent.name == "seed0"   # inside the run directory
    ev, run = json.loads(summary.read_text()), json.loads((trained / SUMMARY).read_text())
    assert ev["status"] == "finished" and ev["epochs"] == 0 and ev["fingerprint"] == run["fingerprint"]
    assert ev["evaluated"]["name"] == BEST_WEIGHTS and ev["evaluated"]["path"] == str(best.resolve())
    # the same weights on the same val images: the training run's last validation, to the image
    assert (ev["acc1"], ev["acc5"]) == (run["acc1"], run["acc5"])
    assert ev["val_loss"] == pytest.approx(run["val_loss"], rel=1e-4)
    assert list(ev["per_class"]) == _class_names()
    assert all(v is None or 0 <= v <= 100 for v in ev["per_class"].values())
    with Image.open(summary.parent / CONFUSION) as png:
        png.verify()
        assert png.format == "PNG" and min(png.size) >= 500
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob(BEST_WEIGHTS))
    assert run_dirs(tmp_path) == ([], [])   # roadmap.report leaves evaluations out: they trained nothing


def test_eval_is_never_skipped(trained, tmp_path):
    """ckpt_path is not part of the directory: a second evaluation there, of other weights, replaces the first."""
    state = torch.load(trained / CHECKPOINTS / BEST_WEIGHTS, weights_only=True)
    state["state_dict"]["fc.weight"].zero_()   # every image gets the head's bias: one class predicted for all
    blind = tmp_path / "blind.pt"
    torch.save(state, blind)
    cfg = compose([*TINY, *RUN, "eval_only=true", f"paths.output_dir={tmp_path / 'eval'}"])
    summaries = []
    for weights in (trained / CHECKPOINTS / BEST_WEIGHTS, blind):
        cfg.ckpt_path = str(weights)
        train(cfg)
        summaries.append(json.loads((tmp_path / "eval" / SUMMARY).read_text()))
    good, bad = summaries
    assert bad["evaluated"]["sha256"] != good["evaluated"]["sha256"]
    assert sum(v is not None and v > 0 for v in bad["per_class"].values()) == 1   # only the predicted class scores
    assert good["acc1"] == json.loads((trained / SUMMARY).read_text())["acc1"]


@pytest.mark.parametrize("overrides,needle", [
    ([], "eval_only=true needs ckpt_path=<the checkpoint or weights file to evaluate>"),
    (["ckpt_path=/no/such/best.pt"], "ckpt_path=/no/such/best.pt: no such file"),
    (["ckpt_path='BEST'", "model.width_mult=0.5"], "does not fit this model"),
])
def test_missing_or_unfitting_ckpt_path_is_one_line(trained, tiny_cfg, caplog, overrides, needle):
    overrides = [o.replace("BEST", str(trained / CHECKPOINTS / BEST_WEIGHTS)) for o in overrides]
    cfg = tiny_cfg(*RUN, "eval_only=true", *overrides)
    assert run_job(cfg) is None
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and needle in errors[0] and "ckpt_path" in errors[0] and "\n" not in errors[0]
    s = json.loads((Path(cfg.paths.output_dir) / SUMMARY).read_text())
    assert s["status"] == "failed" and needle in s["error"]
