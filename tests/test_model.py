"""The builder is exactly the paper's network at every row of Table 10 (issue: model and config tree)."""
from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from omegaconf import OmegaConf

from roadmap import build_model, profile
from roadmap.models import RoadmapNet, from_timm_convnext, from_torchvision_resnet
from roadmap.config import CONF_DIR
from roadmap.paper import convnextv2, roadmap_baselines, table10

from helpers.configs import STEPS, compose


def _model(*overrides: str, num_classes: int = 1000) -> torch.nn.Module:
    return build_model(compose([*overrides, f"data.num_classes={num_classes}"]))


def _structure(*overrides: str) -> torch.nn.Module:
    """The network on the meta device: its layers and shapes, no weights drawn. GMACs and parameter counts depend
    on nothing else; a parity test then loads every tensor from its reference (`to_empty`, a strict load)."""
    with torch.device("meta"):
        return _model(*overrides)


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS)
def test_step_composes_builds_and_trains(step):
    """Every layer of the step at a quarter of its channels (the budgets' width): drawing 25M initial weights per
    step is not what this proves; the full-width network's shapes are test_gmacs_match_table10's."""
    cfg = compose([f"+roadmap={step}", "data.num_classes=7", "model.width_mult=0.25"])
    assert cfg.roadmap.step == step and cfg.name == step
    model = build_model(cfg)
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert out.shape == (2, 7)
    out.logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def _paper_rows():
    """(row, overrides, GMACs) for every Table 10 row; kernel 5/9/11 are overrides of step05_kernel7."""
    for row in table10().itertuples():
        if row.step in STEPS:
            yield row.step, [f"+roadmap={row.step}"], row.gmacs
        else:  # step05_kernelK
            k = int(row.step.removeprefix("step05_kernel"))
            yield row.step, ["+roadmap=step05_kernel7", f"model.kernel_size={k}"], row.gmacs


@pytest.mark.slow
@pytest.mark.parametrize("row,overrides,gmacs", list(_paper_rows()), ids=lambda v: v if isinstance(v, str) else "")
def test_gmacs_match_table10(row, overrides, gmacs):
    measured = profile(_structure(*overrides), image_size=224)["gmacs"]
    assert measured == pytest.approx(gmacs, abs=0.05), f"{row}: {measured:.3f} GMACs vs paper {gmacs}"


@pytest.mark.slow
def test_step_configs_take_name_and_paper_numbers_from_table10():
    """A step's file names its row and nothing else of it; its name and published numbers are composed from the row."""
    paper = table10().set_index("step")
    for step in paper.index.intersection(STEPS):
        cfg = compose([f"+roadmap={step}"])
        row = paper.loc[step]
        assert (cfg.roadmap.name, cfg.roadmap.paper_top1, cfg.roadmap.paper_gmacs) == (row["name"], row["top1"],
                                                                                       row["gmacs"]), step
        assert list(OmegaConf.load(CONF_DIR / "roadmap" / f"{step}.yaml").roadmap) == ["step"], step


@pytest.mark.slow
def test_recipe_flips_at_step01():
    assert compose(["+roadmap=step00_baseline"]).recipe.name == "classic"
    for step in STEPS[1:]:
        assert compose([f"+roadmap={step}"]).recipe.name == "modern", step


@pytest.mark.slow
def test_step00_is_torchvision_resnet50():
    torch.manual_seed(0)
    ours = _structure("+roadmap=step00_baseline").to_empty(device="cpu").eval()
    ref = torchvision.models.resnet50().eval()
    assert profile(ours)["params"] == 25_557_032 == sum(p.numel() for p in ref.parameters())
    from_torchvision_resnet(ours, ref)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max() <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("overrides,timm_name,params", [
    (["+roadmap=step07_separate_downsampling"], "convnext_tiny", 28_589_128),
    (["model=convnext_tiny"], "convnext_tiny", 28_589_128),
    (["model=convnext_small"], "convnext_small", None),
    (["model=convnext_base"], "convnext_base", None),
    (["model=convnextv2_base"], "convnextv2_base", None),
])
def test_convnext_matches_timm(overrides, timm_name, params):
    torch.manual_seed(0)
    ours = _structure(*overrides).to_empty(device="cpu").eval()
    ref = timm.create_model(timm_name).eval()
    n = sum(p.numel() for p in ours.parameters())
    assert n == sum(p.numel() for p in ref.parameters())
    if params is not None:
        assert n == params
    from_timm_convnext(ours, ref)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max() <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [["+roadmap=step08_grn"], ["model=convnextv2_tiny"]])
def test_step08_is_timms_convnextv2_tiny(overrides):
    """Step 08 = ConvNeXt V2-T: GRN on the 4x hidden features, no layer scale; same parameters, same logits."""
    torch.manual_seed(0)
    ours = _structure(*overrides).to_empty(device="cpu").eval()
    ref = timm.create_model("convnextv2_tiny").eval()
    for name, p in ref.named_parameters():   # timm zero-inits GRN (an identity): give it weights to carry
        if ".grn." in name:
            torch.nn.init.normal_(p, std=0.5)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters()) == 28_635_496
    from_timm_convnext(ours, ref)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max() <= 1e-4
    v2 = convnextv2().set_index("step").loc["step08_grn"]
    assert profile(ours, image_size=224)["gmacs"] == pytest.approx(v2["gmacs"], abs=0.05)
    if overrides[0].startswith("+roadmap="):   # its GMACs are V2-T's row; V2-T's top-1 is FCMAE pre-trained
        paper = compose(overrides).roadmap
        assert (paper.paper_gmacs, paper.paper_top1) == (v2["gmacs"], None)


