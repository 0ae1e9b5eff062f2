"""python -m roadmap.export: a trained run in timm's Hugging Face Hub layout, which timm loads offline with the run's
logits and class names; a ViT baseline exports as timm's own model; what cannot be exported is one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from hydra.utils import instantiate

from roadmap import build_model
from roadmap.checkpoints import keep_after_finish
from roadmap.export import main
from roadmap.models.weights import load_weights
from roadmap.runs import BEST, BEST_WEIGHTS, CHECKPOINTS, EXPORT, SUMMARY, save_config
from roadmap.train import train

from helpers.configs import TINY, compose

RUN = ("+roadmap=step07_separate_downsampling", "model.width_mult=0.25", "trainer.precision=32-true")
X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished tiny run of step 07 (checkpoint=resume keeps best.pt)."""
    run_dir = tmp_path_factory.mktemp("trained")
    train(compose([*TINY, *RUN, f"paths.output_dir={run_dir}", f"paths.log_dir={run_dir}"]))
    return run_dir


def _class_names(*overrides: str) -> list[str]:
    datamodule = instantiate(compose([*TINY, *overrides]).data)
    datamodule.setup("validate")
    return datamodule.class_names


def _run_model(run_dir: Path, *overrides: str) -> torch.nn.Module:
    """The run's network with its best weights, as `eval_only=true` would evaluate it."""
    model = build_model(compose([*TINY, *overrides]))
    load_weights(model, run_dir / CHECKPOINTS / BEST_WEIGHTS, reset_head=False)
    return model.eval()


@pytest.mark.slow
def test_export_round_trip_gives_the_runs_logits_and_class_names(trained, capsys):
    main([str(trained)])
    out = trained / EXPORT
    assert f"wrote {out}" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    cfg = compose([*TINY, *RUN])
    assert config["architecture"] == "roadmap_step07_separate_downsampling" and config["num_classes"] == 10
    assert config["model_args"]["width_mult"] == 0.25 and config["model_args"]["kernel_size"] == 7
    assert config["label_names"] == _class_names(*RUN)
    evaluation = config["pretrained_cfg"]
    assert (evaluation["input_size"], evaluation["crop_pct"], evaluation["interpolation"]) == (
        [3, cfg.data.image_size, cfg.data.image_size], cfg.data.crop_pct, cfg.recipe.augment.interpolation)
    assert "hf_hub_id" not in evaluation and "license" not in evaluation   # not the published ConvNeXt's

    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(X), _run_model(trained, *RUN)(X), rtol=0, atol=0)
    assert list(model.pretrained_cfg["label_names"]) == _class_names(*RUN)

    card = (out / "README.md").read_text()
    summary = json.loads((trained / SUMMARY).read_text())
    assert f"top-1 {summary['acc1_best']:.2f} %, top-5 {summary['acc5_best']:.2f} %" in card
    assert "synthetic's val split" in card and summary["git_commit"] in card and "model.width_mult=0.25" in card
    assert 'timm.create_model("local-dir:' in card and "push_to_hf_hub" in card


@pytest.mark.slow
def test_a_vit_baseline_exports_as_timms_own_model(tmp_path):
    """DeiT-S scaled to a quarter width: timm's deit with the run's embed_dim and heads, loadable by timm alone. The
    run record is written by the project's own writers (config, best checkpoint pruned to best.pt)."""
    overrides = [*TINY, "+roadmap=baselines/deit_small", "model.width_mult=0.25"]
    cfg = compose([*overrides, f"paths.output_dir={tmp_path}"])
    save_config(tmp_path, cfg, overrides)
    model = build_model(cfg).eval()
    (tmp_path / CHECKPOINTS).mkdir()
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "epoch": 0,
                "global_step": 1}, tmp_path / CHECKPOINTS / BEST)
    keep_after_finish(tmp_path / CHECKPOINTS, "resume")
    main([str(tmp_path), "--out", str(tmp_path / "deit")])
    config = json.loads((tmp_path / "deit" / "config.json").read_text())
    assert config["architecture"] == "deit_small_patch16_224"
    assert (config["model_args"]["embed_dim"], config["model_args"]["num_heads"]) == (96, 2)
    loaded = timm.create_model(f"local-dir:{tmp_path / 'deit'}", pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(X), model(X), rtol=0, atol=0)
    assert "not recorded (the run did not finish)" in (tmp_path / "deit" / "README.md").read_text()


def _refusal(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    message = str(exit_.value.code)
    assert message.startswith("python -m roadmap.export: ") and "\n" not in message
    return message


@pytest.mark.slow
def test_what_cannot_be_exported_is_one_line(trained, tmp_path, capsys):
    assert "is not a run directory: it has no .hydra/config.yaml" in _refusal(capsys, str(tmp_path))
    message = _refusal(capsys, str(trained), "--weights", "last", "--out", str(tmp_path / "last"))
    assert "has no last.ckpt (it holds best.pt)" in message and not (tmp_path / "last").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert "holds something other than an export" in _refusal(capsys, str(trained), "--out", str(tmp_path / "mine"))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
