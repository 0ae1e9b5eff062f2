"""eval_only=true: a trained run's weights, scored again on the val split, give the run's own top-1, per class and
as a confusion matrix, in the eval/ folder of the run directory; a missing or unfitting ckpt_path is one line."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from matplotlib.colors import to_rgb
from PIL import Image

from roadmap import build_model, compose
from roadmap.evaluate import MAX_CELL_TEXT, confusion_figure
from roadmap.models.weights import EMA_STATE
from roadmap.runs import BEST_WEIGHTS, CHECKPOINTS, CONFUSION, EVAL, SUMMARY, run_dirs
from roadmap.train import run_job, train

from helpers.commands import run_py
from helpers.configs import TINY
from helpers.data import make_folder

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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_ema_weights_are_kept_and_evaluated(tmp_path):
    """recipe.ema=true: best.pt keeps the EMA's weights beside the model's, and an evaluation scores both: the model's
    as the run scored them, the EMA's as the file holds them (here made to predict one class: its share of val)."""
    run = (*TINY, *RUN, "recipe.ema=true", "recipe.ema_decay=0.5")
    train(compose([*run, f"paths.output_dir={tmp_path / 'run'}"]))
    best = tmp_path / "run" / CHECKPOINTS / BEST_WEIGHTS
    state = torch.load(best, weights_only=True)
    assert state[EMA_STATE].keys() == state["state_dict"].keys()
    assert any(not torch.equal(state[EMA_STATE][k], v) for k, v in state["state_dict"].items())   # its own weights
    datamodule = instantiate(compose(list(run)).data)
    datamodule.setup("validate")
    scored = [int(y) for _, y in itertools.islice(iter(datamodule.val_set), 2 * 16)]   # limit_val_batches x batch
    common = max(set(scored), key=scored.count)
    head = state[EMA_STATE]
    head["fc.weight"].zero_()
    head["fc.bias"].copy_(torch.nn.functional.one_hot(torch.tensor(common), len(head["fc.bias"])))
    torch.save(state, tmp_path / "ema_predicts_one_class.pt")
    train(compose([*run, "eval_only=true", f"ckpt_path={tmp_path / 'ema_predicts_one_class.pt'}",
                   f"paths.output_dir={tmp_path / 'eval'}"]))
    ev, trained = (json.loads((tmp_path / d / SUMMARY).read_text()) for d in ("eval", "run"))
    assert ev["acc1"] == trained["acc1"] and trained["acc1_ema"] is not None
    assert ev["acc1_ema"] == pytest.approx(100 * scored.count(common) / len(scored)) != ev["acc1"]


@pytest.mark.slow
def test_an_imagenet_subset_is_evaluated_by_class_name(tmp_path):
    """Per-class results on a wnid-named folder (Imagewoof's layout) are keyed by the breeds' names."""
    root = make_folder(tmp_path / "woof", classes=("n02086240", "n02087394", "n02088364"), per_class=4)
    data = [o for o in TINY if not o.startswith(("data=", "data.train_size", "data.val_size"))]
    cfg = compose([*data, *RUN, "data=folder", f"data.root={root}", "data.num_classes=3", "data.batch_size=4",
                   "eval_only=true", f"paths.output_dir={tmp_path / 'eval'}", f"paths.cache_dir={tmp_path}"])
    torch.save(build_model(cfg).state_dict(), tmp_path / "fresh.pt")   # any weights of this model will do
    cfg.ckpt_path = str(tmp_path / "fresh.pt")
    train(cfg)
    summary = json.loads((tmp_path / "eval" / SUMMARY).read_text())
    assert summary["status"] == "finished", summary["error"]
    assert list(summary["per_class"]) == ["Shih-Tzu", "Rhodesian ridgeback", "beagle"]


def _luminance(color) -> float:
    red, green, blue = to_rgb(color)
    return 0.299 * red + 0.587 * green + 0.114 * blue


def _cells(n: int) -> tuple[list, list]:
    """The cell texts of a confusion matrix of n classes, 74 % on the diagonal, and each one's cell colour."""
    counts = torch.eye(n, dtype=torch.long) * 60 + 2
    fig = confusion_figure(counts, [f"class {i}" for i in range(n)], "title")
    fig.canvas.draw()
    ax = fig.axes[0]
    image = ax.images[0]
    return ax.texts, [image.cmap(image.norm(image.get_array()[round(t.get_position()[1]), round(t.get_position()[0])]))
                      for t in ax.texts]


def test_confusion_cells_contrast_and_never_run_together():
    texts, cells = _cells(12)
    assert len(texts) == 12 * 12
    assert {t.get_text() for t in texts} == {f"{100 * 62 / 84:.0f}", f"{100 * 2 / 84:.0f}"}   # whole percents
    assert min(map(_luminance, cells)) < 0.5 < max(map(_luminance, cells))   # dark and pale cells both
    assert all(abs(_luminance(t.get_color()) - _luminance(c)) > 0.5 for t, c in zip(texts, cells))   # contrast
    boxes = [t.get_window_extent() for t in texts]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])   # no "0.170.13"
    assert len(_cells(MAX_CELL_TEXT + 1)[0]) == 0   # past ~20 classes numbers would crowd: the colour alone
