"""train(cfg): one roadmap job, as a sequence: compose (Hydra has), identify the run, build, fit, record.

A run directory (its layout and files: `roadmap.runs`) holds everything of one job. Rerunning the same command
finds the same directory: a finished run of the same configuration is skipped, an unfinished one resumes from
its last checkpoint, and a run of another configuration there is refused with the keys that differ. The rooms
each step uses: `roadmap.runs` (identity, record), `roadmap.job` (failure policy), `roadmap.device` (what `auto`
means), `roadmap.trainer` (Trainer and loggers), `roadmap.checkpoints` (resume).
"""
from __future__ import annotations

import gc
import logging
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from roadmap import build_model, paper
from roadmap.callbacks import ModelSpeed
from roadmap.checkpoints import POLICIES, keep_after_finish, resume_from
from roadmap.config import ROOT
from roadmap.console import full_tracebacks, one_line
from roadmap.device import resolve_channels_last, resolve_precision, set_cpu_threads
from roadmap.evaluate import evaluate
from roadmap.job import launched, summarised
from roadmap.models import profile
from roadmap.models.weights import load_pretrained
from roadmap.module import Classifier
from roadmap.runs import (CHECKPOINTS, RunError, RunInUseError, Summary, finished_run, identity, launch_stopped,
                          save_config, variant_overrides)
from roadmap.trainer import build_loggers, build_trainer, log_config, log_final, plain

log = logging.getLogger("roadmap")


def train(cfg: DictConfig) -> float:
    """Train one job under its run directory's lock; returns best val top-1 (%), what a sweeper would optimise.
    The job records its start and outcome in the command's launch file (`roadmap.runs.launch`)."""
    run_dir = Path(cfg.paths.output_dir)
    record = identity(cfg)
    with launched(cfg, run_dir) as outcome:
        summary = finished_run(run_dir, record, cfg.force, cfg.eval_only) or _run(cfg, run_dir, record)
        outcome.update(status=summary.status, acc1=summary.acc1, error=summary.error)
    return summary.acc1_best if summary.acc1_best is not None else float("nan")


def _run(cfg: DictConfig, run_dir: Path, record: dict[str, Any]) -> Summary:
    """Start, resume or evaluate (eval_only=true) the run; its summary is written however it ends."""
    save_config(run_dir, cfg, list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else [])
    started = time.perf_counter()
    summary = _new_summary(cfg, run_dir, record)
    with summarised(summary, run_dir, cfg.checkpoint, started):
        preflight(cfg)
        ckpt = None if cfg.eval_only else resume_from(cfg.ckpt_path, run_dir, record)
        if ckpt is not None:
            log.info("resuming from %s", ckpt)
        set_cpu_threads(cfg)
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        datamodule, module = _build(cfg, summary, record)
        loggers = build_loggers(cfg, run_dir)
        trainer = build_trainer(cfg, run_dir, loggers)
        log_config(loggers, record, summary)
        if cfg.eval_only:   # ckpt_path's weights on the val split: nothing trained, resumed or kept
            return evaluate(trainer, module, datamodule, cfg.ckpt_path, summary, run_dir)
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        except BaseException:
            # Lightning tears down only the loop that failed: after a sanity check's failure the fit loop still
            # holds the train loader's iterator and its workers (run_job frees what the failed frames hold)
            trainer.fit_loop.teardown()
            raise
        _record_fit(cfg, trainer, module, summary, run_dir)
        if summary.status == "finished":
            log_final(loggers, summary)
    return summary


def _build(cfg: DictConfig, summary: Summary, record: dict[str, Any]) -> tuple[L.LightningDataModule, Classifier]:
    """The data and the model, as the run's config says; the model's size goes into the summary."""
    # persistent loader workers carry RNG streams across epochs that a checkpoint cannot hold: a deterministic
    # run starts fresh workers each epoch (seeded from the restored RNG), so it resumes exactly
    fresh_workers = cfg.trainer.deterministic and cfg.data.get("persistent_workers") is None
    datamodule = instantiate(cfg.data, **({"persistent_workers": False} if fresh_workers else {}))
    model = build_model(cfg)
    if not cfg.eval_only:   # an evaluation loads ckpt_path's weights instead (roadmap.evaluate)
        summary.pretrained = load_pretrained(model, cfg.model.get("pretrained"), cfg.recipe.head_init_scale)
    summary.model = plain(cfg.model).get("model_name", type(model).__name__)
    counts = profile(model, cfg.data.image_size)
    summary.params, summary.gmacs = counts["params"], counts["gmacs"]
    summary.gmacs_224 = (summary.gmacs if cfg.data.image_size == 224
                         else profile(build_model(_at_224(cfg)))["gmacs"])
    if cfg.trainer.grad_checkpointing:
        model.set_grad_checkpointing()
    channels_last = resolve_channels_last(cfg)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.trainer.compile:
        model.compile()
    module = Classifier(model, plain(cfg.recipe), cfg.data.num_classes, channels_last=channels_last, record=record)
    return datamodule, module


