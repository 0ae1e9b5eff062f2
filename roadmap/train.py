"""train(cfg): one roadmap job — instantiate, fit (resuming if possible), write summary.json.

A run directory holds everything of one job: .hydra/ (config), checkpoints/{last,best}.ckpt, the logger's
files and, once the job ends, summary.json (status finished | failed | interrupted). Rerunning the same
command finds the same directory: a finished run is skipped, an unfinished one resumes from last.ckpt.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from roadmap import build_model
from roadmap.callbacks import LineProgress
from roadmap.config import ROOT
from roadmap.data import usable_cores
from roadmap.models import profile
from roadmap.module import Classifier

log = logging.getLogger("roadmap")
FAILURES: list[str] = []  # one line per failed job of this process (run.py turns them into the exit code)


MODEL_SIDE_KEYS = ("channels_last", "compile", "cpu_threads")  # trainer/ keys that train.py applies itself


class RunError(ValueError):
    """A job cannot start as configured; the message says what to change."""


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write to a temporary file in the same directory, then rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


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


def ensure_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise RunError(f"output directory {run_dir} is not writable ({e.strerror}): set "
                       "paths.log_dir=<writable dir> or ROADMAP_OUTPUT_DIR") from None


def preflight(cfg: DictConfig) -> None:
    """Refuse configurations that would fail later, before anything is trained."""
    if str(cfg.trainer.accelerator) in ("gpu", "cuda") and not torch.cuda.is_available():
        raise RunError("trainer.accelerator=gpu but no CUDA GPU is visible to PyTorch: use "
                       "trainer.accelerator=auto (or cpu), or check CUDA_VISIBLE_DEVICES and the driver")


def check_checkpoint(path: Path, model_cfg: dict[str, Any]) -> None:
    """Refuse to resume from a checkpoint of a different model; loads with weights_only=True."""
    if not path.is_file():
        raise RunError(f"ckpt_path={path} does not exist")
    saved = torch.load(path, map_location="cpu", weights_only=True).get("roadmap", {}).get("model")
    if saved is None:
        raise RunError(f"checkpoint {path} was not written by roadmap (no model config inside); "
                       "start over with force=true or pass ckpt_path=null")
    diff = sorted(k for k in set(saved) | set(model_cfg) if saved.get(k) != model_cfg.get(k))
    if diff:
        shown = ", ".join(f"model.{k}: checkpoint {saved.get(k)!r} vs config {model_cfg.get(k)!r}" for k in diff)
        raise RunError(f"checkpoint {path} is from a different model ({shown}); use the matching "
                       "overrides, another run directory, or force=true to start over")


def _archive_previous(run_dir: Path) -> None:
    """force=true: move the old summary, checkpoints and W&B id aside instead of deleting them."""
    old = [p for p in (run_dir / "summary.json", run_dir / "checkpoints", run_dir / "wandb_id") if p.exists()]
    if old:
        dest = run_dir / "superseded" / datetime.now().strftime("%Y%m%d-%H%M%S")
        dest.mkdir(parents=True)
        for p in old:
            shutil.move(str(p), dest / p.name)
        log.info("force=true: previous results moved to %s", dest)


def _loggers(cfg: DictConfig, run_dir: Path) -> list[Any]:
    loggers = []
    for name, lcfg in (cfg.get("logger") or {}).items():
        if name == "wandb":
            id_file = run_dir / "wandb_id"  # same W&B run across resumes
            if not id_file.exists():
                id_file.write_text(datetime.now().strftime("%Y%m%d%H%M%S") + f"-{os.getpid()}")
            os.environ.setdefault("WANDB_SILENT", "true")
            loggers.append(instantiate(lcfg, id=id_file.read_text().strip()))
        else:
            loggers.append(instantiate(lcfg))
    return loggers


def _trainer(cfg: DictConfig, run_dir: Path, loggers: list[Any]) -> L.Trainer:
    kwargs = {k: v for k, v in _plain(cfg.trainer).items() if k not in MODEL_SIDE_KEYS}
    # the fast path, by default: bf16 autocast where it is native, cuDNN autotuning (channels_last: on the model)
    kwargs["precision"] = resolve_precision(cfg)
    if kwargs["benchmark"] == "auto":
        kwargs["benchmark"] = _gpu_requested(cfg) and not kwargs["deterministic"]
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    interactive = sys.stdout.isatty()  # a log file gets plain lines, not a bar's final frame
    callbacks.append(RichProgressBar() if interactive else LineProgress())
    return L.Trainer(**kwargs, callbacks=callbacks, logger=loggers or False, enable_progress_bar=interactive,
                     default_root_dir=str(run_dir), enable_model_summary=False)


def train(cfg: DictConfig) -> float:
    """Train one job; returns best val top-1 (%), the value a sweeper would optimise."""
    run_dir = Path(cfg.paths.output_dir)
    summary_path = run_dir / "summary.json"
    ensure_writable(run_dir)
    if cfg.force:
        _archive_previous(run_dir)
    elif summary_path.exists():
        previous = json.loads(summary_path.read_text())
        if previous.get("status") == "finished":
            log.info("already finished: %s (val/acc1 %.2f, best %.2f); force=true to train again",
                     summary_path, previous["acc1"], previous["acc1_best"])
            return previous["acc1_best"]

    model_cfg = _plain(cfg.model)
    started = time.perf_counter()
    summary: dict[str, Any] = {
        "status": "failed", "error": None, "name": cfg.name, "step": cfg.roadmap.step,
        "step_name": cfg.roadmap.name, "variant": _variant(), "paper_top1": cfg.roadmap.paper_top1,
        "paper_gmacs": cfg.roadmap.paper_gmacs, "group": cfg.group, "recipe": cfg.recipe.name,
        "data": cfg.data.name, "num_classes": cfg.data.num_classes, "image_size": cfg.data.image_size,
        "epochs": cfg.trainer.max_epochs, "precision": resolve_precision(cfg),
        "seed": cfg.seed, "git_commit": git_commit(), "run_dir": str(run_dir.resolve()),
    }
    try:
        preflight(cfg)
        ckpt = Path(cfg.ckpt_path) if cfg.ckpt_path else run_dir / "checkpoints" / "last.ckpt"
        if cfg.ckpt_path or ckpt.exists():
            check_checkpoint(ckpt, model_cfg)
            log.info("resuming from %s", ckpt)
        else:
            ckpt = None
        _set_cpu_threads(cfg)
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        # persistent loader workers carry RNG streams across epochs that a checkpoint cannot hold: a deterministic
        # run starts fresh workers each epoch (seeded from the restored RNG), so it resumes exactly
        fresh_workers = cfg.trainer.deterministic and cfg.data.get("persistent_workers") is None
        datamodule = instantiate(cfg.data, **({"persistent_workers": False} if fresh_workers else {}))
        model = build_model(cfg)
        summary["model"] = model_cfg.get("model_name", type(model).__name__)
        summary.update(profile(model, cfg.data.image_size))
        summary["gmacs_224"] = (summary["gmacs"] if cfg.data.image_size == 224
                                else profile(build_model(_at_224(cfg)))["gmacs"])
        channels_last = resolve_channels_last(cfg)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if cfg.trainer.compile:
            model.compile()
        module = Classifier(model, _plain(cfg.recipe), cfg.data.num_classes, channels_last=channels_last,
                            model_config=model_cfg)
        loggers = _loggers(cfg, run_dir)
        trainer = _trainer(cfg, run_dir, loggers)
        for lg in loggers:
            lg.log_hyperparams({**_plain(cfg), "profile": {k: summary[k] for k in ("params", "gmacs", "gmacs_224")}})
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        if trainer.interrupted:
            summary.update(status="interrupted", error="interrupted; rerun the same command to resume")
        else:
            m = trainer.callback_metrics
            summary.update(status="finished", acc1=_f(m.get("val/acc1")), acc5=_f(m.get("val/acc5")),
                           val_loss=_f(m.get("val/loss")), acc1_best=float(module.best_acc1),
                           acc5_best=float(module.best_acc5), train_img_per_s=module.throughput)
            if "val/acc1_ema" in m:
                summary["acc1_ema"] = _f(m["val/acc1_ema"])
        return summary.get("acc1_best") or float("nan")
    except BaseException as e:
        summary["error"] = one_line(e)
        summary["status"] = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        raise
    finally:
        summary["wall_s"] = time.perf_counter() - started
        summary["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        if rank_zero_only.rank == 0:
            write_json_atomic(summary_path, summary)
            log.info(closing_line(summary, run_dir))
        _finish_wandb()


def closing_line(summary: dict[str, Any], run_dir: Path) -> str:
    """What a run ends by saying: its status, top-1 when it finished, and where everything it wrote lies."""
    result = (f", top-1 {summary['acc1']:.2f} % (best {summary['acc1_best']:.2f})"
              if summary["status"] == "finished" and summary.get("acc1") is not None else "")
    return f"{summary['name']} seed {summary['seed']}: {summary['status']}{result}; results in {run_dir}"


def _variant() -> str:
    """Overrides beyond the step (e.g. model.kernel_size=9): what tells two runs of one step apart."""
    return HydraConfig.get().job.override_dirname if HydraConfig.initialized() else ""


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
    """train() for the command line: a failure is one logged line (full traceback with HYDRA_FULL_ERROR=1)
    and is recorded in FAILURES, so the other jobs of a multirun go on and the process exits non-zero."""
    try:
        return train(cfg)
    except Exception as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        line = f"{cfg.get('name', 'job')} (seed {cfg.get('seed')}): {one_line(e)}"
        log.error(line)
        FAILURES.append(line)
        return None
