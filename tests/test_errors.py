"""Nothing lost, nothing cryptic: bad input gets one clear line; crashes, NaNs and failing sweep jobs lose
no finished work (issue: bad input, crashes and failing sweep jobs)."""
from __future__ import annotations

import errno
import json
import logging
import multiprocessing
import os
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import torch

import roadmap.atomic
import roadmap.checkpoints

from roadmap.module import NonFiniteLossError
from roadmap.report import load_runs, write_report
from roadmap.atomic import write_atomic
from roadmap.console import FULL_ERROR_ENV
from roadmap.runs import CHECKPOINTS, LAST, SUMMARY
from roadmap.train import RunError, run_job, train

from helpers.commands import HOLD, READY, run_py, start_held
from helpers.data import make_folder

SMALL = "model.width_mult=0.25"


def _assert_clean_failure(proc: subprocess.CompletedProcess, *needles: str) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Traceback" not in out, out
    for needle in needles:
        assert needle in out, out
    return out


# -- bad input on the command line: one clear line, non-zero exit, no traceback -----------------------
@pytest.mark.slow
def test_unknown_roadmap_step_lists_the_steps(tmp_path):
    proc = run_py("+roadmap=step08_nope", log_dir=tmp_path)
    _assert_clean_failure(proc, "step08_nope", "step00_baseline", "step07_separate_downsampling")
    assert not list(tmp_path.rglob("summary.json"))


