"""The Lightning Trainer of a job and its loggers, assembled from conf/trainer/, conf/logger/ and conf/callbacks/:
the callbacks every run has whatever its config (preemption, history, progress), and W&B's run identity."""
from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from roadmap import paper, schema, slurm
from roadmap.callbacks import EpochHistory, LineProgress, ModelSpeed, Preemption
from roadmap.checkpoints import AtomicCheckpointIO
from roadmap.device import resolve_benchmark, resolve_precision
from roadmap.runs import CHECKPOINTS, LAST, ORDER, WANDB_ID, Summary


def plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def build_loggers(cfg: DictConfig, run_dir: Path) -> list[Any]:
    """conf/logger/'s loggers; a W&B run keeps its id in the run directory, so a resumed job continues it."""
    loggers = []
    for name, lcfg in (cfg.get("logger") or {}).items():
        if name == "wandb":
            id_file = run_dir / WANDB_ID
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


def build_trainer(cfg: DictConfig, run_dir: Path, loggers: list[Any]) -> L.Trainer:
    """The Trainer of conf/trainer/ (less the switches train.py applies itself: `schema.keyed(ours=True)`), with the
    device defaults resolved (`roadmap.device`) and the callbacks of the run record."""
    ours = schema.keys_with("ours", "trainer")
    kwargs = {k: v for k, v in plain(cfg.trainer).items() if k not in ours}
    kwargs["precision"], kwargs["benchmark"] = resolve_precision(cfg), resolve_benchmark(cfg)
    keep = cfg.checkpoint != "none"
    callbacks = [c for c in map(instantiate, (cfg.get("callbacks") or {}).values())
                 if keep or not isinstance(c, ModelCheckpoint)]   # checkpoint=none: no checkpoint callback at all
    callbacks.append(Preemption(run_dir / CHECKPOINTS / LAST if keep else None))
    callbacks.append(EpochHistory(run_dir))   # the learning curve is part of the run record, whatever the callbacks
    if cfg.trainer.efficiency:
        callbacks.append(ModelSpeed())
    interactive = sys.stdout.isatty()  # a log file gets plain lines, not a bar's final frame
    callbacks.append(RichProgressBar() if interactive else LineProgress())
    return L.Trainer(**kwargs, callbacks=callbacks, logger=loggers or False, enable_progress_bar=interactive,
                     default_root_dir=str(run_dir), enable_model_summary=False, enable_checkpointing=keep,
                     plugins=[AtomicCheckpointIO(), *slurm.environment()])


def log_config(loggers: list[Any], record: dict[str, Any], summary: Summary) -> None:
    """Flat keys (model.kernel_size, roadmap.step) and the model's size: what dashboards group and filter by."""
    for lg in loggers:
        lg.log_hyperparams({**record["config"], "params": summary.params, "gmacs": summary.gmacs,
                            "gmacs_224": summary.gmacs_224})


def log_final(loggers: list[Any], summary: Summary) -> None:
    """The run's final numbers (summary.json's fields) into its W&B summary, where tables and bar charts read
    them, and its place in the paper's order, which the dashboard sorts by (roadmap.dashboard)."""
    order = paper.run_order()
    final = {k: v for k, v in summary.row().items() if isinstance(v, (int, float))}
    final[ORDER] = order.index(summary.name) if summary.name in order else len(order)
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            lg.experiment.summary.update(final)


def finish_wandb() -> None:
    """End this job's W&B run, if it had one, so the next job of a sweep gets its own."""
    if "wandb" in sys.modules:
        import wandb
        if wandb.run is not None:
            wandb.finish()
