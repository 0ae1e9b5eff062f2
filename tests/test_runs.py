"""The run record (`roadmap.runs`): a directory per configuration, one writer per directory, nothing lost to
preemption or a torn checkpoint, and an exit code that comes from what the launched jobs recorded."""
from __future__ import annotations

import ast
import dataclasses
import gc
import inspect
import json
import logging
import os
import shutil
import signal
import typing
from collections.abc import Mapping
from pathlib import Path

import lightning as L
import pytest
import torch

from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

import roadmap.job
import roadmap.report
import roadmap.train
import roadmap.trainer
from roadmap import build_model
from roadmap.config import CONF_DIR, without_hydra
from roadmap.data import ImageDataModule, transforms
from roadmap.models import RoadmapNet
from roadmap import schema
from roadmap.runs import (ADDED_KEYS, BEST, BEST_WEIGHTS, CHECKPOINTS, LAST, PREVIOUS, RUN_LOG, SUMMARY, SUPERSEDED,
                          WANDB_ID, config_diff, fingerprint, flat_config, parse_run_dir, read_history, run_lock,
                          same_run)
from roadmap.schema import CLASSIC_AUGMENT, DataSchema, RoadmapNetSchema, TrainerSchema, _field_type, config_error
from roadmap.callbacks import Preemption
from roadmap.train import RunError, run_job, train

from helpers.commands import HOLD, run_py, start_held
from helpers.configs import FINISHED, REPO, TINY, compose, compose_with_hydra

SMALL = "model.width_mult=0.25"


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / SUMMARY).read_text())


def _trainers() -> int:
    """Trainers alive in this process (by type(): isinstance asks each object its __class__, and torch's
    deprecated `torch.distributed.reduce_op` warns when asked)."""
    return sum(issubclass(type(o), L.Trainer) for o in gc.get_objects())


def _step(ckpt: Path) -> int:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]


# -- one directory per configuration ---------------------------------------------------------------------------
@pytest.mark.slow
def test_another_model_gets_its_own_directory(tmp_path, caplog):
    """Each trained in this process where run.py would put it (Hydra's run directory of its overrides)."""
    caplog.set_level(logging.INFO, logger="roadmap")
    for overrides in (["+roadmap=step00_baseline", SMALL], ["+roadmap=step00_baseline", "model=convnext_tiny", SMALL]):
        train(_at_run_dir(*TINY, f"paths.log_dir={tmp_path}", *overrides))
    assert not any("already finished" in r.getMessage() for r in caplog.records)
    summaries = [json.loads(p.read_text()) for p in sorted(tmp_path.rglob(SUMMARY))]
    assert len(summaries) == 2 and {s["config"]["model.stem"] for s in summaries} == {"resnet", "patchify"}
    assert len({s["run_dir"] for s in summaries}) == 2


@pytest.mark.slow
def test_finished_run_of_another_configuration_is_refused_by_name(tiny_cfg, finished):
    """Same directory, different config (a YAML edit, or a key the directory name leaves out): one line naming
    the keys, and the finished run stays as it was. Keys that only say where or how fast (loader processes)
    do not count."""
    run = finished   # the finished run of tiny_cfg(*FINISHED)
    before = (run / SUMMARY).read_text()
    with pytest.raises(RunError) as info:
        train(tiny_cfg(*FINISHED, "recipe.lr=0.2"))
    message = str(info.value)
    assert "recipe.lr: 0.1 -> 0.2" in message and "force=true" in message and "\n" not in message
    assert (run / SUMMARY).read_text() == before
    train(tiny_cfg(*FINISHED, "data.num_workers=1"))   # the same run: skipped
    assert (run / SUMMARY).read_text() == before


