"""Checkpoints that survive a kill mid-write: written to a temporary file, fsynced and renamed, the previous
last.ckpt kept beside the new one, and an unreadable last.ckpt replaced by its predecessor when a run resumes."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from roadmap.atomic import atomic_file
from roadmap.models.weights import EMA_PREFIX, EMA_STATE
from roadmap.runs import BEST, BEST_WEIGHTS, CHECKPOINTS, LAST, PREVIOUS, RunError, config_diff, same_run

log = logging.getLogger(__name__)

# What a run keeps. resume: last.ckpt (and its predecessor) while unfinished, then only the best epoch's model
# weights (best.pt, no optimizer state; with recipe.ema=true its EMA's weights too, under timm's state_dict_ema);
# best: the best epoch's full checkpoint (best.ckpt, to train on from); none: no checkpoint, nothing to resume from.
POLICIES = ("resume", "best", "none")


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save through `atomic_file`. last.ckpt first becomes last.prev.ckpt, so a kill at any moment of a save
    leaves at least one complete checkpoint to resume from."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path,
                        storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rotated = path.name == LAST and path.exists()
        if rotated:
            os.replace(path, path.with_name(PREVIOUS))
        try:
            with atomic_file(path) as f:
                writes = _Writes(f)
                try:
                    torch.save(checkpoint, writes)
                except RuntimeError:
                    if writes.error is None:
                        raise
                    raise writes.error from None
        except BaseException:
            if rotated:   # a failed save (a full disk): the previous checkpoint stays last.ckpt
                os.replace(path.with_name(PREVIOUS), path)
            raise


class _Writes:
    """The file torch.save writes to, keeping the OS's error of a failed write: torch reports only its own
    "unexpected pos" for it, with no file name and no cause."""

    def __init__(self, f: Any) -> None:
        self.f, self.error = f, None

    def write(self, data: Any) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)


def load_weights_only(path: Path) -> dict[str, Any] | None:
    """The checkpoint's contents, or None if it cannot be read (truncated, corrupt)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:   # torch raises RuntimeError, EOFError or UnpicklingError, by how the file broke
        log.warning("checkpoint %s is unreadable (%s)", path, (str(err).splitlines() or [type(err).__name__])[0])
        return None


def readable_last(checkpoints: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable of last.ckpt and last.prev.ckpt with its contents; None when neither exists.
    Raises `TornCheckpointError` when they exist but none can be read."""
    candidates = [p for p in (checkpoints / LAST, checkpoints / PREVIOUS) if p.is_file()]
    for path in candidates:
        state = load_weights_only(path)
        if state is not None:
            if path.name == PREVIOUS:
                log.warning("resuming from the previous checkpoint %s: %s is unreadable", path, LAST)
            return path, state
    if candidates:
        raise TornCheckpointError(
            f"{checkpoints}: {' and '.join(p.name for p in candidates)} cannot be read (a kill during a save?); "
            "rerun with force=true to start over (the old files move to superseded/)")
    return None


class TornCheckpointError(RuntimeError):
    """No readable checkpoint is left to resume from."""


DROPPED = {"resume": (LAST, PREVIOUS, BEST), "best": (LAST, PREVIOUS), "none": ()}   # by a finished run


def keep_after_finish(checkpoints: Path, policy: str) -> list[Path]:
    """Write what a finished run keeps under `policy` (resume: best.pt); returns the files it keeps. The others go
    (`prune`) only once its summary is written, so a failure to write that leaves the run resumable."""
    if policy == "resume":
        source = checkpoints / BEST if (checkpoints / BEST).is_file() else checkpoints / LAST
        state = torch.load(source, map_location="cpu", weights_only=True)
        weights, ema = ({k.removeprefix(prefix): v for k, v in state["state_dict"].items() if k.startswith(prefix)}
                        for prefix in ("model.", EMA_PREFIX))
        with atomic_file(checkpoints / BEST_WEIGHTS) as f:   # loads into the bare model: load_state_dict(weights)
            torch.save({"state_dict": weights, **({EMA_STATE: ema} if ema else {}), "epoch": state["epoch"],
                        "global_step": state["global_step"], "roadmap": state.get("roadmap")}, f)
    return sorted(p for p in checkpoints.iterdir() if p.is_file() and p.name not in DROPPED[policy]) \
        if checkpoints.is_dir() else []


def prune(checkpoints: Path, policy: str) -> None:
    for name in DROPPED[policy]:
        (checkpoints / name).unlink(missing_ok=True)


def check_checkpoint(path: Path, state: dict[str, Any], record: dict[str, Any], only: str = "") -> None:
    """Refuse to resume from a checkpoint of another run: its config (or, with `only`, the keys under that prefix,
    e.g. the model's) must be this one's."""
    saved = state.get("roadmap", {})
    if "fingerprint" not in saved:
        raise RunError(f"checkpoint {path} was not written by this version of roadmap (no config fingerprint "
                       "inside); start over with force=true or pass ckpt_path=null")
    old, new = ({k: v for k, v in c.items() if k.startswith(only)} for c in (saved["config"], record["config"]))
    if not same_run(old, new):
        raise RunError(f"checkpoint {path} is from another configuration ({config_diff(old, new)}); use the "
                       "matching overrides, another run directory, or force=true to start over")


def resume_from(ckpt_path: str | None, run_dir: Path, record: dict[str, Any]) -> Path | None:
    """ckpt_path, else the run directory's newest readable last checkpoint, checked against this config."""
    if ckpt_path:
        path = Path(ckpt_path)
        if not path.is_file():
            raise RunError(f"ckpt_path={path} does not exist")
        state = load_weights_only(path)
        if state is None:
            raise RunError(f"ckpt_path={path} cannot be read; pass another checkpoint or ckpt_path=null")
        check_checkpoint(path, state, record, only="model.")   # another run's checkpoint: the same model will do
        return path
    found = readable_last(run_dir / CHECKPOINTS)
    if found is not None:
        check_checkpoint(*found, record)
    return found[0] if found else None
