"""The run record, in one place: where a run lives, the files it writes, its typed summary, the fingerprint of
what it trains, the lock that gives it one writer, and the record of what a command launched. `train.py` writes
through this module and `report.py` reads through it, so the two cannot drift apart."""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from roadmap import schema
from roadmap.atomic import write_atomic

log = logging.getLogger("roadmap")

# -- file names -------------------------------------------------------------------------------------------------
SUMMARY = "summary.json"            # written once the job ends, whatever the outcome
HISTORY = "history.csv"             # one row per validation: the learning curve (`write_history`)
CHECKPOINTS = "checkpoints"         # last.ckpt, its predecessor and best.ckpt
LAST, PREVIOUS = "last.ckpt", "last.prev.ckpt"
BEST, BEST_WEIGHTS = "best.ckpt", "best.pt"   # the best epoch's full checkpoint; its model weights alone
SUPERSEDED = "superseded"           # where force=true moves an earlier run's record
EVAL = "eval"                       # an eval_only=true job's directory, inside the run directory of its config
CONFUSION = "confusion.png"         # what an eval_only=true job draws: its row-normalised confusion matrix
EXPORT = "export"                   # what `python -m roadmap.export` writes by default: timm's Hugging Face layout
LOCK = ".lock"                      # held (flock) by the one process writing the run
WANDB_ID = "wandb_id"               # the same W&B run across resumes
RUN_LOG = "run.log"                 # the whole console of the run (also Hydra's job log file)
CONFIG, OVERRIDES = ".hydra/config.yaml", ".hydra/overrides.yaml"   # where Hydra would put them
RECORD = (SUMMARY, HISTORY, CONFIG, OVERRIDES)  # what a committed run keeps (results/*/runs)
RUN_MARKERS = (".hydra", CHECKPOINTS)  # a run directory has these from its start, summary.json only at its end
LAUNCH_ENV = "ROADMAP_LAUNCH"        # the folder where the jobs of one command record themselves
BUDGET_DIR = "budget="               # a budget's folder in a study: budget=<name> (`run_subdir`)

# -- layout ------------------------------------------------------------------------------------------------------
# The keys a run directory's path already names (`run_subdir`): its study (experiment, group), budget, data, step,
# seed and evaluation folder, so they are not repeated in its name's overrides
PATH_KEYS = ("experiment", "group", "budget", "data", "roadmap", "seed", "eval_only")


def override_key(override: str) -> str:
    """`+model.kernel_size=9` -> `model.kernel_size` (Hydra's +/~/++ prefix off)."""
    return override.partition("=")[0].lstrip("+~")


def run_variant(override_dirname: str, max_len: int = 120) -> str:
    """Overrides that change what is trained, as a path-safe suffix of the run directory ('' if none).
    A long list keeps a readable prefix and a hash of the whole, so the name stays unique and < 255 bytes."""
    if not override_dirname:
        return ""
    safe = re.sub(r"[/\\\s]+", "_", override_dirname)
    if len(safe) > max_len:
        safe = f"{safe[:max_len - 13]}...{hashlib.sha1(safe.encode()).hexdigest()[:10]}"
    return "," + safe


def split_overrides(override_dirname: str) -> list[str]:
    """Hydra's `a=1,b=[2,3]` as ['a=1', 'b=[2,3]'] (commas inside a list value do not split)."""
    return [o for o in re.split(r",(?![^\[]*\])", override_dirname) if o]


def variant_overrides(name: str, override_dirname: str) -> str:
    """The overrides that tell a run apart from others of its name: those that change what is trained
    (`schema.kind`) and that its path does not name already (`PATH_KEYS`), but `model=<name>`, which a run
    named after its model (a baseline) would otherwise repeat. `model=` under a roadmap step stays."""
    return ",".join(o for o in split_overrides(override_dirname)
                    if o != f"model={name}" and override_key(o) not in PATH_KEYS
                    and schema.kind(override_key(o)) != schema.RUNTIME)


def design_overrides(variant: str) -> list[str]:
    """A variant's overrides of the design (`schema.DESIGN`): none, and the run is still its paper row."""
    return [o for o in split_overrides(variant) if schema.kind(override_key(o)) == schema.DESIGN]


def run_subdir(data: str, name: str, override_dirname: str, seed: int | str, eval_only: bool = False,
               budget: str | None = None) -> str:
    """A run's directory below its study (<log_dir>/<group>/): [budget=<budget>/]<data>/<name>[,<overrides>]/seed<N>,
    and an evaluation's (eval_only=true) the `eval/` folder inside it, so it never overwrites the run's own record.
    A budget (`+budget=`, not an override of the run's keys) has a folder of its own, so two budgets of one study
    never share a run directory. The Hydra config builds run and sweep directories with it (the `run_subdir`
    resolver)."""
    run = f"{data}/{name}{run_variant(variant_overrides(name, override_dirname))}/seed{seed}"
    if budget:
        run = f"{BUDGET_DIR}{budget}/{run}"
    return f"{run}/{EVAL}" if eval_only else run


