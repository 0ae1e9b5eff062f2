"""train(compose([...])): steps train end to end, recipes wire the right parts, runs resume exactly."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from timm.loss import SoftTargetCrossEntropy
from timm.scheduler import CosineLRScheduler, StepLRScheduler

from hydra.utils import instantiate

from roadmap import build_model
from roadmap.models import roadmap_net
from roadmap.module import Classifier
from roadmap.runs import read_history
from roadmap import device
from roadmap.device import resolve_precision
from roadmap.train import train

from helpers.configs import FINISHED
from helpers.data import imagewoof_archive

SMALL = "model.width_mult=0.25"


def _summary(cfg) -> dict:
    return json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("step", ["step00_baseline", "step05_kernel7", "step07_separate_downsampling"])
def test_steps_train_end_to_end(tiny_cfg, step, caplog):
    cfg = tiny_cfg(f"+roadmap={step}", SMALL)
    with caplog.at_level("INFO", logger="roadmap"):
        best = train(cfg)
    s = _summary(cfg)
    assert caplog.messages[-1] == (f"{step} seed 0: finished, top-1 {s['acc1']:.2f} % (best {s['acc1_best']:.2f}); "
                                   f"results in {cfg.paths.output_dir}")
    assert s["status"] == "finished" and s["error"] is None
    assert s["step"] == step and s["name"] == step and s["paper_top1"] == cfg.roadmap.paper_top1
    assert s["recipe"] == ("classic" if step == "step00_baseline" else "modern")
    assert 0 <= s["acc1"] <= 100 and s["acc1_best"] == best
    assert s["params"] > 0 and s["gmacs"] < s["gmacs_224"] and s["train_img_per_s"] > 0
    for key in ("data", "image_size", "epochs", "seed", "wall_s", "git_commit", "acc5", "acc5_best"):
        assert key in s


def _fit_one_batch(cfg) -> Classifier:
    module = Classifier(build_model(cfg), dict(cfg.recipe), cfg.data.num_classes)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=1, limit_val_batches=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(module, datamodule=instantiate(cfg.data))
    return module


@pytest.mark.slow
def test_classic_recipe_wiring(tiny_cfg):
    module = _fit_one_batch(tiny_cfg("+roadmap=step00_baseline", SMALL))
    opt = module.trainer.optimizers[0]
    sched = module.trainer.lr_scheduler_configs[0].scheduler
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9
    assert opt.defaults["nesterov"] is False  # torchvision's recipe: classical momentum
    assert isinstance(sched, StepLRScheduler) and sched.decay_rate == 0.1
    assert opt.param_groups[0]["initial_lr"] == pytest.approx(0.1 * 16 / 256)  # lr per 256 images, batch 16
    assert module.mixup is None and isinstance(module.train_loss, torch.nn.CrossEntropyLoss)
    assert module.train_loss.label_smoothing == 0.0
    _check_no_decay_on_norms_and_biases(opt, 1e-4)


@pytest.mark.slow
def test_modern_recipe_wiring(tiny_cfg):
    module = _fit_one_batch(tiny_cfg("+roadmap=step07_separate_downsampling", SMALL))
    opt = module.trainer.optimizers[0]
    sched = module.trainer.lr_scheduler_configs[0].scheduler
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.999)
    assert isinstance(sched, CosineLRScheduler) and sched.warmup_t == round(20 / 300 * 1) == 0  # 1-step run
    assert opt.param_groups[0]["initial_lr"] == pytest.approx(4e-3 * 16 / 4096)  # lr per 4096 images
    assert isinstance(module.train_loss, SoftTargetCrossEntropy)
    assert module.mixup.mixup_alpha == 0.8 and module.mixup.cutmix_alpha == 1.0
    assert module.mixup.label_smoothing == 0.1
    assert module.ema is None  # EMA off in the roadmap runs, as in the paper
    _check_no_decay_on_norms_and_biases(opt, 0.05)


@pytest.mark.slow
@pytest.mark.parametrize("scaling, factor", [("linear", 16 / 4096), ("sqrt", (16 / 4096) ** 0.5), ("none", 1.0)])
def test_lr_scaling_rules(tiny_cfg, scaling, factor):
    module = _fit_one_batch(tiny_cfg("+roadmap=step07_separate_downsampling", SMALL, f"recipe.lr_scaling={scaling}"))
    assert module.trainer.optimizers[0].param_groups[0]["initial_lr"] == pytest.approx(4e-3 * factor)


def test_bad_lr_scaling_is_one_line(tiny_cfg):
    cfg = tiny_cfg("+roadmap=step07_separate_downsampling", SMALL, "recipe.lr_scaling=cubic")
    with pytest.raises(ValueError, match=r"^recipe.lr_scaling='cubic' is invalid: allowed linear \| sqrt \| none$"):
        Classifier(build_model(cfg), dict(cfg.recipe), cfg.data.num_classes)


@pytest.mark.parametrize("gpu, native, precision", [(False, True, "bf16-mixed"), (False, False, "32-true"),
                                                    (True, False, "bf16-mixed")])
def test_precision_auto(tiny_cfg, monkeypatch, gpu, native, precision):
    """auto: bf16 autocast wherever it is native (GPU, AVX512-BF16/AMX CPU), fp32 where it would be emulated."""
    monkeypatch.setattr(device, "native_bf16_cpu", lambda: native)
    monkeypatch.setattr(device, "gpu_requested", lambda cfg: gpu)
    assert resolve_precision(tiny_cfg("trainer.precision=auto")) == precision
    assert resolve_precision(tiny_cfg("trainer.precision=32-true")) == "32-true"


@pytest.mark.slow
def test_precision_is_recorded(tiny_cfg):
    cfg = tiny_cfg("+roadmap=step00_baseline", SMALL, "trainer.precision=bf16-mixed")
    train(cfg)
    assert _summary(cfg)["precision"] == "bf16-mixed" and _summary(cfg)["num_classes"] == 10


def _check_no_decay_on_norms_and_biases(opt, wd):
    decays = {g["weight_decay"] for g in opt.param_groups}
    assert decays == {0.0, wd}
    for g in opt.param_groups:
        assert all((p.ndim <= 1) == (g["weight_decay"] == 0.0) for p in g["params"])


@pytest.mark.slow
def test_grn_parameters_get_no_weight_decay(tiny_cfg):
    """Step 08: GRN's gamma/beta stay out of weight decay, as the ConvNeXt V2 authors advise."""
    module = _fit_one_batch(tiny_cfg("+roadmap=step08_grn", SMALL))
    opt = module.trainer.optimizers[0]
    grn = {id(p) for name, p in module.model.named_parameters() if ".grn" in name}
    no_decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert len(grn) == 2 * 18 and grn <= no_decay   # gamma and beta in each of the 18 blocks
    _check_no_decay_on_norms_and_biases(opt, 0.05)


