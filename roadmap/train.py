"""train(cfg): one roadmap job — instantiate, fit (resuming if possible), write its summary.

A run directory (its layout and files: `roadmap.runs`) holds everything of one job. Rerunning the same command
finds the same directory: a finished run of the same configuration is skipped, an unfinished one resumes from
its last checkpoint, and a run of another configuration there is refused with the keys that differ.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from roadmap import build_model, paper, schema, slurm
from roadmap.callbacks import EpochHistory, LineProgress, ModelSpeed, Preempted, Preemption
from roadmap.checkpoints import (POLICIES, AtomicCheckpointIO, keep_after_finish, load_weights_only, prune,
                                 readable_last)
from roadmap.config import ROOT
from roadmap.console import console_to, full_tracebacks, quiet
from roadmap.data import usable_cores
from roadmap.evaluate import evaluate
from roadmap.models import profile
from roadmap.models.weights import load_pretrained
from roadmap.module import Classifier
from roadmap.runs import (CHECKPOINTS, LAST, ORDER, RUN_LOG, SUMMARY, WANDB_ID, RunInUseError, Summary,
                          UnreadableSummaryError, archive_previous, config_diff, fingerprint, flat_config,
                          launch_stopped, record_launch, run_lock, same_run, save_config, variant_overrides)

log = logging.getLogger("roadmap")


class RunError(ValueError):
    """A job cannot start as configured; the message says what to change."""


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _set_cpu_threads(cfg: DictConfig) -> None:
    """On CPU, split the cores among the training processes (torch would give each process all of them)."""
    if _gpu_requested(cfg):
        return
    threads = cfg.trainer.cpu_threads
    if threads == "auto":
        procs = cfg.trainer.devices if isinstance(cfg.trainer.devices, int) else 1
        threads = max(1, usable_cores() // procs)
    torch.set_num_threads(int(threads))


def _gpu_requested(cfg: DictConfig) -> bool:
    return str(cfg.trainer.accelerator) in ("gpu", "cuda") or (
        cfg.trainer.accelerator == "auto" and torch.cuda.is_available())


def native_bf16_cpu() -> bool:
    """AVX512-BF16 or AMX: CPUs where bf16 autocast is native. On a 2-core AVX512-BF16 machine it trained
    full-width ResNet-50 1.67x and ConvNeXt-T 1.5x faster than fp32 (roadmap.bench, 64 px, batch 32), and their
    quarter-width versions 1.3x and 1.0x (batch 64); elsewhere bf16 is emulated and slower."""
    return any(getattr(torch.cpu, probe, lambda: False)()
               for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def resolve_precision(cfg: DictConfig) -> str:
    """trainer.precision, with auto: bf16-mixed on a GPU or a CPU with native bf16, 32-true elsewhere."""
    if cfg.trainer.precision != "auto":
        return str(cfg.trainer.precision)
    return "bf16-mixed" if _gpu_requested(cfg) or native_bf16_cpu() else "32-true"


def resolve_channels_last(cfg: DictConfig) -> bool:
    """trainer.channels_last, with auto: on with a GPU (tensor cores) or with oneDNN on the CPU, whose NHWC
    kernels trained the quarter-width step 00 1.5x and step 07 1.3x faster under bf16 (roadmap.bench, 2-core
    AVX512-BF16, 64 px, batch 64), and 1.46x / 1.06x under fp32; off where neither is available."""
    if cfg.trainer.channels_last != "auto":
        return bool(cfg.trainer.channels_last)
    return _gpu_requested(cfg) or torch.backends.mkldnn.is_available()


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


def resume_from(cfg: DictConfig, run_dir: Path, record: dict[str, Any]) -> Path | None:
    """ckpt_path, else the run directory's newest readable last checkpoint, checked against this config."""
    if cfg.ckpt_path:
        path = Path(cfg.ckpt_path)
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