def parse_run_dir(run_dir: Path) -> dict[str, Any]:
    """The inverse of `run_subdir` (with the group above it), for runs that left no summary."""
    name, _, variant = run_dir.parent.name.partition(",")
    seed = re.fullmatch(r"seed(\d+)", run_dir.name)
    above = run_dir.parent.parent.parent   # the budget's folder, else the group's
    budget = above.name.removeprefix(BUDGET_DIR) if above.name.startswith(BUDGET_DIR) else None
    return {"name": name, "variant": variant, "data": run_dir.parent.parent.name, "budget": budget,
            "group": (above.parent if budget else above).name, "seed": int(seed[1]) if seed else None}


def checkpoint_dir(run_dir: str | Path | None) -> str | None:
    """<run dir>/checkpoints; None while there is no run directory (`run.py --cfg job --resolve` runs no job)."""
    return None if run_dir is None else str(Path(run_dir) / CHECKPOINTS)


def run_dirs(root: Path) -> tuple[list[Path], list[Path]]:
    """(summaries, started run directories without a summary) below `root`, outside `superseded/` and leaving out
    evaluations (`eval/`), which trained nothing."""
    def live(p: Path) -> bool:   # p: a run directory's summary.json or marker
        parts = p.relative_to(root).parts
        return SUPERSEDED not in parts and EVAL not in parts[-2:-1]
    summaries = [p for p in sorted(root.rglob(SUMMARY)) if live(p)]
    started = sorted({p.parent for marker in RUN_MARKERS for p in root.rglob(marker) if p.is_dir() and live(p)})
    return summaries, [d for d in started if not (d / SUMMARY).exists()]


# -- summary -----------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Summary:
    """What a job ends by writing to summary.json; `report.py` reads these fields, in this order."""
    status: str = "failed"                 # finished | failed | interrupted
    error: str | None = None
    name: str | None = None
    step: str | None = None
    step_name: str | None = None
    variant: str = ""
    paper_top1: float | None = None
    paper_gmacs: float | None = None
    group: str | None = None
    budget: str | None = None              # the +budget= preset it ran under, if any (experiments/budget/)
    model: str | None = None
    params: int | None = None
    gmacs: float | None = None
    gmacs_224: float | None = None
    data: str | None = None
    num_classes: int | None = None
    image_size: int | None = None
    epochs: int | None = None
    steps: int | None = None               # optimizer steps taken, resumed runs included
    precision: str | None = None
    seed: int | None = None
    recipe: str | None = None
    pretrained: dict[str, Any] | None = None  # the weights it started from: name, path, sha256, head_reset
    evaluated: dict[str, Any] | None = None   # eval_only=true: the weights evaluated (ckpt_path): name, path, sha256
    acc1: float | None = None
    acc5: float | None = None
    acc1_best: float | None = None
    acc5_best: float | None = None
    acc1_ema: float | None = None
    val_loss: float | None = None
    train_img_per_s: float | None = None
    model_img_per_s: float | None = None   # trainer.efficiency=true: the model alone, timed after training
    job_efficiency: float | None = None    # train_img_per_s / model_img_per_s
    wall_s: float | None = None
    git_commit: str | None = None
    run_dir: str | None = None
    finished_at: str | None = None
    checkpoint: str | None = None          # the policy (resume | best | none) and what it kept, in bytes
    checkpoint_kept: list[str] | None = None
    checkpoint_bytes: int | None = None
    fingerprint: str | None = None         # of `config`; a rerun skips only a run with the same one
    per_class: dict[str, float | None] | None = None   # eval_only=true: val top-1 (%) by class name (None: no image)
    config: dict[str, Any] | None = None   # the resolved config without runtime-only keys, flat

    def write(self, run_dir: Path) -> None:
        write_atomic(run_dir / SUMMARY, json.dumps(dataclasses.asdict(self), indent=2).encode())

    def row(self) -> dict[str, Any]:
        """The fields a table of runs shows (`SCHEMA`): all but the config and the per-class accuracies."""
        return {name: getattr(self, name) for name in SCHEMA}

    @classmethod
    def read(cls, path: Path) -> Summary:
        """A summary.json; keys this version does not know (or no longer writes) are dropped. Raises
        `UnreadableSummaryError`, naming the file, for one that is torn or not a summary."""
        try:
            data = json.loads(path.read_text())
            return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})
        except (OSError, ValueError, TypeError) as e:   # ValueError: JSONDecodeError, UnicodeDecodeError
            raise UnreadableSummaryError(f"{path} cannot be read ({type(e).__name__}: {e})") from None