@pytest.mark.slow
def test_finetune_recipe_decays_lr_by_layer_as_the_convnext_code_groups_them(tiny_cfg):
    """ConvNeXt-T under recipe=finetune: stem, stage 0, stage 1, stage 2 in threes of blocks (its downsampling
    with the first three), stage 3, head: 8 groups, lr x 0.7^(7 - group); no mixup or cutmix."""
    module = _fit_one_batch(tiny_cfg("model=convnext_tiny", SMALL, "recipe=finetune"))
    opt = module.trainer.optimizers[0]
    scale = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    named = dict(module.model.named_parameters())
    expected = {"stem.conv.weight": 7, "stages.0.2.branch.conv1.weight": 6, "stages.1.0.conv.weight": 5,
                "stages.2.0.conv.weight": 4, "stages.2.3.branch.conv1.weight": 4, "stages.2.4.branch.conv1.weight": 3,
                "stages.2.9.branch.conv3.weight": 2, "stages.3.1.gamma": 1, "head_norm.weight": 0, "fc.bias": 0}
    assert {k: scale[id(named[k])] for k in expected} == pytest.approx({k: 0.7 ** v for k, v in expected.items()})
    assert module.mixup is None and isinstance(module.train_loss, torch.nn.CrossEntropyLoss)
    _check_no_decay_on_norms_and_biases(opt, 1e-8)


@pytest.mark.slow
def test_a_run_measures_its_own_efficiency(tiny_cfg):
    """trainer.efficiency=true: the model alone is timed after training, in the same process."""
    cfg = tiny_cfg("+roadmap=step07_separate_downsampling", SMALL, "trainer.efficiency=true",
                   "data.batch_size=4")   # the timing steps the model on one batch of the run's: a small one
    train(cfg)
    s = _summary(cfg)
    assert s["model_img_per_s"] > 0 and s["train_img_per_s"] > 0
    assert s["job_efficiency"] == pytest.approx(s["train_img_per_s"] / s["model_img_per_s"])
    assert "trainer.efficiency" not in s["config"]   # how a run is timed is not what it trains