def _loggers(cfg: DictConfig, run_dir: Path) -> list[Any]:
    loggers = []
    for name, lcfg in (cfg.get("logger") or {}).items():
        if name == "wandb":
            id_file = run_dir / WANDB_ID  # same W&B run across resumes
            if not id_file.exists():
                id_file.write_text(datetime.now().strftime("%Y%m%d%H%M%S") + f"-{os.getpid()}")
            os.environ.setdefault("WANDB_SILENT", "true")
            logger = instantiate(lcfg, id=id_file.read_text().strip())
            # Lightning passes anonymous=None, which wandb >= 0.19 warns about on every run ("has no effect")
            logger._wandb_init.pop("anonymous", None)
            loggers.append(logger)
        else:
            loggers.append(instantiate(lcfg))
    return loggers


def _trainer(cfg: DictConfig, run_dir: Path, loggers: list[Any]) -> L.Trainer:
    kwargs = {k: v for k, v in _plain(cfg.trainer).items() if k not in schema.keys_with("ours", "trainer")}
    # the fast path, by default: bf16 autocast where it is native, cuDNN autotuning (channels_last: on the model)
    kwargs["precision"] = resolve_precision(cfg)
    if kwargs["benchmark"] == "auto":
        kwargs["benchmark"] = _gpu_requested(cfg) and not kwargs["deterministic"]
    keep = cfg.checkpoint != "none"
    callbacks = [instantiate(c) for name, c in (cfg.get("callbacks") or {}).items()
                 if keep or name != "model_checkpoint"]
    callbacks.append(Preemption(run_dir / CHECKPOINTS / LAST if keep else None))
    callbacks.append(EpochHistory(run_dir))   # the learning curve is part of the run record, whatever the callbacks
    if cfg.trainer.efficiency:
        callbacks.append(ModelSpeed())
    interactive = sys.stdout.isatty()  # a log file gets plain lines, not a bar's final frame
    callbacks.append(RichProgressBar() if interactive else LineProgress())
    return L.Trainer(**kwargs, callbacks=callbacks, logger=loggers or False, enable_progress_bar=interactive,
                     default_root_dir=str(run_dir), enable_model_summary=False, enable_checkpointing=keep,
                     plugins=[AtomicCheckpointIO(), *slurm.environment()])


def train(cfg: DictConfig) -> float:
    """Train one job under its run directory's lock; returns best val top-1 (%), what a sweeper would optimise.
    The job records its start and outcome in the command's launch file (`roadmap.runs.launch`)."""
    run_dir = Path(cfg.paths.output_dir)
    flat = flat_config(cfg)
    record = {"fingerprint": fingerprint(flat), "config": flat}
    job = {"run_dir": str(run_dir.resolve()), "name": cfg.name, "seed": cfg.seed,
           "started_at": datetime.now(timezone.utc).isoformat()}
    launched = rank_zero_only(record_launch)   # the job's launch record is rank 0's, as its summary is
    launched(job)
    outcome: dict[str, Any] = {"status": "failed"}
    try:
        if launch_stopped():   # the command was signalled while this job waited for a worker
            raise Preempted("the command was stopped before this job started; rerun it to run this job")
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunError(f"output directory {run_dir} is not writable ({e.strerror}): set "
                           "paths.log_dir=<writable dir> or ROADMAP_OUTPUT_DIR") from None
        quiet()
        with run_lock(run_dir) if rank_zero_only.rank == 0 else nullcontext():   # one writer per run
            with console_to(run_dir / RUN_LOG):
                summary = _train(cfg, run_dir, record)
        outcome = {"status": summary.status, "acc1": summary.acc1, "error": summary.error}
        return summary.acc1_best if summary.acc1_best is not None else float("nan")
    except BaseException as e:
        outcome = {"status": _status(e), "error": one_line(e)}
        raise
    finally:
        launched({**job, **outcome})


def _status(e: BaseException) -> str:
    return "interrupted" if isinstance(e, (KeyboardInterrupt, SystemExit)) else "failed"


