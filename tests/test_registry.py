"""Every roadmap step is a timm model (roadmap.registry): `timm.create_model` builds what `+roadmap=<step>` builds,
each has a pretrained config, and `pretrained=True` loads the published weights through the converters, or fails in
one line."""
from __future__ import annotations

import subprocess
import sys

import huggingface_hub
import pytest
import timm
import torch
import torchvision
from hydra.core.hydra_config import HydraConfig

from roadmap import build_model, compose, registry
from roadmap.models import RoadmapNet
from roadmap.models.weights import WeightsError, _architecture

from helpers.configs import STEPS

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_every_step_is_registered():
    assert timm.list_models("roadmap_*") == sorted(f"roadmap_{step}" for step in STEPS)
    assert any(step[6:7].isalpha() for step in STEPS)   # the lettered sub-steps (step02a, ...) among them
    assert timm.list_pretrained("roadmap_*") == [registry.cfg_name(step) for step in sorted(registry.PUBLISHED)]


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS)
def test_create_model_is_the_builder(step):
    """`create_model(name, num_classes=10, width_mult=0.25, drop_path_rate=0.1)`: the same seed gives the same tensors
    in the same order (construction is the builder's), and the logits agree with the weights shared."""
    torch.manual_seed(0)
    ours = timm.create_model(f"roadmap_{step}", num_classes=10, width_mult=0.25, drop_path_rate=0.1)
    torch.manual_seed(0)
    built = build_model(compose([f"+roadmap={step}", "data.num_classes=10", "model.width_mult=0.25",
                                 "model.drop_path_rate=0.1"]))
    assert type(ours) is RoadmapNet
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in built.parameters())
    assert list(ours.state_dict()) == list(built.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), built.state_dict().values()))
    built.load_state_dict(ours.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(X), built.eval()(X), rtol=0, atol=0)


def test_defaults_are_the_steps_at_imagenet_size():
    torch.manual_seed(0)
    ours = timm.create_model("roadmap_step07_separate_downsampling")
    assert sum(p.numel() for p in ours.parameters()) == 28_589_128 and ours.num_classes == 1000   # ConvNeXt-T
    assert ours.stages[1][1].drop_path.drop_prob > 0   # the step's stochastic depth (recipe.drop_path_rate)


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS)
def test_pretrained_cfg_is_how_the_step_evaluates(step):
    """Without published weights: ImageNet at the data config's size and crop, the step's recipe's interpolation
    (read without composing: checked against Hydra's composition here); with them, those weights' own evaluation
    (timm's config of them), and they are what `model.pretrained=true` finds for the step's architecture."""
    composed = compose([f"+roadmap={step}", "data=imagenet"])
    cfg = timm.get_pretrained_cfg(f"roadmap_{step}").to_dict()
    assert registry.recipe_of(step) == composed.recipe.name and cfg["description"] == composed.roadmap.name
    with torch.device("meta"):
        model = build_model(composed)
    keys = model.state_dict()
    assert f"{cfg['first_conv']}.weight" in keys and f"{cfg['classifier']}.weight" in keys
    if step in registry.PUBLISHED:
        reference = timm.get_pretrained_cfg(registry.PUBLISHED[step][1]).to_dict()
        shown = ("input_size", "interpolation", "crop_pct", "mean", "std", "num_classes")
        assert {k: cfg[k] for k in shown} == {k: reference[k] for k in shown}
        assert cfg["tag"] == registry.PUBLISHED[step][1].split(".")[1] and cfg["hf_hub_id"] == reference["hf_hub_id"]
        assert _architecture(model) == registry.PUBLISHED[step][0]
    else:
        assert cfg["input_size"] == (3, composed.data.image_size, composed.data.image_size)
        assert (cfg["interpolation"], cfg["crop_pct"], cfg["num_classes"]) == (
            composed.recipe.augment.interpolation, composed.data.crop_pct, composed.data.num_classes)
        assert "url" not in cfg and "hf_hub_id" not in cfg
        with pytest.raises(WeightsError, match="no published weights have this architecture"):
            _architecture(model)