@pytest.mark.slow
def test_grad_checkpointing_trains_the_same_run(tiny_cfg, tmp_path, monkeypatch):
    """trainer.grad_checkpointing=true checkpoints the blocks while training; the run trains to the same numbers
    (BatchNorm statistics included) under the same fingerprint: how a run fits in memory is not what it trains."""
    calls = []
    checkpoint = roadmap_net.checkpoint
    monkeypatch.setattr(roadmap_net, "checkpoint", lambda *a, **k: calls.append(1) or checkpoint(*a, **k))
    runs = []
    for on in ("false", "true"):
        cfg = tiny_cfg("+roadmap=step00_baseline", SMALL, "trainer.precision=32-true", "checkpoint=none",
                       f"trainer.grad_checkpointing={on}", f"paths.output_dir={tmp_path / on}")
        train(cfg)
        runs.append(_summary(cfg))
        assert bool(calls) == (on == "true")
    assert runs[0]["fingerprint"] == runs[1]["fingerprint"]
    assert (runs[0]["acc1"], runs[0]["val_loss"]) == (runs[1]["acc1"], runs[1]["val_loss"])


@pytest.mark.slow
def test_schedule_is_compressed_to_the_run(tiny_cfg):
    """300-epoch recipe with 20 warmup epochs, run for 3 epochs: warmup is 1/15 of the run, then cosine."""
    cfg = tiny_cfg("+roadmap=step01_modern_training", SMALL, "trainer.max_epochs=3", "trainer.limit_train_batches=5",
                   "data.batch_size=4")   # 15 steps, however many images each
    module = Classifier(build_model(cfg), dict(cfg.recipe), cfg.data.num_classes)
    trainer = L.Trainer(accelerator="cpu", max_epochs=3, limit_train_batches=5, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(module, datamodule=instantiate(cfg.data))
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert sched.warmup_t == round(20 / 300 * 15) == 1 and sched.t_initial == 14


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 1])
def test_resume_matches_uninterrupted_run(tiny_cfg, tmp_path, workers):
    run = ["+roadmap=step07_separate_downsampling", SMALL, "trainer.max_epochs=2", f"data.num_workers={workers}"]
    straight = tiny_cfg(*run, f"paths.output_dir={tmp_path / 'straight'}")
    train(straight)
    crashed = tiny_cfg(*run, f"paths.output_dir={tmp_path / 'resumed'}",
                       "+callbacks.crash._target_=helpers.faults.CrashAfterFirstEpoch")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(crashed)
    assert _summary(crashed)["status"] == "failed"
    assert (tmp_path / "resumed" / "checkpoints" / "last.ckpt").exists()
    resumed = tiny_cfg(*run, f"paths.output_dir={tmp_path / 'resumed'}")
    train(resumed)
    a, b = _summary(straight), _summary(resumed)
    assert b["status"] == "finished"
    for key in ("acc1", "acc5", "val_loss", "acc1_best"):
        assert b[key] == pytest.approx(a[key], abs=1e-5), key
    # the learning curve too: epoch 1's row came back from the checkpoint, epoch 2's was trained after the resume
    curves = [read_history(Path(c.paths.output_dir)) for c in (straight, resumed)]
    assert [r["epoch"] for r in curves[1]] == [1, 2]
    for row_a, row_b in zip(*curves):
        assert row_b == pytest.approx(row_a, abs=1e-5)


@pytest.mark.slow
def test_history_holds_each_epochs_curve(tiny_cfg):
    cfg = tiny_cfg("+roadmap=step01_modern_training", SMALL, "trainer.max_epochs=3", "recipe.ema=true")
    train(cfg)
    rows, summary = read_history(Path(cfg.paths.output_dir)), _summary(cfg)
    assert [(r["epoch"], r["step"]) for r in rows] == [(1, 2), (2, 4), (3, 6)]   # 2 steps an epoch, no sanity row
    last = rows[-1]
    assert (last["acc1"], last["acc5"], last["val_loss"], last["acc1_ema"]) == pytest.approx(
        (summary["acc1"], summary["acc5"], summary["val_loss"], summary["acc1_ema"]))
    assert max(r["acc1"] for r in rows) == pytest.approx(summary["acc1_best"])
    assert all(r["train_loss"] > 0 for r in rows) and len({r["train_loss"] for r in rows}) == 3