def _train(cfg: DictConfig, run_dir: Path, record: dict[str, Any]) -> Summary:
    """The job itself, once the lock is held: skip, refuse, resume, start or evaluate (eval_only=true); always end
    with a summary."""
    if cfg.force:
        moved = archive_previous(run_dir)
        if moved:
            log.info("force=true: previous results moved to %s", moved)
    elif (run_dir / SUMMARY).exists() and not cfg.eval_only:   # an evaluation always runs: roadmap.evaluate
        previous = _previous_summary(run_dir)
        if previous is not None and previous.status == "finished":
            # None: written before fingerprints; else the same run if it predates keys now at their defaults
            if previous.fingerprint is not None and not same_run(previous.config or {}, record["config"]):
                raise RunError(f"{run_dir} holds a finished run of another configuration "
                               f"({config_diff(previous.config or {}, record['config'])}); train this one with "
                               "force=true (the old run moves to superseded/) or under another group=")
            log.info("already finished: %s (val/acc1 %.2f, best %.2f); force=true to train again",
                     run_dir / SUMMARY, previous.acc1, previous.acc1_best)
            return previous

    save_config(run_dir, cfg, list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else [])
    started = time.perf_counter()
    summary = Summary(
        name=cfg.name, step=cfg.roadmap.step, step_name=cfg.roadmap.name, variant=_variant(cfg.name),
        paper_top1=_paper_top1(cfg), paper_gmacs=cfg.roadmap.paper_gmacs, group=cfg.group, budget=_budget(),
        recipe=cfg.recipe.name, data=cfg.data.name, num_classes=cfg.data.num_classes,
        image_size=cfg.data.image_size, epochs=cfg.trainer.max_epochs, precision=resolve_precision(cfg),
        seed=cfg.seed, git_commit=git_commit(), run_dir=str(run_dir.resolve()), checkpoint=cfg.checkpoint,
        **record)
    try:
        preflight(cfg)
        ckpt = None if cfg.eval_only else resume_from(cfg, run_dir, record)
        if ckpt is not None:
            log.info("resuming from %s", ckpt)
        _set_cpu_threads(cfg)
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        # persistent loader workers carry RNG streams across epochs that a checkpoint cannot hold: a deterministic
        # run starts fresh workers each epoch (seeded from the restored RNG), so it resumes exactly
        fresh_workers = cfg.trainer.deterministic and cfg.data.get("persistent_workers") is None
        datamodule = instantiate(cfg.data, **({"persistent_workers": False} if fresh_workers else {}))
        model = build_model(cfg)
        if not cfg.eval_only:   # an evaluation loads ckpt_path's weights instead (roadmap.evaluate)
            summary.pretrained = load_pretrained(model, cfg.model.get("pretrained"), cfg.recipe.head_init_scale)
        summary.model = _plain(cfg.model).get("model_name", type(model).__name__)
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
        module = Classifier(model, _plain(cfg.recipe), cfg.data.num_classes, channels_last=channels_last,
                            record=record)
        loggers = _loggers(cfg, run_dir)
        trainer = _trainer(cfg, run_dir, loggers)
        for lg in loggers:   # flat keys (model.kernel_size, roadmap.step): what dashboards group and filter by
            lg.log_hyperparams({**record["config"], "params": summary.params, "gmacs": summary.gmacs,
                                "gmacs_224": summary.gmacs_224})
        if cfg.eval_only:   # ckpt_path's weights on the val split: nothing trained, resumed or kept
            return evaluate(trainer, module, datamodule, cfg.ckpt_path, summary, run_dir)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        if trainer.interrupted:
            summary.status, summary.error = "interrupted", "interrupted; rerun the same command to resume"
        else:
            m = trainer.callback_metrics
            summary.status, summary.steps = "finished", trainer.global_step
            summary.acc1, summary.acc5, summary.val_loss = (_f(m.get(k)) for k in ("val/acc1", "val/acc5",
                                                                                      "val/loss"))
            summary.acc1_best, summary.acc5_best = float(module.best_acc1), float(module.best_acc5)
            summary.acc1_ema, summary.train_img_per_s = _f(m.get("val/acc1_ema")), module.throughput
            speed = next((c.img_per_s for c in trainer.callbacks if isinstance(c, ModelSpeed)), None)
            if speed:
                summary.model_img_per_s, summary.job_efficiency = speed, module.throughput / speed
            kept = keep_after_finish(run_dir / CHECKPOINTS, cfg.checkpoint)
            summary.checkpoint_kept = [str(p.relative_to(run_dir)) for p in kept]
            summary.checkpoint_bytes = sum(p.stat().st_size for p in kept)
            _final_metrics(loggers, summary)
        return summary
    except BaseException as e:
        summary.status, summary.error = _status(e), one_line(e)
        raise
    finally:
        summary.wall_s = time.perf_counter() - started
        summary.finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            if rank_zero_only.rank == 0:
                summary.write(run_dir)
                if summary.status == "finished":   # only now: a summary that cannot be written leaves it resumable
                    prune(run_dir / CHECKPOINTS, cfg.checkpoint)
                log.info(closing_line(summary))
        finally:
            _finish_wandb()


