"""eval_only=true: the configured model with the weights in ckpt_path, scored on the val split, nothing trained.

`train.py` builds the job as for training (data, model, Classifier, Trainer) and hands it here instead of to `fit`.
The weights load strictly (`roadmap.models.weights.load_weights`: our `.ckpt` or `best.pt`, a bare state dict,
torchvision or timm weights), Lightning's validation loop runs once with the Classifier's own top-1/top-5, and a
callback adds the confusion matrix, which gives the per-class top-1 and the figure. The job's directory is the
`eval/` folder of its configuration's run directory (`roadmap.runs.run_subdir`), so a training run's record is
never overwritten; an evaluation is never skipped as finished, since ckpt_path is not part of that directory's name.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from matplotlib.figure import Figure
from torchmetrics.classification import MulticlassConfusionMatrix

from roadmap.atomic import atomic_file
from roadmap.models.weights import WeightsError, load_weights
from roadmap.module import Classifier
from roadmap.runs import CONFUSION, Summary


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
    if module.ema is not None:   # its copy was taken of the fresh weights
        module.ema.set(module.model)
    confusion = ConfusionMatrix(summary.num_classes)
    trainer.callbacks.append(confusion)
    metrics = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    counts = confusion.metric.compute().cpu()   # [true class, predicted class], summed over every process
    names = getattr(datamodule, "class_names", None) or [str(i) for i in range(len(counts))]
    summary.per_class = {name: 100 * float(hits / total) if total else None
                         for name, hits, total in zip(names, counts.diag(), counts.sum(1))}
    summary.acc1, summary.acc5, summary.val_loss = (float(metrics[k]) for k in ("val/acc1", "val/acc5", "val/loss"))
    summary.acc1_best, summary.acc5_best = summary.acc1, summary.acc5   # one evaluation is its own best
    summary.status, summary.epochs, summary.checkpoint = "finished", 0, "none"   # nothing trained, nothing kept
    if trainer.is_global_zero:
        draw_confusion(counts, names, run_dir / CONFUSION,
                       f"{summary.name}: val top-1 {summary.acc1:.1f} %, rows normalised")
    return summary


def draw_confusion(counts: torch.Tensor, names: list[str], path: Path, title: str) -> None:
    """Each row normalised to the share of its true class's images, so classes of any size read alike; cell
    values are written only where they fit (up to 12 classes), the figure grows with the class count (120: 22 in)."""
    n = len(names)
    rows = counts / counts.sum(1, keepdim=True).clamp(min=1)
    size = min(24.0, max(7.0, 0.17 * n + 2))
    fig = Figure(figsize=(size, size), layout="constrained")
    ax = fig.subplots()
    MulticlassConfusionMatrix(n).plot(val=rows, ax=ax, add_text=n <= 12, labels=names, cmap="Blues")
    ax.images[0].set_clim(0, 1)
    ax.tick_params(axis="x", labelrotation=90, labelsize=10 if n <= 40 else 7)
    ax.tick_params(axis="y", labelrotation=0, labelsize=10 if n <= 40 else 7)
    ax.set_title(title)
    fig.colorbar(ax.images[0], ax=ax, shrink=0.6, label="share of the true class's images")
    with atomic_file(path) as f:
        fig.savefig(f, format="png", dpi=100)