@pytest.mark.slow
def test_full_traceback_on_request(tmp_path, tiny_cfg, monkeypatch):
    """HYDRA_FULL_ERROR=1 lets the traceback through: run.py's, for a composition error (no job starts, so
    no torch import), and run_job's, for a job's own error (in this process, as run.py calls it)."""
    proc = run_py("+roadmap=step08_nope", log_dir=tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr, proc.stderr
    monkeypatch.delenv(FULL_ERROR_ENV, raising=False)   # run.py sets it from HYDRA_FULL_ERROR
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    # without HYDRA_FULL_ERROR the same error is one logged line (test_failing_sweep_job_is_isolated_and_reported)
    with pytest.raises(ValueError, match="model.kernel_size=4 is invalid"):
        run_job(tiny_cfg("+roadmap=step00_baseline", "model.kernel_size=4"))


# run.py is `run_job` behind @hydra.main (proven above): the other cases run in-process through it.
@pytest.mark.slow
@pytest.mark.parametrize("overrides,needle", [
    (["model.stem=conv"], "model.stem='conv' is invalid: allowed 'resnet' | 'patchify'"),
    (["+roadmap=step00_baseline", "model.dw_position=top"], "model.dw_position='top' is invalid"),
    (["trainer.accelerator=gpu"], "trainer.accelerator=gpu but no CUDA GPU is visible"),
    (["data.image_size=16"], "data.image_size=16 is too small"),
    (["data.batch_size=512"], "data.batch_size=512"),
    (["data.num_workers=-1"], "data.num_workers=-1 is invalid: allowed auto or an integer >= 0"),
    (["data=folder", "data.num_classes=3", "data.root=MISSING"], "MISSING"),
    (["data=folder", "data.num_classes=3", "data.root=EMPTY"], "EMPTY"),
])
def test_bad_input_is_one_logged_line(tiny_cfg, tmp_path, caplog, overrides, needle):
    (tmp_path / "EMPTY").mkdir()
    overrides = [o.replace("EMPTY", str(tmp_path / "EMPTY")).replace("MISSING", str(tmp_path / "MISSING"))
                 for o in overrides]
    cfg = tiny_cfg(SMALL, *overrides)
    assert run_job(cfg) is None
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and needle in errors[0] and "\n" not in errors[0], errors
    if "data=folder" in overrides:
        assert "train/" in errors[0]  # the expected layout is spelled out
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.slow
def test_bad_image_in_a_loader_worker_is_one_clear_line(tiny_cfg, tmp_path, caplog, monkeypatch):
    """A DataError raised in a DataLoader worker comes back multi-line; the log line keeps the worker's message.
    The failed job's loader workers exit when told, none is killed after torch's join timeout."""
    killed, terminate = [], multiprocessing.process.BaseProcess.terminate

    def recorded_terminate(process):   # torch's loader kills a worker that outlived its join timeout
        killed.append(process.pid)
        terminate(process)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "terminate", recorded_terminate)
    folder = make_folder(tmp_path / "folder", per_class=2)
    bad = folder / "val" / "ant" / "0.JPEG"
    bad.write_bytes(bad.read_bytes()[:200])
    cfg = tiny_cfg(SMALL, "data=folder", f"data.root={folder}", "data.num_classes=3", "data.batch_size=2",
                   "data.num_workers=1", "data.image_size=32")
    assert run_job(cfg) is None
    (error,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "BadImageError: " in error and str(bad) in error and "data.bad_images=skip" in error, error
    assert "\n" not in error and "worker process" not in error, error
    assert killed == []


# -- in-process: what train() refuses, keeps and records ----------------------------------------------
@pytest.mark.slow
def test_output_dir_not_writable(tiny_cfg, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(RunError, match="is not writable"):
        train(tiny_cfg(SMALL, f"paths.output_dir={blocker / 'run'}"))


@pytest.mark.slow
def test_nan_loss_stops_at_once_and_keeps_last_good_checkpoint(tiny_cfg, tmp_path):
    cfg = tiny_cfg("+roadmap=step00_baseline", SMALL, "trainer.max_epochs=3",
                   "+callbacks.poison._target_=helpers.faults.PoisonWeightsAtSecondEpoch")
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at epoch 1, batch 0"):
        train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)  # the safe loader reads our checkpoints
    assert ckpt["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    s = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
    assert s["status"] == "failed" and "NonFiniteLossError" in s["error"]


@pytest.mark.slow
def test_checkpoint_of_another_model_is_refused(tiny_cfg, tmp_path):
    first = tiny_cfg("+roadmap=step00_baseline", SMALL, f"paths.output_dir={tmp_path / 'a'}", "checkpoint=best")
    train(first)
    ckpt = tmp_path / "a" / "checkpoints" / "best.ckpt"
    other = tiny_cfg("+roadmap=step02a_stage_ratio", SMALL, f"paths.output_dir={tmp_path / 'b'}", f"ckpt_path={ckpt}")
    with pytest.raises(RunError, match=r"another configuration \(.*model\.depths: \[3, 4, 6, 3\] -> \[3, 3, 9, 3\]"):
        train(other)


def test_summary_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    write_atomic(path, b'{"status": "finished"}')

    def crash(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        write_atomic(path, b'{"status": "failed"}')
    assert json.loads(path.read_text()) == {"status": "finished"}  # old file intact
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temp file left behind


# -- a full disk: one line naming the file and the cause, the last checkpoint kept ----------------------------
class _FullDisk:
    """A file on a disk that has just filled up: every write fails as the OS fails it."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.f, name)


def _fill_disk_at(monkeypatch, module, name: str, nth: int) -> None:
    """From the `nth` write of a file called `name` through `module.atomic_file` on, the disk is full."""
    real, writes = module.atomic_file, []

    @contextmanager
    def atomic_file(path):
        with real(path) as f:
            writes.append(path.name)
            yield _FullDisk(f) if writes.count(name) >= nth else f
    monkeypatch.setattr(module, "atomic_file", atomic_file)


@pytest.mark.slow
def test_disk_full_during_a_checkpoint_is_one_line_and_the_last_one_stays(tiny_cfg, tmp_path, monkeypatch):
    cfg = tiny_cfg("+roadmap=step00_baseline", SMALL, "trainer.max_epochs=3")
    _fill_disk_at(monkeypatch, roadmap.checkpoints, LAST, nth=2)   # epoch 1's save succeeds, epoch 2's does not
    ckpts = Path(cfg.paths.output_dir) / CHECKPOINTS
    with pytest.raises(OSError):
        train(cfg)
    line = f"OSError: [Errno 28] No space left on device: '{ckpts / LAST}'"
    assert json.loads((Path(cfg.paths.output_dir) / SUMMARY).read_text())["error"] == line
    assert torch.load(ckpts / LAST, map_location="cpu", weights_only=True)["global_step"] == 2
    assert not [p for p in ckpts.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()   # space freed: the rerun resumes from epoch 1's checkpoint
    train(cfg)
    assert json.loads((Path(cfg.paths.output_dir) / SUMMARY).read_text())["steps"] == 6


@pytest.mark.slow
def test_disk_full_during_the_summary_is_one_line_and_the_run_stays_resumable(tiny_cfg, tmp_path, monkeypatch,
                                                                           caplog):
    cfg = tiny_cfg("+roadmap=step00_baseline", SMALL)
    _fill_disk_at(monkeypatch, roadmap.atomic, SUMMARY, nth=1)
    run_job(cfg)
    run = Path(cfg.paths.output_dir)
    (error,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert error.endswith(f"OSError: [Errno 28] No space left on device: '{run / SUMMARY}'"), error
    assert not (run / SUMMARY).exists() and (run / CHECKPOINTS / LAST).is_file()   # not pruned as finished


# -- crash and resume: SIGKILL mid-epoch, rerun, same result -------------------------------------------
@pytest.mark.slow
def test_sigkill_mid_epoch_then_rerun_matches_uninterrupted(tiny_cfg, tmp_path, caplog):
    """A real run.py is killed mid-epoch; the uninterrupted run and the rerun are train() in this process, as
    run.py runs it (proven above), on the same config."""
    caplog.set_level(logging.INFO, logger="roadmap")
    args = ["+roadmap=step00_baseline", SMALL, "trainer.max_epochs=3", "trainer.limit_train_batches=4"]
    straight = tiny_cfg(*args, f"paths.output_dir={tmp_path / 'straight'}")
    train(straight)

    proc = start_held(*args, log_dir=tmp_path / "killed")
    os.kill(proc.pid, signal.SIGKILL)  # in epoch 2, epoch 1's checkpoint on disk
    proc.communicate()
    assert not list((tmp_path / "killed").rglob("summary.json"))  # nothing that looks like a result

    (ready,) = (tmp_path / "killed").rglob(READY)
    killed = ready.parent   # the run directory run.py chose (quoted: its name holds '=' and ',')
    assert (killed / CHECKPOINTS / LAST).is_file()
    train(tiny_cfg(*args, HOLD, f"paths.output_dir='{killed}'"))   # `ready` is there: it holds no more
    assert any(r.getMessage().startswith("resuming from") for r in caplog.records)
    a, b = (json.loads((Path(c) / "summary.json").read_text()) for c in (straight.paths.output_dir, killed))
    assert b["status"] == "finished"
    for key in ("acc1", "acc5", "val_loss", "acc1_best"):
        assert b[key] == pytest.approx(a[key], abs=1e-5), key


# -- sweep isolation: one bad job does not take the others down ---------------------------------------
@pytest.mark.slow
def test_failing_sweep_job_is_isolated_and_reported(tmp_path):
    """A bad flag in one job: that job fails in one clear line and is recorded as failed, never as a result; the
    other job finishes; the command exits 1; the report shows the error."""
    needle = "model.kernel_size=4 is invalid: allowed an odd integer >= 3"
    proc = run_py("-m", "+roadmap=step05_kernel7", SMALL, "model.kernel_size=3,4", "group=iso", log_dir=tmp_path)
    out = _assert_clean_failure(proc, needle, "2 job(s), 1 not finished")
    assert proc.returncode == 1
    errors = [line for line in out.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and needle in errors[0], errors
    runs = load_runs([tmp_path / "iso"])
    k3, k4 = (runs[runs["variant"].str.contains(f"model.kernel_size={k}")].iloc[0] for k in (3, 4))
    assert len(runs) == 2 and k3["status"] == "finished" and k3["acc1"] is not None
    assert k4["status"] == "failed" and needle in k4["error"] and pd.isna(k4["acc1"])
    assert not list(Path(k4["run_dir"]).rglob("*.ckpt"))
    md = Path(write_report([tmp_path / "iso"], tmp_path / "report")["md"]).read_text()
    assert "model.kernel_size=4 is invalid" in md