class UnreadableSummaryError(ValueError):
    """A summary.json that is torn (a kill or a full disk while it was written by hand or by another tool)."""


SCHEMA = [f.name for f in dataclasses.fields(Summary) if f.name not in ("config", "per_class")]
ORDER = "roadmap.order"   # W&B summary key: the run's place in the paper's order (steps, then baselines)


# -- history -------------------------------------------------------------------------------------------------------
HISTORY_FIELDS = ("epoch", "step", "train_loss", "val_loss", "acc1", "acc5", "acc1_ema")


def write_history(run_dir: Path, rows: list[Mapping[str, Any]]) -> None:
    """The whole learning curve so far, replacing the file: a resumed run rewrites it from its checkpoint's rows,
    so it never keeps epochs the checkpoint did not reach. Floats at full precision (a rerun writes the same
    bytes); a column no row has (acc1_ema without EMA) is left out."""
    fields = [f for f in HISTORY_FIELDS if any(row.get(f) is not None for row in rows)] or list(HISTORY_FIELDS)
    lines = [",".join(fields)] + [",".join("" if row.get(f) is None else repr(row[f]) for f in fields)
                                  for row in rows]
    write_atomic(run_dir / HISTORY, ("\n".join(lines) + "\n").encode())


def read_history(run_dir: Path) -> list[dict[str, float | None]]:
    """A run's history.csv as rows (a blank cell: None); [] for a run without one (recorded before it existed)."""
    path = run_dir / HISTORY
    if not path.is_file():
        return []
    header, *lines = path.read_text().splitlines()
    fields = header.split(",")
    return [{f: (float(v) if v else None) for f, v in zip(fields, line.split(","))} for line in lines if line]


