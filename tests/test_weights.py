"""model.pretrained: reference weights from a local file give the reference's logits, a head of another class
count is re-initialised, our own checkpoints load, and unreachable published weights are one line."""
from __future__ import annotations

import hashlib
import json

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from roadmap import build_model, compose
from roadmap.models.weights import WeightsError, load_pretrained, load_weights

from helpers.commands import run_py

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _randomise_norm_stats(model: torch.nn.Module) -> torch.nn.Module:
    """BatchNorm's running stats start at 0/1, which would hide a mis-mapped norm; draw them instead."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


def _ours(*overrides: str) -> torch.nn.Module:
    return build_model(compose(["data.num_classes=1000", "data.image_size=64", *overrides]))


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("step", ["model=resnet50", "+roadmap=step01_modern_training"])
def test_torchvision_file_gives_its_logits(tmp_path, step):
    """Step 01 adds layer scale, which torchvision's weights lack: it loads as 1, so the function is the same."""
    torch.manual_seed(0)
    ref = _randomise_norm_stats(torchvision.models.resnet50()).eval()
    path = tmp_path / "resnet50.pth"
    torch.save(ref.state_dict(), path)
    ours = _ours(step)
    info = load_pretrained(ours, str(path))
    assert info == {"name": "resnet50.pth", "path": str(path.resolve()), "sha256": _sha(path), "head_reset": False}
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(X), ref(X), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name,overrides", [("convnext_tiny", ["model=convnext_tiny"]),
                                            ("convnextv2_tiny", ["+roadmap=step08_grn"])])
def test_timm_convnext_safetensors_gives_its_logits(tmp_path, name, overrides):
    torch.manual_seed(0)
    ref = timm.create_model(name).eval()
    with torch.no_grad():   # GRN starts at zero, an identity that would hide a mis-mapped GRN
        for p in ref.parameters():
            if p.ndim == 1:
                p.normal_(0, 0.1)
    path = tmp_path / f"{name}.safetensors"
    save_file(ref.state_dict(), str(path))
    ours = _ours(*overrides)
    load_pretrained(ours, str(path))
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(X), ref(X), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("model,timm_name,image_size", [("deit_small", "deit_small_patch16_224", 224),
                                                        ("mobilenetv2_100", "mobilenetv2_100", 64)])
def test_timm_model_file_gives_its_logits(tmp_path, model, timm_name, image_size):
    torch.manual_seed(0)
    ref = _randomise_norm_stats(timm.create_model(timm_name)).eval()
    path = tmp_path / "weights.pth"
    torch.save({"model": ref.state_dict()}, path)   # timm's and the ConvNeXt code's checkpoint form
    ours = build_model(compose([f"model={model}", "data.num_classes=1000", f"data.image_size={image_size}"]))
    load_pretrained(ours, str(path))
    x = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), ref(x), rtol=1e-4, atol=1e-4)


def test_mobilenetv2_is_the_dog_reports_baseline():
    ours = build_model(compose(["model=mobilenetv2_100", "data.num_classes=1000"]))
    assert sum(p.numel() for p in ours.parameters()) == 3_504_872


@pytest.mark.slow
def test_head_is_reset_for_another_class_count(tmp_path):
    torch.manual_seed(0)
    ref = _randomise_norm_stats(torchvision.models.resnet50()).eval()
    path = tmp_path / "resnet50.pth"
    torch.save(ref.state_dict(), path)
    ours = build_model(compose(["model=resnet50", "data.num_classes=20", "data.image_size=64"])).eval()
    info = load_weights(ours, path, head_init_scale=1e-3)
    assert info["head_reset"] is True and ours.fc.weight.shape == (20, 2048)
    # torch's Linear init is U(-1/sqrt(in), 1/sqrt(in)); the fine-tuning recipe scales a new head by 0.001
    assert 0 < ours.fc.weight.abs().max() <= 1e-3 / 2048 ** 0.5
    with torch.no_grad():   # everything below the head is the source's
        features = ours.forward_head(ours.forward_features(X), pre_logits=True)
        torch.testing.assert_close(features, torch.nn.Sequential(*list(ref.children())[:-1])(X).flatten(1),
                                   rtol=1e-4, atol=1e-4)
    with pytest.raises(WeightsError, match=r"classifier for 1000 classes, the model 20: set data.num_classes"):
        load_weights(ours, path, reset_head=False, field="ckpt_path")


@pytest.mark.slow
def test_our_checkpoint_loads_and_a_wrong_width_is_one_line(tmp_path):
    """A Lightning checkpoint of the Classifier (keys model.*) loads into the bare model; another width cannot."""
    source = _ours("+roadmap=step07_separate_downsampling", "model.width_mult=0.25")
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in source.state_dict().items()} | {"best_acc1": torch.ones(())},
                "epoch": 3}, path)
    ours = _ours("+roadmap=step07_separate_downsampling", "model.width_mult=0.25")
    load_pretrained(ours, str(path))
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in ours.state_dict().items())
    wide = _ours("+roadmap=step07_separate_downsampling", "model.width_mult=0.5")
    with pytest.raises(WeightsError) as err:
        load_pretrained(wide, str(path))
    assert "\n" not in str(err.value) and "does not fit this model" in str(err.value)
    assert "shapes differ (e.g. " in str(err.value)


def test_published_weights_are_refused_for_unpublished_architectures():
    with pytest.raises(WeightsError, match="no published weights have this architecture"):
        load_pretrained(_ours("+roadmap=step03_resnextify"), True)


@pytest.mark.slow
def test_unreachable_published_weights_are_one_line(tmp_path):
    """No network (a proxy that refuses) and empty caches: each run fails in one line saying what to fetch, for
    torchvision's weights and for the Hub's in offline mode (HF_HUB_OFFLINE=1: huggingface_hub would retry the
    refused connection for 23 s of backoff first, and end in the same line). Both in one command, a job each."""
    closed = "http://127.0.0.1:9"
    env = {"TORCH_HOME": str(tmp_path / "torch"), "HF_HOME": str(tmp_path / "hf"), "HTTPS_PROXY": closed,
           "https_proxy": closed, "HTTP_PROXY": closed, "http_proxy": closed, "HF_HUB_OFFLINE": "1"}
    result = run_py("-m", "model=resnet50,deit_small", "model.pretrained=true", "data.image_size=32", "group=offline",
                    log_dir=tmp_path, env=env)
    out = result.stdout + result.stderr
    assert result.returncode == 1 and "2 job(s), 2 not finished" in out, out
    errors = [line for line in out.splitlines()   # the jobs' own lines, not the closing ones
              if "model.pretrained=true" in line and not line.startswith("  ")]
    assert len(errors) == 2, out
    for error, where in zip(errors, ("https://download.pytorch.org/models/resnet50-0676ba61.pth",
                                     "https://huggingface.co/timm/deit_small_patch16_224.fb_in1k")):
        assert "is not cached and cannot be downloaded" in error and where in error, error
        assert "pass model.pretrained=<that file>" in error
    assert "Traceback" not in out
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "offline").rglob("summary.json")]
    assert len(summaries) == 2
    assert all(s["status"] == "failed" and "model.pretrained=true" in s["error"] for s in summaries)
