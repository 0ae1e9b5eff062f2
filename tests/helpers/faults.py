"""Callbacks that put a fault into a run at a set point (a crash, NaN weights, a signal, a hold), for the tests of
what a run does then: `+callbacks.<name>._target_=helpers.faults.<Callback>` (run.py finds it with tests/ on
PYTHONPATH)."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import lightning as L
import torch

from helpers.commands import READY


class CrashAfterFirstEpoch(L.Callback):
    """Simulates a crash once epoch 1 is done (after its checkpoint was written)."""

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 0:
            raise RuntimeError("simulated crash after epoch 1")


class PoisonWeightsAtSecondEpoch(L.Callback):
    """Makes the loss NaN at the first batch of epoch 2, after epoch 1 was checkpointed."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            with torch.no_grad():
                next(pl_module.model.parameters()).fill_(float("nan"))


class CrashAfterSecondEpoch(L.Callback):
    """Simulates a crash once epoch 2 is done: last.ckpt is epoch 2's, last.prev.ckpt epoch 1's."""

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise RuntimeError("simulated crash after epoch 2")


class SigtermAt(L.Callback):
    """Sends this process SIGTERM, as SLURM does at preemption, when the given step of epoch 2 is about to run."""

    def __init__(self, batch: int = 0):
        self.batch = batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)


class HoldForSignal(L.Callback):
    """Before step 2 of epoch 2, once: creates READY in the run directory and waits (a minute at most) for a
    preemption signal, so a signal sent when it appears arrives mid-run however slow the machine (start_held)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        ready = Path(trainer.default_root_dir) / READY
        if trainer.current_epoch == 1 and batch_idx == 1 and not ready.exists():
            (preemption,) = (c for c in trainer.callbacks if type(c).__name__ == "Preemption")
            ready.touch()
            deadline = time.time() + 60
            while preemption.received is None and time.time() < deadline:
                time.sleep(0.05)
