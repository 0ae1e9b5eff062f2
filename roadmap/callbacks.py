"""Callbacks Lightning does not ship: exact resume of random state, the run's learning curve, a checkpoint on
preemption, plain progress lines for log files, and the model's own speed for the job's efficiency."""
from __future__ import annotations

import copy
import random
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from roadmap.timing import Runner   # the bench's own timed step: the job efficiency divides by what it measures
from roadmap.runs import launch_stopped, write_history


class ResumableRNG(L.Callback):
    """Saves the torch/numpy/python RNG states with each checkpoint and restores them when the resumed
    epoch starts, so a resumed run draws the same shuffles, augmentations, mixup and drop-path as an
    uninterrupted one. Restoring at epoch start (not at load) skips draws made by the resume itself,
    e.g. the sanity-check dataloader. States are stored as tensors/ints only (weights_only-safe)."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        state = {"torch": torch.get_rng_state(), "python": random.getstate(),
                 "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:])}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is None:
            return
        s, self._pending = self._pending, None
        torch.set_rng_state(s["torch"])
        random.setstate(s["python"])
        name, keys, *rest = s["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
        if "cuda" in s and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(s["cuda"])


class EpochHistory(L.Callback):
    """Each validation's val top-1/top-5/loss and the epoch's mean train loss, as one row of the run's history
    (`roadmap.runs.write_history`). The rows travel in the checkpoint (plain types): Lightning saves last.ckpt
    after this hook (checkpoint callbacks run last), so a resumed run's file holds exactly the epochs its
    checkpoint reached, then continues."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.rows: list[dict[str, float | int | None]] = []

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.rows:   # a resumed run: drop rows past its checkpoint
            write_history(self.run_dir, self.rows)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        val = {k: float(m[f"val/{k}"]) if f"val/{k}" in m else None for k in ("loss", "acc1", "acc5", "acc1_ema")}
        mean = pl_module.epoch_train_loss   # all ranks compute it: torchmetrics reduces across DDP ranks
        self.rows.append({"epoch": trainer.current_epoch + 1, "step": trainer.global_step,
                          "train_loss": float(mean.compute()) if mean.update_called else None,
                          "val_loss": val["loss"], "acc1": val["acc1"], "acc5": val["acc5"],
                          "acc1_ema": val["acc1_ema"]})
        if trainer.is_global_zero:
            write_history(self.run_dir, self.rows)


class LineProgress(L.Callback):
    """One plain line every `every` steps and one per validation: readable in log files and on clusters,
    where a live progress bar would be a stream of carriage returns."""

    def __init__(self, every: int = 50) -> None:
        self.every = every
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if trainer.is_global_zero and (batch_idx + 1) % self.every == 0:
            m = trainer.callback_metrics
            print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} batch {batch_idx + 1}/"
                  f"{trainer.num_training_batches} loss {float(m.get('train/loss_step', float('nan'))):.4f} "
                  f"{time.perf_counter() - self._start:.0f}s", file=sys.stdout, flush=True)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            m = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
            print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} " +
                  " ".join(f"{k} {v:.3f}" for k, v in sorted(m.items())), file=sys.stdout, flush=True)


class Preempted(SystemExit):
    """A signal stopped the run, after its checkpoint was written if it had begun training. A SystemExit, like
    Lightning's own SIGTERMException: it ends the whole command (a sweep's other jobs do not start on a node being
    taken away), and submitit writes no result for it, so its launcher waits for the requeued job."""


class Preemption(L.Callback):
    """On SIGTERM (what SLURM sends at preemption, at `scontrol requeue` and at the time limit), SIGUSR1 (a
    `--signal` warning) or SIGUSR2 (submitit's warning before the time limit): finish the current step, write
    `last_path` even mid-epoch, and stop with `Preempted`, which the run records as interrupted. Lightning alone
    would carry on to the end of the epoch and lose everything since its start. It is the one handler that acts
    (README: When things go wrong): Lightning's SLURM auto-requeue is off (`roadmap.train`) and submitit's own
    handler, which would requeue or fail the job mid-step, is not called; SLURM requeues a preempted job itself."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)

    def __init__(self, last_path: Path | None) -> None:
        self.last_path = last_path   # None: checkpoint=none, stop without one
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.received = signal.Signals(signum).name
        previous = self._previous.get(signum)
        if signum == signal.SIGTERM and callable(previous):   # Lightning's SIGTERM bookkeeping, DDP's broadcast
            previous(signum, frame)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after Lightning has installed its handlers (at the start of Trainer._run), so ours wraps them
        for sig in self.SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handler)
        if launch_stopped():   # the command was signalled while this job was being set up
            self.received = signal.SIGTERM.name

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        # between two steps, so the checkpoint counts only completed ones
        if self.received is None:
            return
        where = "no checkpoint (checkpoint=none)"
        if self.last_path is not None:
            trainer.save_checkpoint(self.last_path)
            where = f"checkpoint written to {self.last_path}; rerun the same command to resume"
        raise Preempted(f"{self.received} at epoch {trainer.current_epoch + 1}, step {trainer.global_step}: {where}")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # only where ours is still installed: Lightning's teardown, which runs first, has put back what it found
        # on SIGTERM, and restoring its handler there would keep this trainer (and its data) alive for good
        for sig, previous in self._previous.items():
            if signal.getsignal(sig) == self._handler:
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}


class ModelSpeed(L.Callback):
    """After training, the model's own train img/s as `roadmap.bench` times it (forward, backward, AdamW step on
    one resident batch), in this process at the job's batch, image size, precision and memory layout. The job's
    train img/s over it is its efficiency (`trainer.efficiency=true`), paired in time, because separate bench
    invocations on a shared machine differ too much (results/cpu_replay/README.md, "How the budget was chosen")."""

    def __init__(self, rounds: int = 3, iters: int = 8) -> None:
        self.rounds, self.iters = rounds, iters
        self.img_per_s: float | None = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.interrupted or trainer.fast_dev_run or not trainer.is_global_zero:
            return
        data = trainer.datamodule
        x = torch.randn(data.batch_size, 3, data.image_size, data.image_size, device=pl_module.device)
        y = torch.randint(0, data.num_classes, (data.batch_size,), device=pl_module.device)
        if pl_module.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        runner = Runner(copy.deepcopy(pl_module.model), x, y, channels_last=pl_module.channels_last,
                        bf16=str(trainer.precision).startswith("bf16"))
        runner.warm("train", 2)
        seconds = [runner.seconds("train", self.iters) for _ in range(self.rounds)]
        self.img_per_s = data.batch_size * self.iters / statistics.median(seconds)