@pytest.fixture
def torchvision_cache(tmp_path, monkeypatch) -> torchvision.models.ResNet:
    """torch's hub cache holding torchvision's ResNet-50 file (random weights, norms' statistics drawn), as a
    download would leave it: `pretrained=True` then reads it offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(1)
    ref = torchvision.models.resnet50().eval()
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    url = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url
    path = tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    path.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), path)
    return ref


@pytest.mark.slow
def test_pretrained_true_loads_the_published_weights(torchvision_cache):
    """torchvision's ResNet-50 through the parity tests' converter into step 01 (its layer scales at 1): the same
    logits."""
    ours = timm.create_model("roadmap_step01_modern_training", pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(X), torchvision_cache(X), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_pretrained_true_adapts_as_timm_does(torchvision_cache):
    """Another class count and input channels: a fresh classifier, the stem summed over the colours; no classifier:
    the pooled features; and a `features_only` backbone with the published weights."""
    adapted = timm.create_model("roadmap_step00_baseline", pretrained=True, num_classes=7, in_chans=1).eval()
    headless = timm.create_model("roadmap_step00_baseline", pretrained=True, num_classes=0).eval()
    features = timm.create_model("roadmap_step00_baseline", pretrained=True, features_only=True, out_indices=(3,))
    body = torch.nn.Sequential(*list(torchvision_cache.children())[:-2])
    with torch.no_grad():
        assert adapted(X[:, :1]).shape == (2, 7)
        torch.testing.assert_close(adapted.stem.conv.weight, torchvision_cache.conv1.weight.sum(1, keepdim=True))
        torch.testing.assert_close(headless(X), body(X).mean((2, 3)), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(features.eval()(X)[0], body(X), rtol=1e-4, atol=1e-4)


def test_published_weights_of_another_width_are_one_line(torchvision_cache):
    with pytest.raises(WeightsError) as err:
        timm.create_model("roadmap_step00_baseline", pretrained=True, width_mult=0.5)
    assert "the pretrained weights do not fit this model" in str(err.value) and "width_mult=1" in str(err.value)
    assert "\n" not in str(err.value)


def test_offline_published_weights_are_the_existing_one_line(tmp_path, monkeypatch):
    """Not cached and no network: `weights.fetch`'s own line, naming the file to fetch."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(WeightsError) as err:
        timm.create_model("roadmap_step07_separate_downsampling", pretrained=True)
    assert "\n" not in str(err.value)
    assert "timm:convnext_tiny.fb_in1k is not cached and cannot be downloaded" in str(err.value)
    assert "https://huggingface.co/timm/convnext_tiny.fb_in1k" in str(err.value)


def test_a_step_without_published_weights_is_one_line():
    with pytest.raises(WeightsError) as err:
        timm.create_model("roadmap_step03_resnextify", pretrained=True)
    assert "has no published weights" in str(err.value) and "roadmap_step08_grn.fcmae_ft_in1k" in str(err.value)
    assert "\n" not in str(err.value)


def test_composing_a_step_keeps_the_callers_hydra_config():
    """A model made inside a Hydra job (or after the caller's own compose) leaves that job's Hydra config alone."""
    cfg = compose(["+roadmap=step02_macro_design"])
    before = HydraConfig.instance().cfg
    registry._composed_args.cache_clear()
    timm.create_model("roadmap_step05_kernel7", width_mult=0.25)
    assert HydraConfig.instance().cfg is before and cfg.name == "step02_macro_design"


@pytest.mark.slow
def test_import_roadmap_loads_no_torch_and_registers_when_timm_loads():
    """`import roadmap` stays light (run.py --help); the steps are timm models as soon as timm is imported."""
    code = ("import sys, roadmap; light = 'torch' not in sys.modules; import timm; "
            "print(light, len(timm.list_models('roadmap_*')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["True", str(len(STEPS))]
