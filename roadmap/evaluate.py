"""eval_only=true: the configured model with the weights in ckpt_path, scored on the val split, nothing trained.

`train.py` builds the job as for training (data, model, Classifier, Trainer) and hands it here instead of to `fit`.
The weights load strictly (`roadmap.models.weights.load_weights`: our `.ckpt` or `best.pt`, a bare state dict,
torchvision or timm weights), Lightning's validation loop runs once with the Classifier's own top-1/top-5, and a
callback adds the confusion matrix, which gives the per-class top-1 and the figure. With recipe.ema=true the file's
EMA weights (a run's best.pt keeps them) are loaded into the EMA copy and scored beside them (`acc1_ema`). The job's
directory is the `eval/` folder of its configuration's run directory (`roadmap.runs.run_subdir`), so a training
run's record is never overwritten; an evaluation is never skipped as finished, since ckpt_path is not part of that
directory's name.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from matplotlib.figure import Figure
from torchmetrics.classification import MulticlassConfusionMatrix

from roadmap.atomic import atomic_file
from roadmap.models.weights import WeightsError, load_weights
from roadmap.module import Classifier
from roadmap.runs import CONFUSION, Summary

log = logging.getLogger(__name__)


class ConfusionMatrix(L.Callback):
    """The val split's confusion matrix, from the logits `Classifier.validation_step` returns. It lives in a
    callback that only an evaluation adds, so training's validation epochs do not pay for it."""

    def __init__(self, num_classes: int) -> None:
        self.metric = MulticlassConfusionMatrix(num_classes)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.metric = self.metric.to(pl_module.device)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                                batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        self.metric.update(outputs, batch[1])


def evaluate(trainer: L.Trainer, module: Classifier, datamodule: L.LightningDataModule, ckpt_path: str | None,
             summary: Summary, run_dir: Path) -> Summary:
    """`summary` filled with the val-split scores of the weights in `ckpt_path`; the confusion matrix is drawn into
    `run_dir`. A missing or unfitting file raises `WeightsError`, one line naming ckpt_path."""
    if not ckpt_path:
        raise WeightsError("eval_only=true needs ckpt_path=<the checkpoint or weights file to evaluate>")
    summary.evaluated = load_weights(module.model, ckpt_path, reset_head=False, field="ckpt_path")
    if module.ema is not None:   # recipe.ema=true: the file's EMA weights are scored beside its weights (acc1_ema)
        try:
            load_weights(module.ema.module, ckpt_path, reset_head=False, field="ckpt_path", ema=True)
        except WeightsError as err:
            log.warning("recipe.ema=true, but %s; scoring its weights alone (no acc1_ema)", err)
            module.ema = None
    confusion = ConfusionMatrix(summary.num_classes)
    trainer.callbacks.append(confusion)
    metrics = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    counts = confusion.metric.compute().cpu()   # [true class, predicted class], summed over every process
    names = getattr(datamodule, "class_names", None) or [str(i) for i in range(len(counts))]
    summary.per_class = {name: 100 * float(hits / total) if total else None
                         for name, hits, total in zip(names, counts.diag(), counts.sum(1))}
    summary.acc1, summary.acc5, summary.val_loss = (float(metrics[k]) for k in ("val/acc1", "val/acc5", "val/loss"))
    summary.acc1_ema = float(metrics["val/acc1_ema"]) if "val/acc1_ema" in metrics else None
    summary.acc1_best, summary.acc5_best = summary.acc1, summary.acc5   # one evaluation is its own best
    summary.status, summary.epochs, summary.checkpoint = "finished", 0, "none"   # nothing trained, nothing kept
    if trainer.is_global_zero:
        draw_confusion(counts, names, run_dir / CONFUSION,
                       f"{summary.name}: val top-1 {summary.acc1:.1f} %, rows normalised")
    return summary


MAX_CELL_TEXT = 20   # up to this many classes each cell shows its share; past it the numbers would run together


def confusion_figure(counts: torch.Tensor, names: list[str], title: str) -> Figure:
    """Each row normalised to the share (%) of its true class's images, so classes of any size read alike. Up to
    `MAX_CELL_TEXT` classes every cell with images shows its share as a whole percent, dark on pale cells and white
    on dark ones; past that the colour alone carries it. The cells keep one size, so the figure grows with the
    class count (120 classes: 24 in)."""
    n = len(names)
    shares = (100 * counts / counts.sum(1, keepdim=True).clamp(min=1)).numpy()
    cell = 0.45 if n <= MAX_CELL_TEXT else 0.16   # inches
    side = min(24.0, max(6.0, cell * n + 3.5))   # room for the class names and the colour bar
    fig = Figure(figsize=(side + 1, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=100)
    ticks = range(n)
    labelsize = 9 if n <= 40 else 6
    ax.set_xticks(ticks, names, rotation=90, fontsize=labelsize)
    ax.set_yticks(ticks, names, fontsize=labelsize)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if n <= MAX_CELL_TEXT:
        for (true, predicted), share in np.ndenumerate(shares):
            if counts[true, predicted] > 0:
                red, green, blue, _ = image.cmap(image.norm(share))
                pale = 0.299 * red + 0.587 * green + 0.114 * blue > 0.5   # perceived luminance of the cell
                ax.text(predicted, true, f"{share:.0f}", ha="center", va="center", fontsize=8,
                        color="black" if pale else "white")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, shrink=0.6, label="share of the true class's images (%)")
    return fig


def draw_confusion(counts: torch.Tensor, names: list[str], path: Path, title: str) -> None:
    with atomic_file(path) as f:
        confusion_figure(counts, names, title).savefig(f, format="png", dpi=100)
