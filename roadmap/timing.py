"""The timed training step: a model, its AdamW and one resident batch, stepped and timed with nothing else in the
loop. `roadmap.bench` times models with it; a run's `ModelSpeed` divides its own speed by it (job efficiency)."""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

MIB = 2 ** 20


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    """A model on the device with its AdamW and the two timed steps: train (forward, backward, update), infer."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, channels_last: bool = False,
                 compile: bool = False, bf16: bool = False):
        self.device = x.device
        model = model.to(self.device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        # as the training module: one kernel per op over all parameters (fused on CUDA, foreach elsewhere)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4,
                                           **{"fused" if self.device.type == "cuda" else "foreach": True})
        self.model = torch.compile(model) if compile else model
        self.x, self.y = x, y
        self.bf16 = bf16

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16)

    def train(self) -> None:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss = F.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.optimizer.step()

    def infer(self) -> None:
        self.model.eval()
        with torch.no_grad(), self.autocast():
            self.model(self.x)

    def warm(self, mode: str, steps: int) -> float | None:
        """Run untimed steps; on CUDA return the peak MiB they allocated above what was resident before."""
        cuda = self.device.type == "cuda"
        if cuda:
            sync(self.device)
            self.optimizer.zero_grad(set_to_none=True)   # inference must not count training's gradients
            base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        for _ in range(steps):
            getattr(self, mode)()
        if not cuda:
            return None
        sync(self.device)
        return (torch.cuda.max_memory_allocated(self.device) - base) / MIB

    def seconds(self, mode: str, steps: int) -> float:
        step = getattr(self, mode)
        sync(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(self.device)
        return time.perf_counter() - start