def _previous_summary(run_dir: Path) -> Summary | None:
    """The run directory's summary, or None for one that cannot be read: the run counts as unfinished."""
    try:
        return Summary.read(run_dir / SUMMARY)
    except UnreadableSummaryError as e:
        log.warning("%s: the run counts as unfinished and resumes from its checkpoint, if it has one", e)
        return None


def _paper_top1(cfg: DictConfig) -> float | None:
    """The published top-1 for this run: its roadmap step's (Table 10), else its model's (`paper.baseline`)."""
    if cfg.roadmap.paper_top1 is not None:
        return cfg.roadmap.paper_top1
    ref = paper.baseline(cfg.model.get("model_name"), cfg.name, cfg.data.name)
    return None if ref is None else float(ref["top1"])


def _final_metrics(loggers: list[Any], summary: Summary) -> None:
    """The run's final numbers (summary.json's fields) into its W&B summary, where tables and bar charts read
    them, and its place in the paper's order, which the dashboard sorts by (roadmap.dashboard)."""
    order = paper.run_order()
    final = {k: v for k, v in summary.row().items() if isinstance(v, (int, float))}
    final[ORDER] = order.index(summary.name) if summary.name in order else len(order)
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            lg.experiment.summary.update(final)


def closing_line(summary: Summary) -> str:
    """What a run ends by saying: its status, top-1 when it finished, and where everything it wrote lies."""
    result = (f", top-1 {summary.acc1:.2f} % (best {summary.acc1_best:.2f})"
              if summary.status == "finished" and summary.acc1 is not None else "")
    return f"{summary.name} seed {summary.seed}: {summary.status}{result}; results in {summary.run_dir}"


def _variant(name: str) -> str:
    """Overrides beyond the step (e.g. model.kernel_size=9): what tells two runs of one step apart."""
    return variant_overrides(name, HydraConfig.get().job.override_dirname) if HydraConfig.initialized() else ""


def _budget() -> str | None:
    """The +budget= preset of the job (experiments/budget/), which its run directory also names."""
    return HydraConfig.get().runtime.choices.get("budget") if HydraConfig.initialized() else None


def _at_224(cfg: DictConfig) -> DictConfig:
    c = cfg.copy()
    c.data.image_size = 224
    return c


def _f(v: Any) -> float | None:
    return None if v is None else float(v)


def _finish_wandb() -> None:
    if "wandb" in sys.modules:  # only if a W&B logger was used
        import wandb
        if wandb.run is not None:
            wandb.finish()


def one_line(e: BaseException) -> str:
    """The first line of an exception's message, unwrapping Hydra's instantiate wrapper and a DataLoader
    worker's re-raise (whose first line is only "Caught X in DataLoader worker process N.")."""
    while e.__cause__ is not None and type(e).__name__ == "InstantiationException":
        e = e.__cause__
    text = str(e).strip().splitlines()
    if len(text) > 2 and text[1].startswith("Original Traceback"):  # the worker's own error is the last line
        text = [text[-1].split(": ", 1)[-1]]
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


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
        return None