@pytest.mark.slow
def test_a_run_recorded_before_a_key_existed_is_the_same_run_at_its_neutral_value(tiny_cfg, finished):
    """Upgrading roadmap adds config keys: a finished run whose record predates them is still skipped when the
    new keys are at the values that train what it trained (`ADDED_KEYS`), and refused when they are not."""
    run = finished   # the finished run of tiny_cfg(*FINISHED)
    summary = _summary(run)
    old = {k: v for k, v in summary["config"].items() if k not in ADDED_KEYS}
    assert set(summary["config"]) - set(old) == {"model.pretrained", "recipe.layer_decay", "recipe.head_init_scale",
                                                 "data.top_classes"}
    (run / SUMMARY).write_text(json.dumps({**summary, "config": old, "fingerprint": fingerprint(old)}))
    before = (run / SUMMARY).read_text()
    train(tiny_cfg(*FINISHED))   # skipped: nothing retrained, nothing rewritten
    assert (run / SUMMARY).read_text() == before
    with pytest.raises(RunError, match=r"recipe\.head_init_scale: '<absent>' -> 0\.5"):
        train(tiny_cfg(*FINISHED, "recipe.head_init_scale=0.5"))
    assert not same_run({"a": 1}, {"a": 1, "data.top_classes": 3}) and same_run({"a": 1}, {"a": 1})
    assert not same_run({"a": 1, "data.top_classes": None}, {"a": 1})   # a key the new config dropped counts


# -- one writer per directory ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_directory_in_use_is_refused_in_one_line_and_left_untouched(tmp_path):
    args = ["+roadmap=step00_baseline", SMALL]
    train(_at_run_dir(*TINY, f"paths.log_dir={tmp_path}", *args))   # the run the second command finds
    (summary,) = tmp_path.rglob(SUMMARY)
    run_dir = summary.parent
    with run_lock(run_dir):   # another process (this one) is writing the run
        before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
        second = run_py(*args, "force=true", log_dir=tmp_path)
    out = second.stdout + second.stderr
    assert second.returncode != 0 and f"is in use by pid {os.getpid()}" in out and "Traceback" not in out, out
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert after == before and not (run_dir / SUPERSEDED).exists()   # not its config, log or summary; nothing moved