@pytest.mark.parametrize("kwargs,field,allowed", [
    ({"grn": True}, "grn", "block='inverted'"),
    ({"kernel_size": 4}, "kernel_size", "odd integer"),
    ({"kernel_size": -3}, "kernel_size", "odd integer"),
    ({"stem": "conv"}, "stem", "'resnet' | 'patchify'"),
    ({"dw_position": "top"}, "dw_position", "block='inverted'"),
    ({"activations": "single"}, "activations", "block='inverted'"),
    ({"norm": "groupnorm"}, "norm", "'batchnorm' | 'layernorm'"),
    ({"downsample": "pool"}, "downsample", "'in_block' | 'separate'"),
    ({"depths": [3, 4]}, "depths", "one entry per stage"),
    ({"drop_path_rate": 1.5}, "drop_path_rate", "[0, 1)"),
])
def test_bad_model_flags_raise_clear_error(kwargs, field, allowed):
    with pytest.raises(ValueError) as err:
        RoadmapNet(**kwargs)
    msg = str(err.value)
    assert f"model.{field}=" in msg and allowed in msg and "\n" not in msg


def test_bad_flag_through_config():
    with pytest.raises(ValueError, match=r"model\.kernel_size=8"):
        _model("+roadmap=step05_kernel7", "model.kernel_size=8")


@pytest.mark.slow
def test_width_mult_scales_widths():
    small = _structure("+roadmap=step07_separate_downsampling", "model.width_mult=0.25")
    assert small.num_features == 192
    assert profile(small)["gmacs"] < 0.1 * profile(_structure("+roadmap=step07_separate_downsampling"))["gmacs"]


@pytest.mark.slow
@pytest.mark.parametrize("name, timm_name", list(roadmap_baselines().items()))
def test_vit_baselines_at_full_width_are_timms(name, timm_name):
    with torch.device("meta"):   # parameter counts: the layers' shapes, no weights drawn
        ours = build_model(compose([f"model={name}", "data.image_size=224", "data.num_classes=1000"]))
        ref = timm.create_model(timm_name)
    assert profile(ours)["params"] == profile(ref)["params"]


@pytest.mark.slow
@pytest.mark.parametrize("baseline", list(roadmap_baselines()))
def test_vit_baselines_match_step07_gmacs_at_the_cpu_replay_budget(baseline):
    """The paper compares models of equal FLOPs: width_mult scales the ViTs' GMACs as it scales ConvNeXt-T's."""
    def gmacs(step: str) -> float:
        cfg = compose(["+experiment=trajectory", "+budget=cpu_replay", f"+roadmap={step}"])
        assert cfg.model.width_mult == 0.25
        return profile(build_model(cfg), cfg.data.image_size)["gmacs"]
    assert gmacs(f"baselines/{baseline}") == pytest.approx(gmacs("step07_separate_downsampling"), rel=0.15)


@pytest.mark.slow
def test_vit_width_mult_scales_heads_with_width():
    deit = build_model(compose(["model=deit_small", "model.width_mult=0.25", "data.image_size=64"]))
    assert (deit.embed_dim, deit.blocks[0].attn.num_heads) == (96, 2)   # 384 / 6 heads -> 96 / 2 heads
    swin = build_model(compose(["model=swin_tiny", "model.width_mult=0.25", "data.image_size=64"]))
    assert [layer.blocks[0].attn.num_heads for layer in swin.layers] == [1, 2, 3, 6]
    with pytest.raises(ValueError, match=r"^model.width_mult=0(\.0)? is invalid: allowed a number > 0$"):
        build_model(compose(["model=deit_small", "model.width_mult=0"]))


@pytest.mark.slow
@pytest.mark.parametrize("baseline", list(roadmap_baselines()))
def test_vit_baselines_run_at_the_smoke_budget(baseline):
    """The smallest budget (32 px, width x 0.25) still gives each baseline a token grid it can attend over."""
    cfg = compose(["+experiment=trajectory", "+budget=smoke", f"+roadmap=baselines/{baseline}"])
    assert build_model(cfg)(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_baseline_overlays_name_their_runs():
    expected = {"deit_small": ("deit_small_patch16_224", "DeiT-S"),
                "swin_tiny": ("swin_tiny_patch4_window7_224", "Swin-T")}
    assert roadmap_baselines() == {baseline: model for baseline, (model, _) in expected.items()}
    for baseline, (model, name) in expected.items():
        cfg = compose([f"+roadmap=baselines/{baseline}"])
        assert (cfg.name, cfg.model.model_name, cfg.recipe.name, cfg.roadmap.step) == (baseline, model, "modern", None)
        assert (cfg.roadmap.name, cfg.roadmap.paper_top1) == (name, None)   # Table 1's name; top-1 from the summary


@pytest.mark.slow
def test_vit_baselines_follow_image_size():
    for name in roadmap_baselines():
        cfg = compose([f"model={name}", "data.image_size=64", "data.num_classes=10"])
        assert cfg.name == name
        assert build_model(cfg)(torch.randn(1, 3, 64, 64)).shape == (1, 10)
