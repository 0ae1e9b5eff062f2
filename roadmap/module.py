"""LightningModule: a recipe from conf/recipe/ applied to any classifier, wired with timm and torchmetrics."""
from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler, StepLRScheduler
from timm.scheduler.scheduler import Scheduler
from timm.utils import ModelEmaV3
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from roadmap.console import quiet_warnings


# How the recipe's lr (given per `base_batch_size` images) follows the effective batch size: Goyal et al.'s
# linear rule, the square-root rule (Krizhevsky 2014; Malladi et al. 2022 for Adam), or none (lr as written).
LR_SCALING = {"linear": lambda ratio: ratio, "sqrt": math.sqrt, "none": lambda ratio: 1.0}


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss; the run stops so the last good checkpoint stays the latest."""


class Classifier(L.LightningModule):
    """Trains `model` with `recipe`: loss, mixup/cutmix, optimizer, per-step schedule, EMA, top-1/top-5."""

    def __init__(self, model: nn.Module, recipe: Mapping[str, Any], num_classes: int,
                 channels_last: bool = False, record: Mapping[str, Any] | None = None):
        super().__init__()
        self.model = model
        self.record = dict(record or {})   # what the run is (fingerprint, config), stored in every checkpoint
        self.recipe = dict(recipe)
        self.channels_last = channels_last
        r = self.recipe
        if r["lr_scaling"] not in LR_SCALING:
            raise ValueError(f"recipe.lr_scaling={r['lr_scaling']!r} is invalid: allowed {' | '.join(LR_SCALING)}")
        self.mixup = (Mixup(mixup_alpha=r["mixup"], cutmix_alpha=r["cutmix"], prob=r["mix_prob"],
                            switch_prob=r["switch_prob"], label_smoothing=r["label_smoothing"],
                            num_classes=num_classes)
                      if r["mixup"] > 0 or r["cutmix"] > 0 else None)
        # Mixup yields soft targets (label smoothing folded in); otherwise plain CE with smoothing.
        self.train_loss = (SoftTargetCrossEntropy() if self.mixup
                           else nn.CrossEntropyLoss(label_smoothing=r["label_smoothing"]))
        self.val_loss = nn.CrossEntropyLoss()
        # the epoch's mean train loss, for the run's history (callbacks.EpochHistory); not in the state dict, so a
        # run resumed mid-epoch averages that epoch over the batches after the resume
        self.epoch_train_loss = MeanMetric()
        self.acc1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.acc5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro")
        self.ema = ModelEmaV3(model, decay=r["ema_decay"]) if r["ema"] else None
        if self.ema is not None:
            self.ema_acc1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        # best top-1 so far (and top-5 at that epoch) live in the state dict, so a resumed run keeps them
        self.register_buffer("best_acc1", torch.tensor(0.0))
        self.register_buffer("best_acc5", torch.tensor(0.0))
        self.throughput = 0.0
        self._epoch_images, self._epoch_start, self._last_batch_end = 0, 0.0, 0.0

    def setup(self, stage: str) -> None:
        # inside the caller's warning context (pytest's, a notebook's), before Lightning builds its loaders
        quiet_warnings()

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self._layout(x))

    # -- training ---------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self._epoch_images, self._epoch_start = 0, time.perf_counter()
        self.epoch_train_loss.reset()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.mixup is not None:
            x, y = self.mixup(x, y)
        loss = self.train_loss(self(x), y)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"loss is {loss.item()} at epoch {self.current_epoch}, batch {batch_idx} (global step "
                f"{self.global_step}); stopped, the last good checkpoint is kept")
        self._epoch_images += x.shape[0]
        self.epoch_train_loss.update(loss.detach(), x.shape[0])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._last_batch_end = time.perf_counter()  # throughput excludes the validation inside the epoch
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)

    def on_train_epoch_end(self) -> None:
        seconds = self._last_batch_end - self._epoch_start
        # images/s (data loading included) of this process times the number of processes
        self.throughput = self._epoch_images * self.trainer.world_size / max(seconds, 1e-9)
        self.log("train/img_per_s", self.throughput, sync_dist=False, rank_zero_only=True)

    # -- evaluation -------------------------------------------------------------------------------
    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Returns the logits, which callbacks receive as `outputs` (roadmap.evaluate's confusion matrix)."""
        x, y = batch
        logits = self(x)
        self.log("val/loss", self.val_loss(logits, y), on_epoch=True, prog_bar=True, sync_dist=True)
        self.acc1.update(logits, y)
        self.acc5.update(logits, y)
        if self.ema is not None:
            self.ema_acc1.update(self.ema.module(self._layout(x)), y)
        return logits

    def on_validation_epoch_end(self) -> None:
        # compute() reduces across DDP ranks; accuracies are logged in percent, like the paper's
        acc1, acc5 = self.acc1.compute() * 100, self.acc5.compute() * 100
        self.acc1.reset()
        self.acc5.reset()
        self.log("val/acc1", acc1, prog_bar=True)
        self.log("val/acc5", acc5)
        if self.ema is not None:
            self.log("val/acc1_ema", self.ema_acc1.compute() * 100)
            self.ema_acc1.reset()
        if self.trainer.sanity_checking:
            return
        if acc1 > self.best_acc1:
            self.best_acc1, self.best_acc5 = acc1.to(self.best_acc1), acc5.to(self.best_acc5)
        self.log("val/acc1_best", self.best_acc1, prog_bar=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # plain types only: lets train.py refuse a checkpoint of another run, loading weights_only=True
        checkpoint["roadmap"] = self.record

    # -- optimisation -----------------------------------------------------------------------------
    def effective_batch_size(self) -> int:
        """Images per optimizer step: devices x per-device batch x gradient accumulation."""
        t = self.trainer
        return t.world_size * t.datamodule.batch_size * t.accumulate_grad_batches

    def configure_optimizers(self) -> dict[str, Any]:
        r = self.recipe
        lr = r["lr"] * LR_SCALING[r["lr_scaling"]](self.effective_batch_size() / r["base_batch_size"])
        extra: dict[str, Any] = ({"momentum": r["momentum"]} if r["momentum"] is not None
                                 else {"betas": tuple(r["betas"])})
        # one kernel per op over all parameters: fused on CUDA, foreach elsewhere (torch's CPU default, a Python
        # loop over the tensors, is a measurable share of a small model's step: results/cpu_replay/README.md)
        extra["fused" if self.device.type == "cuda" else "foreach"] = True
        # timm leaves norms and biases (1-D params) out of weight decay
        # with layer_decay, lower layers' lr x layer_decay^(depth from the top) (the model's group_matcher)
        optimizer = create_optimizer_v2(self.model, opt=r["optimizer"], lr=lr, weight_decay=r["weight_decay"],
                                        layer_decay=r["layer_decay"], **extra)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        # The recipe's schedule is written for `epochs`; a shorter run compresses it proportionally.
        scale = total / r["epochs"]
        if r["schedule"] == "cosine":
            warmup = round(r["warmup_epochs"] * scale)
            scheduler: Scheduler = CosineLRScheduler(
                optimizer, t_initial=max(1, total - warmup), lr_min=r["min_lr"], warmup_t=warmup,
                warmup_lr_init=r["min_lr"], warmup_prefix=True, t_in_epochs=False)
        elif r["schedule"] == "step":
            scheduler = StepLRScheduler(optimizer, decay_t=max(1, round(r["decay_epochs"] * scale)),
                                        decay_rate=r["decay_rate"], t_in_epochs=False)
        else:
            raise ValueError(f"recipe.schedule={r['schedule']!r} is invalid: allowed 'cosine' | 'step'")
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def lr_scheduler_step(self, scheduler: Scheduler, metric: Any = None) -> None:
        # timm schedulers are stepped by update count, not by torch's LRScheduler protocol
        scheduler.step_update(num_updates=self.global_step)