@pytest.mark.slow
def test_finished_run_is_skipped_and_force_starts_over(tiny_cfg, tmp_path, finished):
    cfg = tiny_cfg(*FINISHED)   # its directory holds the finished run of this config
    first = _summary(cfg)
    train(cfg)  # skipped: nothing is retrained or rewritten
    assert _summary(cfg)["finished_at"] == first["finished_at"]
    train(tiny_cfg(*FINISHED, "force=true"))
    superseded = list((tmp_path / "run" / "superseded").glob("*/summary.json"))
    assert len(superseded) == 1 and json.loads(superseded[0].read_text()) == first


@pytest.mark.slow
def test_wandb_offline_run_records_metrics(tiny_cfg, monkeypatch, capfd):
    import wandb

    import roadmap.job
    monkeypatch.delenv("WANDB_MODE", raising=False)  # no network and no mode set: must go offline
    seen = {}
    finish = roadmap.job.finish_wandb

    def capture_then_finish():
        seen.update(mode=wandb.run.settings.mode, summary=dict(wandb.run.summary))
        finish()
    monkeypatch.setattr(roadmap.job, "finish_wandb", capture_then_finish)
    cfg = tiny_cfg("+roadmap=step00_baseline", SMALL, "logger=wandb")
    train(cfg)
    assert seen["mode"] in ("offline", "dryrun") and "val/acc1" in seen["summary"]  # wandb calls offline "dryrun"
    assert wandb.run is None  # finished: the next job gets its own run
    runs = list((Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*/*.wandb"))
    assert len(runs) == 1
    # wandb-core's service writes the transaction log after finish() returns; on a loaded machine it was seen
    # holding only its header when read at once, so wait for the record (a minute at most) before judging
    deadline = time.time() + 60
    while b"val/acc1" not in runs[0].read_bytes() and time.time() < deadline:
        time.sleep(0.2)
    assert b"val/acc1" in runs[0].read_bytes()
    assert "anonymous setting" not in capfd.readouterr().err   # Lightning's anonymous=None is not passed on


@pytest.mark.slow
@pytest.mark.data
def test_real_imagewoof_slice(tiny_cfg, data_cache):
    archive = imagewoof_archive()
    cfg = tiny_cfg("+roadmap=step05_kernel7", SMALL, "data=imagewoof", f"data.root={archive.parent}",
                   f"paths.cache_dir={data_cache}", "data.image_size=64", "data.batch_size=8",
                   "data.num_workers=0", "data.train_per_class=2", "data.val_per_class=1")
    train(cfg)
    s = _summary(cfg)
    assert s["status"] == "finished" and s["data"] == "imagewoof" and s["image_size"] == 64


_SPIN_PROBE = """
import importlib.abc, os, sys
class Probe(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch":   # what libgomp will read is known now: the rest of the import proves nothing more
            print("at torch import:", os.environ.get("GOMP_SPINCOUNT"), flush=True)
            os._exit(0)
sys.meta_path.insert(0, Probe())
sys.argv = ["x"]
import {module}
"""


@pytest.mark.slow
@pytest.mark.parametrize("module", ["run, roadmap.train", "roadmap.bench"])   # run.py loads torch with its job
@pytest.mark.parametrize("env, expected", [(None, "10000"), ("500", "500")])
def test_torch_loads_libgomp_with_a_short_spin(module, env, expected):
    """libgomp reads GOMP_SPINCOUNT once, when torch loads it: the entry points set the default before that, and
    a value the user sets is kept."""
    environ = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    if env is not None:
        environ["GOMP_SPINCOUNT"] = env
    out = subprocess.run([sys.executable, "-c", _SPIN_PROBE.format(module=module)], env=environ,
                         cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=120)
    assert f"at torch import: {expected}\n" in out.stdout, out.stderr[-2000:]


def test_cpu_threads_split_cores_among_processes(tiny_cfg):
    from roadmap.data import usable_cores
    from roadmap.device import set_cpu_threads
    before = torch.get_num_threads()
    try:
        set_cpu_threads(tiny_cfg("data.num_workers=1"))
        assert torch.get_num_threads() == usable_cores()
        set_cpu_threads(tiny_cfg("trainer.devices=2"))
        assert torch.get_num_threads() == max(1, usable_cores() // 2)
        set_cpu_threads(tiny_cfg("trainer.cpu_threads=1"))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
