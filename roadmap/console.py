"""What a user sees: third-party noise silenced where it starts (each filter says why), and the run's whole console
output copied into its run.log."""
from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

# run.py sets HYDRA_FULL_ERROR=1 so that Hydra raises a composition error (run.py prints it as one line) instead of
# printing it over several; the user's own HYDRA_FULL_ERROR (full tracebacks) travels here, to every job.
FULL_ERROR_ENV = "ROADMAP_FULL_ERROR"


def full_tracebacks() -> bool:
    """Whether the user asked for full tracebacks (HYDRA_FULL_ERROR=1 on the command line)."""
    return os.environ.get(FULL_ERROR_ENV, os.environ.get("HYDRA_FULL_ERROR")) == "1"


# Lightning's INFO lines that repeat for every job of a sweep and say nothing about the run.
LIGHTNING_NOISE = (
    "💡 Tip:",            # an advertisement for litlogger, printed by every Trainer
    "GPU available:",     # hardware probes: the summary records the precision and the run.log the device
    "TPU available:",
    "HPU available:",
    "Using bfloat16 Automatic Mixed Precision",   # the summary records the precision that ran
    "Loading `train_dataloader` to estimate",     # Lightning's internal step count, before every fit
)


class _DropLines(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def quiet_warnings() -> None:
    """The warning filters of `quiet`. A Classifier installs them too when a fit or validation sets it up, so
    that a Trainer of one's own (a test, a notebook) is spared Lightning's LeafSpec deprecation as train() is."""
    # Python hides DeprecationWarnings raised outside __main__; ours must reach the user
    warnings.filterwarnings("default", category=DeprecationWarning, module=r"roadmap(\..*)?$")
    # torch 2.9+ deprecated pytree's LeafSpec; Lightning 2.6 still calls it on every fit (not ours to fix)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated",
                            module=r"lightning\..*")
    # short proxy epochs have fewer batches than log_every_n_steps: epoch-level metrics are logged regardless
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the "
                                              r"logging interval")
    if "SLURM_JOB_ID" not in os.environ:   # outside an allocation the hint is wrong: this is not a SLURM run
        warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system but is not used")


def quiet() -> None:
    """Silence the known third-party noise and show our own deprecations; idempotent. Every filter names the
    module or message it drops, so our other warnings (a data problem) pass untouched."""
    quiet_warnings()
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        target = logging.getLogger(name)
        if not any(isinstance(f, _DropLines) for f in target.filters):
            target.addFilter(_DropLines(LIGHTNING_NOISE))
    if logging.getLogger().handlers:   # under Hydra: Lightning's lines go through its handlers, run.log included
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            lightning = logging.getLogger(name)
            lightning.handlers.clear()   # the private console handlers it adds when imported: each line once
            lightning.propagate = True


class _Tee:
    """A text stream that writes to the console stream and to a log file."""

    def __init__(self, console: TextIO, log: TextIO) -> None:
        self.console, self.log = console, log

    def write(self, text: str) -> int:
        self.log.write(text)
        return self.console.write(text)

    def flush(self) -> None:
        self.log.flush()
        self.console.flush()

    def isatty(self) -> bool:
        return self.console.isatty()

    def __getattr__(self, name: str):   # fileno, encoding, ... of the console
        return getattr(self.console, name)


@contextmanager
def console_to(log_file: Path) -> Iterator[None]:
    """Copy what the job prints (progress lines, warnings, errors) into `log_file`, beside the log records
    Hydra's file handler already writes there, so run.log holds the whole console whatever the logger."""
    with open(log_file, "a", buffering=1) as log:
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = out, err


def one_line(e: BaseException) -> str:
    """The first line of an exception's message, unwrapping Hydra's instantiate wrapper and a DataLoader
    worker's re-raise (whose first line is only "Caught X in DataLoader worker process N.")."""
    while e.__cause__ is not None and type(e).__name__ == "InstantiationException":
        e = e.__cause__
    text = str(e).strip().splitlines()
    if len(text) > 2 and text[1].startswith("Original Traceback"):  # the worker's own error is the last line
        text = [text[-1].split(": ", 1)[-1]]
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")