def _record_fit(cfg: DictConfig, trainer: L.Trainer, module: Classifier, summary: Summary, run_dir: Path) -> None:
    """What the fit measured, into the summary: its scores, speed and the checkpoints it keeps."""
    if trainer.interrupted:
        summary.status, summary.error = "interrupted", "interrupted; rerun the same command to resume"
        return
    m = trainer.callback_metrics
    summary.status, summary.steps = "finished", trainer.global_step
    summary.acc1, summary.acc5, summary.val_loss = (_f(m.get(k)) for k in ("val/acc1", "val/acc5", "val/loss"))
    summary.acc1_best, summary.acc5_best = float(module.best_acc1), float(module.best_acc5)
    summary.acc1_ema, summary.train_img_per_s = _f(m.get("val/acc1_ema")), module.throughput
    speed = next((c.img_per_s for c in trainer.callbacks if isinstance(c, ModelSpeed)), None)
    if speed:
        summary.model_img_per_s, summary.job_efficiency = speed, module.throughput / speed
    if not trainer.is_global_zero:   # rank 0 owns the run directory: another rank's best.pt write races its listing
        return
    kept = keep_after_finish(run_dir / CHECKPOINTS, cfg.checkpoint)
    summary.checkpoint_kept = [str(p.relative_to(run_dir)) for p in kept]
    summary.checkpoint_bytes = sum(p.stat().st_size for p in kept)


def _new_summary(cfg: DictConfig, run_dir: Path, record: dict[str, Any]) -> Summary:
    """The summary of a run about to start: what it is, what it will be compared with, where and from what code."""
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    return Summary(
        name=cfg.name, step=cfg.roadmap.step, step_name=cfg.roadmap.name,
        # overrides beyond the step (e.g. model.kernel_size=9): what tells two runs of one step apart
        variant=variant_overrides(cfg.name, hydra.job.override_dirname) if hydra else "",
        paper_top1=_paper_top1(cfg), paper_gmacs=cfg.roadmap.paper_gmacs, group=cfg.group,
        budget=hydra.runtime.choices.get("budget") if hydra else None,   # the +budget= preset (experiments/budget/)
        recipe=cfg.recipe.name, data=cfg.data.name, num_classes=cfg.data.num_classes,
        image_size=cfg.data.image_size, epochs=cfg.trainer.max_epochs, precision=resolve_precision(cfg),
        seed=cfg.seed, git_commit=git_commit(), run_dir=str(run_dir.resolve()), checkpoint=cfg.checkpoint,
        **record)


def preflight(cfg: DictConfig) -> None:
    """Refuse configurations that would fail later, or silently not do what they say, before anything is trained."""
    if cfg.checkpoint not in POLICIES:
        raise RunError(f"checkpoint={cfg.checkpoint!r} is invalid: allowed {' | '.join(POLICIES)}")
    if str(cfg.trainer.accelerator) in ("gpu", "cuda") and not torch.cuda.is_available():
        raise RunError("trainer.accelerator=gpu but no CUDA GPU is visible to PyTorch: use "
                       "trainer.accelerator=auto (or cpu), or check CUDA_VISIBLE_DEVICES and the driver")
    # the ConvNeXt configs carry their size's stochastic depth (T 0.1, S 0.4, B 0.5): the recipe's would be ignored
    overrides = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    asked = next((o.lstrip("+") for o in overrides if o.lstrip("+").startswith("recipe.drop_path_rate=")), None)
    if asked and cfg.model.get("drop_path_rate", cfg.recipe.drop_path_rate) != cfg.recipe.drop_path_rate:
        raise RunError(f"{asked} has no effect: the model config sets its own model.drop_path_rate="
                       f"{cfg.model.drop_path_rate}; set model.drop_path_rate instead")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _paper_top1(cfg: DictConfig) -> float | None:
    """The published top-1 for this run: its roadmap step's (Table 10), else its model's (`paper.baseline`)."""
    if cfg.roadmap.paper_top1 is not None:
        return cfg.roadmap.paper_top1
    ref = paper.baseline(cfg.model.get("model_name"), cfg.name, cfg.data.name)
    return None if ref is None else float(ref["top1"])


def _at_224(cfg: DictConfig) -> DictConfig:
    c = cfg.copy()
    c.data.image_size = 224
    return c


def _f(v: Any) -> float | None:
    return None if v is None else float(v)


def run_job(cfg: DictConfig) -> float | None:
    """train() for the command line: a failure is one logged line (full traceback with HYDRA_FULL_ERROR=1), so
    the other jobs of a multirun go on; run.py turns the jobs' recorded outcomes into the exit code. An
    interruption (Ctrl-C, a preemption signal) ends the whole command; when the command itself was signalled, it
    waits for its jobs (run.py), and each returns, recorded: raised, it would make joblib kill the other workers
    before they checkpoint."""
    try:
        return train(cfg)
    except SystemExit:
        if launch_stopped():
            return None
        raise
    except RunInUseError as e:   # the directory and its run.log are another process's: not a line there
        print(f"{cfg.get('name', 'job')} (seed {cfg.get('seed')}): {e}", file=sys.stderr)
        return None
    except Exception as e:
        if full_tracebacks():
            raise
        log.error(f"{cfg.get('name', 'job')} (seed {cfg.get('seed')}): {one_line(e)}")
        # its frames hold the job's loaders: freed now, a loader's workers exit when told; left to the cycle
        # collector, each waits out torch's 5 s join timeout and is killed (the index queue's finalizer has queued
        # its close sentinel before the iterator's shutdown queues the worker's stop)
        traceback.clear_frames(e.__traceback__)
        return None
    finally:   # a job's trainer, model and data hold each other: free them (decoded images, ~0.5 GB) before the next
        gc.collect()
