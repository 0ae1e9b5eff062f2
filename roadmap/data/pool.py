"""Load each batch in a pool of processes while the training step waits (`data.batch_processes`).

On few cores, DataLoader workers work ahead, during the training step, and preempt its OpenMP threads mid-op:
each stalled thread holds up the others at the op's barrier. A pool that works only between steps has every core
for the batch, then gives every core back to the model. Each image is augmented under its own seed, drawn from
the main process's seeded generator, so a run is reproducible whatever the pool's size.
"""
from __future__ import annotations

import multiprocessing as mp
import random
import signal
import weakref
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

_DATASETS: dict[int, Dataset] = {}   # what the forked pool processes inherit, by the owner's id


def _start() -> None:
    """A helper process: one thread, as DataLoader workers run, and none of the trainer's signal handlers.
    Ctrl-C and SIGUSR1 are the main process's to handle (it checkpoints, then ends the pool); SIGTERM ends a
    helper quietly, and the main process learns of it as a broken pool, not as a hang."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _load(key: int, indices: list[int], seeds: list[int]) -> tuple[np.ndarray, list[Any]]:
    images, targets = [], []
    for index, seed in zip(indices, seeds):
        random.seed(seed)   # timm's RandAugment draws from random and numpy, torchvision's crop from torch
        np.random.seed(seed % 2**32)
        torch.default_generator.manual_seed(seed)
        image, target = _DATASETS[key][index]
        images.append(np.asarray(image))
        targets.append(target)
    return np.stack(images), targets


class BatchPool(Dataset):
    """`dataset`, fetched a batch at a time by this process and `processes` - 1 forked ones (the DataLoader's
    `__getitems__`)."""

    def __init__(self, dataset: Dataset, processes: int) -> None:
        self.dataset, self.processes = dataset, processes
        self._pool: ProcessPoolExecutor | None = None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]

    def pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            _DATASETS[id(self)] = self.dataset
            self._pool = ProcessPoolExecutor(self.processes - 1, mp.get_context("fork"), initializer=_start)
            weakref.finalize(self, self._pool.shutdown, wait=False, cancel_futures=True)
        return self._pool

    def close(self) -> None:
        """End the pool's processes (a sweep runs many jobs in one process); the next batch starts new ones."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
        _DATASETS.pop(id(self), None)

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, Any]]:
        """The first share of the batch loads here while the pool's processes load the others."""
        seeds = torch.randint(2**62, (len(indices),)).tolist()
        shares = [(id(self), [indices[i] for i in c], [seeds[i] for i in c])
                  for c in np.array_split(np.arange(len(indices)), self.processes)]
        pending = [self.pool().submit(_load, *share) for share in shares[1:]]
        parts = [_load(*shares[0]), *(p.result() for p in pending)]
        return [(torch.from_numpy(image), target) for images, targets in parts
                for image, target in zip(images, targets)]