# -- fingerprint -------------------------------------------------------------------------------------------------
def flat_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as {dotted.key: value}, without the keys that say where or how fast a run goes
    (`schema.RUNTIME`): a run resumed or skipped on another machine, with other paths, loggers or loader processes,
    is the same run (and an evaluation has its run's fingerprint)."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if prefix and schema.kind(prefix) == schema.RUNTIME:
            return
        if isinstance(node, Mapping) and node:
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            flat[prefix] = node
    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


def fingerprint(flat: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:16]


# Keys added after runs began to record their config, whose schema default trains what a record without them
# trained (`schema.keyed(added=True)`): a finished run or a checkpoint from before such a key existed still matches
# a config at its default.
ADDED_KEYS = tuple(f"{group}.{key}" for group in ("model", "recipe", "data") for key in schema.keys_with("added", group))


def same_run(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether a recorded flat config (`old`) trains what `new` does: equal, once the keys it predates
    (`ADDED_KEYS`) are filled in at their schema defaults."""
    return {**{k: schema.default(k) for k in ADDED_KEYS if k in new}, **old} == dict(new)


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any], shown: int = 4) -> str:
    """'key: old -> new' for the first differing keys, and how many more."""
    keys = sorted(k for k in set(old) | set(new) if old.get(k, "<absent>") != new.get(k, "<absent>"))
    parts = [f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}" for k in keys[:shown]]
    return ", ".join(parts) + (f" and {len(keys) - shown} more" if len(keys) > shown else "")


class RunError(ValueError):
    """A job cannot start as configured; the message says what to change."""


def identity(cfg: DictConfig) -> dict[str, Any]:
    """What a run trains, as its record keeps it: the flat config and its fingerprint."""
    flat = flat_config(cfg)
    return {"fingerprint": fingerprint(flat), "config": flat}


def finished_run(run_dir: Path, record: Mapping[str, Any], force: bool, eval_only: bool) -> Summary | None:
    """The finished run of this configuration that the directory holds, to skip to; None: a run to start or resume.
    A finished run of another configuration is refused by the keys that differ; force=true moves it aside first.
    An evaluation always runs (`roadmap.evaluate`)."""
    if force:
        moved = archive_previous(run_dir)
        if moved:
            log.info("force=true: previous results moved to %s", moved)
        return None
    if eval_only or not (run_dir / SUMMARY).exists():
        return None
    try:
        previous = Summary.read(run_dir / SUMMARY)
    except UnreadableSummaryError as e:
        log.warning("%s: the run counts as unfinished and resumes from its checkpoint, if it has one", e)
        return None
    if previous.status != "finished":
        return None
    # None: written before fingerprints; else the same run if it predates keys now at their defaults
    if previous.fingerprint is not None and not same_run(previous.config or {}, record["config"]):
        raise RunError(f"{run_dir} holds a finished run of another configuration "
                       f"({config_diff(previous.config or {}, record['config'])}); train this one with "
                       "force=true (the old run moves to superseded/) or under another group=")
    log.info("already finished: %s (val/acc1 %.2f, best %.2f); force=true to train again",
             run_dir / SUMMARY, previous.acc1, previous.acc1_best)
    return previous


# -- one writer per run ------------------------------------------------------------------------------------------
class RunInUseError(RuntimeError):
    """Another live process holds the run directory's lock."""


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock while the job runs. The kernel drops an flock when its process dies, so a
    killed run leaves no stale lock; the file keeps the holder's pid for the message a second process gets."""
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise RunInUseError(f"{run_dir} is in use by pid {pid}; wait for it, or choose another group=/seed=")
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def save_config(run_dir: Path, cfg: DictConfig, overrides: list[str]) -> None:
    """The job's config and command-line overrides, as Hydra saves them, but written by the lock's holder: Hydra
    itself (`hydra.output_subdir: null`) would overwrite them from a second process refused the directory."""
    for name, node in ((CONFIG, cfg), (OVERRIDES, OmegaConf.create(overrides))):
        (run_dir / name).parent.mkdir(exist_ok=True)
        write_atomic(run_dir / name, OmegaConf.to_yaml(node).encode())


def archive_previous(run_dir: Path) -> Path | None:
    """force=true: move the old summary, checkpoints and W&B id to superseded/<time>/ instead of deleting them."""
    old = [p for p in (run_dir / SUMMARY, run_dir / CHECKPOINTS, run_dir / WANDB_ID) if p.exists()]
    if not old:
        return None
    dest = run_dir / SUPERSEDED / datetime.now().strftime("%Y%m%d-%H%M%S")
    dest.mkdir(parents=True)
    for p in old:
        shutil.move(str(p), dest / p.name)
    return dest


# -- what one command launched -----------------------------------------------------------------------------------
# A folder per command, one file per job in it: each file is written whole and renamed into place, which holds on a
# shared filesystem where appends to one file from several nodes are not atomic.
STOP = ".stop"   # in the launch folder: the command was signalled, and a job that starts now does not train


@contextmanager
def launch(log_dir: Path) -> Iterator[Path]:
    """Give the jobs of one command (whatever the launcher: in-process, joblib, SLURM) a folder to record
    themselves in, through the environment they inherit; yields its path. It lives under the output directory,
    which workers on other nodes share, is made by the first job (a command that runs none, as --help, writes
    nothing) and is removed afterwards."""
    path = log_dir / ".launches" / f"{datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}"
    previous = os.environ.get(LAUNCH_ENV)
    os.environ[LAUNCH_ENV] = str(path)
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(LAUNCH_ENV, None)
        else:
            os.environ[LAUNCH_ENV] = previous
        shutil.rmtree(path, ignore_errors=True)


def record_launch(job: Mapping[str, Any]) -> None:
    """Write a job's record (at its start, then with its outcome) to its own file in this command's launch
    folder, if there is one, with the host and pid that run it: where the command sends a signal it receives."""
    folder = os.environ.get(LAUNCH_ENV)
    if folder:
        name = hashlib.sha1(str(job["run_dir"]).encode()).hexdigest()[:16] + ".json"
        event = {**job, "host": socket.gethostname(), "pid": os.getpid()}
        Path(folder).mkdir(parents=True, exist_ok=True)
        write_atomic(Path(folder) / name, json.dumps(event, default=str).encode())


def launched_jobs(folder: Path) -> list[dict[str, Any]]:
    """Each job of the launch folder in the order they started: its outcome, or `killed` for a job that started
    and never ended."""
    return [job if job.get("status") else {**job, "status": "killed", "error": "started, never ended"}
            for job in _records(folder)]


def _records(folder: Path) -> list[dict[str, Any]]:
    return sorted((json.loads(p.read_text()) for p in folder.glob("*.json")), key=lambda job: job["started_at"])


def stop_jobs(folder: Path, signum: int) -> list[int]:
    """Pass a signal the command received on to its running jobs in other processes of this host (a parallel
    sweep's workers, which a signal to the command alone never reaches), and keep jobs not yet started from
    training; returns the pids of the jobs running on this host, this process's among them if it runs one.
    Jobs on other nodes belong to their scheduler (`scancel`)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STOP).touch()
    pids = [job["pid"] for job in _records(folder) if "status" not in job and job["host"] == socket.gethostname()]
    for pid in pids:
        if pid != os.getpid():
            with suppress(ProcessLookupError):
                os.kill(pid, signum)
    return pids


def launch_stopped() -> bool:
    """Whether the command that launched this job was signalled to stop (`stop_jobs`)."""
    folder = os.environ.get(LAUNCH_ENV)
    return bool(folder) and (Path(folder) / STOP).exists()