@pytest.mark.slow
def test_a_lock_left_by_a_killed_process_is_not_stale(tiny_cfg, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text("999999")   # its holder is gone: the kernel dropped the flock with it
    train(tiny_cfg("+roadmap=step00_baseline", SMALL))
    assert _summary(run)["status"] == "finished"


# -- preemption ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_checkpoints_now_records_interrupted_and_resumes(tiny_cfg, tmp_path):
    """SIGTERM before step `batch` of epoch 2 (of 3, 4 steps each): a checkpoint of the steps done, status
    interrupted, and the rerun completes the same 12 steps. Lightning restarts the interrupted epoch's loader,
    so the metrics are not an uninterrupted run's (README: When things go wrong)."""
    run = ["+roadmap=step00_baseline", SMALL, "trainer.max_epochs=3", "trainer.limit_train_batches=4"]
    for batch in (0, 2):
        out = tmp_path / f"preempted_at_{batch}"
        with pytest.raises(SystemExit):
            train(tiny_cfg(*run, f"paths.output_dir={out}", "+callbacks.sigterm._target_=helpers.faults.SigtermAt",
                           f"+callbacks.sigterm.batch={batch}"))
        s = _summary(out)
        assert s["status"] == "interrupted" and f"SIGTERM at epoch 2, step {4 + batch}" in s["error"], s["error"]
        assert _step(out / CHECKPOINTS / LAST) == 4 + batch
        assert [r["epoch"] for r in read_history(out)] == [1]   # the epoch it stopped in has no row yet
        train(tiny_cfg(*run, f"paths.output_dir={out}"))
        assert _summary(out)["status"] == "finished" and _summary(out)["steps"] == 12
        assert [(r["epoch"], r["step"]) for r in read_history(out)] == [(1, 4), (2, 8), (3, 12)]


@pytest.mark.slow
def test_a_finished_run_puts_the_signal_handlers_back_and_keeps_nothing_alive(tiny_cfg):
    """Preemption's handlers go once the run ends, and Lightning's with them: a handler left installed held its
    trainer, so each job of a multirun kept the last one's model and decoded images (~0.5 GB a job)."""
    before = {sig: signal.getsignal(sig) for sig in Preemption.SIGNALS}
    gc.collect()
    alive = _trainers()
    run_job(tiny_cfg("+roadmap=step00_baseline", SMALL))
    assert {sig: signal.getsignal(sig) for sig in Preemption.SIGNALS} == before
    assert _trainers() <= alive   # and run_job collected what the run left


@pytest.mark.slow
def test_sigterm_to_the_command_exits_nonzero(tmp_path):
    """SIGTERM to a run.py that runs its job in its own process (no sweep): the job checkpoints, records
    interrupted, and the command exits non-zero."""
    proc = start_held("+roadmap=step00_baseline", SMALL, "trainer.max_epochs=3", "trainer.limit_train_batches=4",
                      log_dir=tmp_path)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, out
    (summary,) = tmp_path.rglob(SUMMARY)
    assert _summary(summary.parent)["status"] == "interrupted" and "Traceback" not in out, out


@pytest.mark.slow
def test_a_signal_to_a_parallel_sweep_reaches_every_job_and_the_rerun_resumes_them(tmp_path):
    """SIGTERM to the command of a joblib sweep (as Docker sends it): each worker's job checkpoints mid-epoch,
    records interrupted and exits, the command closes with their lines and exit code 1 (from what the workers
    recorded: it never sees into them), no worker outlives it, and the same sweep resumes both (rerun in one
    process: the directories and checkpoints are the jobs', not the launcher's, and two more worker starts cost
    ~15 s of imports). Each job holds at epoch 2 until a signal comes (helpers.faults.HoldForSignal)."""
    args = ["+roadmap=step00_baseline", SMALL, "seed=0,1", "trainer.max_epochs=3", "trainer.limit_train_batches=4"]
    proc = start_held("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *args, log_dir=tmp_path, jobs=2)
    workers = [json.loads(p.read_text())["pid"] for p in (tmp_path / ".launches").glob("*/*.json")]
    assert len(workers) == 2 and os.getpid() not in workers and proc.pid not in workers, workers
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "2 job(s), 2 not finished" in out and "Traceback" not in out, out
    for pid in workers:   # gone with the command, not orphaned and training on
        assert not Path(f"/proc/{pid}").exists(), f"worker {pid} outlived the command"
    runs = sorted(p.parent for p in tmp_path.rglob(SUMMARY))
    assert [_summary(r)["status"] for r in runs] == ["interrupted", "interrupted"], out
    assert all(_step(r / CHECKPOINTS / LAST) == 5 for r in runs)   # epoch 1's 4 steps and the one held

    rerun = run_py("-m", *args, HOLD, log_dir=tmp_path, env={"PYTHONPATH": str(REPO / "tests")})
    assert rerun.returncode == 0 and (rerun.stdout + rerun.stderr).count(f"resuming from {tmp_path}") == 2, rerun.stderr
    assert [(_summary(r)["status"], _summary(r)["steps"]) for r in runs] == [("finished", 12)] * 2


# -- torn checkpoints ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_torn_last_checkpoint_falls_back_to_the_previous_one(tiny_cfg, tmp_path, caplog):
    # lr 0: val top-1 never improves, and last.ckpt must still be each epoch's
    run = ["+roadmap=step00_baseline", SMALL, "trainer.max_epochs=3", "recipe.lr=0"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny_cfg(*run, f"paths.output_dir={tmp_path / 'one_torn'}",
                       "+callbacks.crash._target_=helpers.faults.CrashAfterSecondEpoch"))
    ckpts = tmp_path / "one_torn" / CHECKPOINTS
    assert {p.name for p in ckpts.iterdir()} == {LAST, PREVIOUS, "best.ckpt"}   # no temporary left over
    assert (_step(ckpts / LAST), _step(ckpts / PREVIOUS)) == (4, 2)
    shutil.copytree(tmp_path / "one_torn", tmp_path / "both_torn")   # the same crashed run, to tear more of
    for name in ("one_torn", "both_torn"):
        last = tmp_path / name / CHECKPOINTS / LAST
        last.write_bytes(last.read_bytes()[:1000])   # a kill during the write
    train(tiny_cfg(*run, f"paths.output_dir={tmp_path / 'one_torn'}"))
    assert _summary(tmp_path / "one_torn")["status"] == "finished"
    assert any("resuming from the previous checkpoint" in r.getMessage() for r in caplog.records)

    ckpts = tmp_path / "both_torn" / CHECKPOINTS
    (ckpts / PREVIOUS).write_bytes(b"")
    with pytest.raises(RuntimeError) as info:
        train(tiny_cfg(*run, f"paths.output_dir={tmp_path / 'both_torn'}"))
    assert "cannot be read" in str(info.value) and "force=true" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.slow
def test_an_unreadable_summary_is_named_and_the_run_resumes(tiny_cfg, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="roadmap")
    run = ["+roadmap=step00_baseline", SMALL, "trainer.max_epochs=2"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny_cfg(*run, "+callbacks.crash._target_=helpers.faults.CrashAfterFirstEpoch"))
    summary = tmp_path / "run" / SUMMARY
    summary.write_text(summary.read_text()[:30])   # torn: a kill while another tool rewrote it
    train(tiny_cfg(*run))
    warning = next(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert warning.startswith(f"{summary} cannot be read (JSONDecodeError") and "counts as unfinished" in warning
    assert any(r.getMessage().startswith("resuming from") for r in caplog.records)
    assert _summary(tmp_path / "run")["status"] == "finished" and _summary(tmp_path / "run")["steps"] == 4


# -- what a run keeps -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_checkpoint_policy_keeps_what_it_says_and_records_it(tiny_cfg, tmp_path):
    for policy, kept in (("resume", [BEST_WEIGHTS]), ("best", [BEST]), ("none", [])):
        cfg = tiny_cfg("+roadmap=step00_baseline", SMALL, f"checkpoint={policy}",
                       f"paths.output_dir={tmp_path / policy}")
        train(cfg)
        s = _summary(tmp_path / policy)
        files = sorted((tmp_path / policy / CHECKPOINTS).glob("*")) if kept else []
        assert [p.name for p in files] == kept and s["checkpoint"] == policy
        assert s["checkpoint_kept"] == [f"{CHECKPOINTS}/{name}" for name in kept]
        assert s["checkpoint_bytes"] == sum(p.stat().st_size for p in files)
        if policy == "resume":   # the best epoch's weights, without optimizer state, load into the bare model
            weights = torch.load(files[0], map_location="cpu", weights_only=True)
            build_model(cfg).load_state_dict(weights["state_dict"])
            assert "optimizer_states" not in weights
    with pytest.raises(RunError, match=r"checkpoint='all' is invalid: allowed resume \| best \| none"):
        train(tiny_cfg("+roadmap=step00_baseline", SMALL, "checkpoint=all", f"paths.output_dir={tmp_path / 'x'}"))


# -- config that does what it says -----------------------------------------------------------------------------
@pytest.mark.slow
def test_recipe_drop_path_under_a_model_with_its_own_is_refused(tiny_cfg):
    with pytest.raises(RunError, match=r"recipe.drop_path_rate=0.2 has no effect: .*model.drop_path_rate=0.4"):
        train(tiny_cfg("model=convnext_small", "recipe=modern", "recipe.drop_path_rate=0.2"))


@pytest.mark.parametrize("override,line", [
    ("recipe.lr=fast", "recipe.lr: Value 'fast' of type 'str' could not be converted to Float"),
    ("trainer.max_epochs=many", "trainer.max_epochs: Value 'many' of type 'str' could not be converted to Integer"),
    ("model.kernel_sise=7", "model.kernel_sise is not a key of model; allowed: depths, widths, stem_width,"),
    ("data.batch_size=1.5", "data.batch_size: Value '1.5' of type 'float' could not be converted to Integer"),
    ("recipe.augment.re_mode=[1]", "recipe.augment.re_mode: Cannot convert 'list' to string: '[1]'"),
])
def test_schema_errors_name_the_full_key(override, line):
    with pytest.raises(HydraException) as info:
        compose([override])
    assert "\n" not in config_error(info.value) and config_error(info.value).startswith(line)


@pytest.mark.parametrize("schema,builder", [(RoadmapNetSchema, RoadmapNet), (DataSchema, ImageDataModule)])
def test_schemas_read_from_source_are_the_builders_signatures(schema, builder):
    """The schemas are read from the builders' source (composing then needs no torch): the same keys, types and
    defaults as the imported constructors' signatures."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(builder.__init__)
    params = inspect.signature(builder).parameters.values()
    assert set(fields) - {"_target_", "pretrained"} == {p.name for p in params}
    for p in params:
        f = fields[p.name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        expected = list(p.default) if isinstance(p.default, tuple) else p.default
        assert default == expected or (p.name == "num_classes" and builder is ImageDataModule), p.name   # required
        assert f.type == _field_type(hints.get(p.name, typing.Any)), p.name
    assert CLASSIC_AUGMENT == transforms.CLASSIC_AUGMENT


def _run_dirs(*overrides: str) -> tuple[Path, Path]:
    """The directory Hydra gives a job of these overrides, run alone and as a sweep's job."""
    cfg = compose_with_hydra(overrides)
    return Path(cfg.hydra.run.dir), Path(cfg.hydra.sweep.dir) / cfg.hydra.sweep.subdir


def _at_run_dir(*overrides: str) -> DictConfig:
    """The config of `python run.py OVERRIDES`, in the run directory Hydra gives it there (quoted: the directory's
    name holds the '=' and ',' of its overrides)."""
    return compose([*overrides, f"paths.output_dir='{_run_dirs(*overrides)[0]}'"])


@pytest.mark.slow
def test_two_budgets_never_share_a_run_directory():
    default, _ = _run_dirs()
    smoke, smoke_swept = _run_dirs("+budget=smoke")
    assert default.relative_to(default.parents[3]) == Path("adhoc/synthetic/resnet50/seed0")   # as it always was
    assert smoke.relative_to(smoke.parents[4]) == Path("adhoc/budget=smoke/synthetic/resnet50/seed0") == \
        smoke_swept.relative_to(smoke_swept.parents[4])
    # two budgets of one study on the same data, step and seed
    study = ("+experiment=trajectory", "+roadmap=step05_kernel7", "data=imagenette", "model.kernel_size=9")
    replay, proxy = (_run_dirs(*study, f"+budget={b}")[0] for b in ("cpu_replay", "cpu_proxy"))
    assert replay != proxy and replay.parent.parent.parent.parent == proxy.parent.parent.parent.parent
    assert parse_run_dir(replay) == {"name": "step05_kernel7", "variant": "model.kernel_size=9", "seed": 0,
                                     "data": "imagenette", "budget": "cpu_replay", "group": "trajectory"}
    assert parse_run_dir(default) == {"name": "resnet50", "variant": "", "seed": 0, "data": "synthetic",
                                      "budget": None, "group": "adhoc"}


def test_train_and_report_leave_the_record_to_runs():
    """No file name of the run record is spelled out in the modules that write and read it."""
    for module in (roadmap.train, roadmap.job, roadmap.trainer, roadmap.report):
        source = inspect.getsource(module)
        names = (SUMMARY, CHECKPOINTS, LAST, PREVIOUS, BEST, BEST_WEIGHTS, SUPERSEDED, WANDB_ID, RUN_LOG, ".hydra")
        for name in names:
            assert f'"{name}' not in source, (module.__name__, name)



def test_the_house_reads_top_down():
    """No function of roadmap/ runs over 60 lines, and no module imports a command-line one (a module with a
    `__main__` block: report, bench, dashboard, export): dependencies point down."""
    sources = {p: p.read_text() for p in (REPO / "roadmap").rglob("*.py")}
    commands = {f"roadmap.{p.stem}" for p, text in sources.items() if '__name__ == "__main__"' in text}
    assert {"roadmap.report", "roadmap.bench", "roadmap.dashboard"} <= commands
    for path, text in sources.items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno < 60, (path.name, node.name)
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
                     if isinstance(node, ast.ImportFrom) and node.module else [])
            assert not commands & set(names), (path.name, names)


# -- each key's kind, declared once (roadmap.schema) -----------------------------------------------------------
def _job(*overrides: str) -> tuple[str, dict]:
    """A job's directory below its study (Hydra's sweep subdir) and its flat config, what the fingerprint hashes."""
    cfg = compose_with_hydra(overrides)
    subdir = cfg.hydra.sweep.subdir
    return subdir, flat_config(without_hydra(cfg))


def _changed(value):
    """Another value of a key's type: what a user might set it to."""
    return (not value if isinstance(value, bool) else value + 1 if isinstance(value, int)
            else 2 if value in ("auto", None) else f"'{value}x'")


@pytest.mark.slow
def test_a_key_of_a_runtime_kind_leaves_the_directory_and_the_fingerprint():
    """Every runtime key of the typed groups (schema metadata), set to another value, is the same run: same
    directory, same flat config. A budget key and a design key each make another run, in another directory."""
    base = ("+roadmap=step05_kernel7", SMALL)
    directory, flat = _job(*base)
    schemas = {"data": DataSchema, "trainer": TrainerSchema}
    runtime = [(group, f) for group, s in schemas.items() for f in dataclasses.fields(s)
               if f.metadata.get("kind") == schema.RUNTIME]
    assert {f"{g}.{f.name}" for g, f in runtime} >= {"data.pin_memory", "data.worker_nice", "trainer.compile",
                                                      "trainer.log_every_n_steps", "trainer.channels_last"}
    defaults = compose(list(base))
    for group, f in runtime:
        override = f"{group}.{f.name}={_changed(defaults[group][f.name])}".replace("None", "null")
        assert _job(*base, override) == (directory, flat), override
    for override in ("logger=csv", "paths.cache_dir=/elsewhere", "checkpoint=best", "hydra/launcher=joblib"):
        assert _job(*base, override) == (directory, flat), override
    for override in ("trainer.max_epochs=3", "model.kernel_size=9", "recipe.lr=0.2"):
        other_dir, other_flat = _job(*base, override)
        assert other_dir != directory and override in other_dir and other_flat != flat, override


def test_every_key_has_one_kind():
    """Each field of every schema, each top-level key of conf/config.yaml and each of its config groups."""
    for s in schema.SCHEMAS.values():
        for f in dataclasses.fields(s):
            assert f.metadata.get("kind", s.KIND) in schema.KINDS, (s.__name__, f.name)
    top = OmegaConf.load(CONF_DIR / "config.yaml")
    groups = [(next(iter(d)).partition(" ")[2] or next(iter(d))).split("/")[0] for d in top.defaults
              if isinstance(d, Mapping)]
    for key in [*(k for k in top if k != "defaults"), *groups]:
        assert key in schema.TOP_LEVEL_KINDS or any(g == key for g, _ in schema.SCHEMAS), key
    assert schema.kind("+model.new_flag") == schema.DESIGN and schema.kind("data.image_size") == schema.BUDGET
    assert schema.kind("model.width_mult") == schema.BUDGET and schema.kind("hydra/launcher") == schema.RUNTIME


COMMITTED = sorted(p.parent for p in (REPO / "results").glob("*/runs/**/" + SUMMARY))


@pytest.mark.slow
def test_committed_runs_keep_their_directory_and_their_fingerprint():
    """Each row of a committed study, composed again from its first run's recorded overrides, lands in the
    directory that run was exported from and trains what it recorded (`same_run`): its rerun is skipped, never
    retrained or refused. One run a row: the seed is a key and a path part like any other."""
    rows: dict[tuple, list[Path]] = {}
    for run in COMMITTED:
        overrides = OmegaConf.to_container(OmegaConf.load(run / ".hydra" / "overrides.yaml"))
        rows.setdefault(tuple(o for o in overrides if not o.startswith("seed=")), []).append(run)
    compared = 0
    for runs in rows.values():
        run, recorded = runs[0], _summary(runs[0])
        subdir, flat = _job(*OmegaConf.to_container(OmegaConf.load(run / ".hydra" / "overrides.yaml")))
        exported = run.relative_to(next(p for p in run.parents if p.name == "runs"))
        # runs exported before run paths named their budget lack its folder
        assert exported in (Path(subdir), Path(subdir.partition("budget=")[2].partition("/")[2] or subdir)), run
        if "config" in recorded:   # recorded before runs kept their config: nothing to compare
            assert same_run(recorded["config"], flat), (run, config_diff(recorded["config"], flat))
            compared += 1
    assert len(COMMITTED) >= 60 and len(rows) >= 15 and compared >= 12
