"""Every roadmap step (conf/roadmap/*.yaml) as a timm model, `roadmap_<step>`, registered on `import roadmap`.

    timm.create_model("roadmap_step05_kernel7", num_classes=10, width_mult=0.25)  # = +roadmap=step05_kernel7 + those
    timm.create_model("roadmap_step07_separate_downsampling", pretrained=True)    # ConvNeXt-T's published weights
    timm.create_model("roadmap_step00_baseline", features_only=True, out_indices=(1, 2, 3))

A step's RoadmapNet arguments are composed from its YAML by Hydra when its first model is made, so a registered
model is the network `+roadmap=<step>` builds (at ImageNet's 1000 classes unless told otherwise); keyword arguments
override them, as timm's do. Registering composes nothing, so that `import roadmap` stays cheap: it reads the step
files' names and, for each step's pretrained config, the step's name and its recipe's interpolation.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from timm import get_pretrained_cfg, list_pretrained
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, resolve_pretrained_cfg
from torch import nn

from roadmap import schema
from roadmap.config import CONF_DIR, compose
from roadmap.models import RoadmapNet
from roadmap.models.weights import FIT_HINT, WeightsError, fetch, fit_state, head_keys, misfit, with_layer_scales

PREFIX = "roadmap_"
STEP_DIR = CONF_DIR / "roadmap"
STEPS = sorted(p.stem for p in STEP_DIR.glob("*.yaml"))
PAPER = ("A ConvNet for the 2020s", "arXiv:2201.03545")

# The published weights whose architecture a step is (test_registry checks this against what `model.pretrained=true`
# finds for every step): the name `roadmap.models.weights.fetch` takes, and timm's pretrained config of those weights.
PUBLISHED = {
    "step00_baseline": ("torchvision:ResNet50_Weights.IMAGENET1K_V1", "resnet50.tv_in1k"),
    "step01_modern_training": ("torchvision:ResNet50_Weights.IMAGENET1K_V1", "resnet50.tv_in1k"),
    "step07_separate_downsampling": ("timm:convnext_tiny.fb_in1k", "convnext_tiny.fb_in1k"),
    "step08_grn": ("timm:convnextv2_tiny.fcmae_ft_in1k", "convnextv2_tiny.fcmae_ft_in1k"),
}


@functools.cache
def _yaml(path: Path) -> DictConfig:
    return OmegaConf.load(path)


def recipe_of(step: str) -> str:
    """The recipe a step trains with, read along its defaults chain without composing it: its own `override
    /recipe`, else its parent step's, else the primary config's default."""
    defaults = _yaml(STEP_DIR / f"{step}.yaml").get("defaults", [])
    for entry in defaults:
        if isinstance(entry, DictConfig) and "override /recipe" in entry:
            return entry["override /recipe"]
    parents = [entry for entry in defaults if isinstance(entry, str) and entry != "_self_"]
    if parents:
        return recipe_of(parents[0])
    return next(entry.recipe for entry in _yaml(CONF_DIR / "config.yaml").defaults
                if isinstance(entry, DictConfig) and "recipe" in entry)


def step_cfg(step: str) -> dict[str, Any]:
    """timm's pretrained config of a step: the published weights' where they exist (their evaluation transform),
    else ImageNet-1k at 224 px evaluated as `roadmap.data` evaluates: resize by the data's crop_pct, centre crop,
    the step's recipe's interpolation, ImageNet's mean and std."""
    if step in PUBLISHED:
        published = get_pretrained_cfg(PUBLISHED[step][1])
        cfg = dataclasses.replace(published, architecture=None, tag=None).to_dict()
    else:
        augment = _yaml(CONF_DIR / "recipe" / f"{recipe_of(step)}.yaml").augment
        cfg = {"num_classes": 1000, "input_size": (3, 224, 224), "crop_pct": schema.default("data.crop_pct"),
               "interpolation": augment.interpolation, "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD}
    return {"paper_name": PAPER[0], "paper_ids": PAPER[1], **cfg, "pool_size": (7, 7), "first_conv": "stem.conv",
            "classifier": "fc", "description": _step_name(step)}


def _step_name(step: str) -> str:
    """The step's `roadmap.name` as composing gives it: the primary config's (its published row's, `paper`
    resolver) under the step file's own."""
    nodes = [{"roadmap": _yaml(path).roadmap} for path in (CONF_DIR / "config.yaml", STEP_DIR / f"{step}.yaml")]
    return OmegaConf.merge(*nodes).roadmap.name


@functools.cache
def _composed_args(step: str) -> dict[str, Any]:
    hydra = HydraConfig.instance().cfg   # compose() replaces it; a Hydra job that creates a model keeps its own
    try:
        args = OmegaConf.to_container(compose([f"+roadmap={step}"]).model, resolve=True)
    finally:
        HydraConfig.instance().cfg = hydra
    for key in ("_target_", "pretrained", "num_classes"):   # timm's default class count is its config's (1000)
        del args[key]
    return args


def step_args(step: str) -> dict[str, Any]:
    """RoadmapNet's arguments for `+roadmap=<step>`, composed as `roadmap.build_model` composes them."""
    return {k: list(v) if isinstance(v, list) else v for k, v in _composed_args(step).items()}


def _roadmap_net(global_pool: str = "avg", device: Any = None, dtype: torch.dtype | None = None,
                 **kwargs: Any) -> RoadmapNet:
    """RoadmapNet with timm's factory options that are not architecture: the device its tensors are made on,
    their dtype, and the head's pooling."""
    with torch.device(device) if device is not None else nullcontext():
        model = RoadmapNet(**kwargs)
    model.set_global_pool(global_pool)
    return model if dtype is None else model.to(dtype)


def fit_pretrained(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """timm's `pretrained_filter_fn`: reference weights renamed to RoadmapNet's keys by the converters the parity
    tests prove exact, missing layer scales at 1; refused in one line unless all that differs is what timm adapts
    next (the first conv for another `in_chans`, the classifier for another class count)."""
    cfg = model.pretrained_cfg
    head = cfg["classifier"] + "."
    state = with_layer_scales(model, fit_state(model, state, ignored=(head,)))
    adapted = {cfg["first_conv"] + ".weight", *head_keys(model), *(k for k in state if k.startswith(head))}
    problems = misfit(model, state, adapted)
    if problems:
        raise WeightsError(f"{cfg['architecture']}: the pretrained weights do not fit this model: {problems}; "
                           f"{FIT_HINT}")
    return state


def _weights_overlay(step: str, pretrained_cfg: Any, overlay: dict[str, Any] | None) -> dict[str, Any]:
    """`pretrained_cfg_overlay` pointing timm at a local file of the weights: a config's own file or folder (an
    export's `local-dir:`, `pretrained_cfg_overlay=dict(file=...)`) as it is, else the published weights fetched
    into torch's or Hugging Face's cache by `weights.fetch` (offline and not cached: its one-line error)."""
    overlay = dict(overlay or {})
    cfg = resolve_pretrained_cfg(PREFIX + step, pretrained_cfg, overlay)
    if cfg.file or cfg.state_dict:
        return overlay
    if not cfg.has_weights or step not in PUBLISHED:
        published = ", ".join(list_pretrained(PREFIX + "*"))
        raise WeightsError(f"{PREFIX}{step} has no published weights (these have: {published}); pass "
                           "pretrained_cfg_overlay=dict(file=<weights file>)")
    return {**overlay, "file": str(fetch(PUBLISHED[step][0]))}


def create(step: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """The model `timm.create_model(PREFIX + step, ...)` returns: the step's arguments, then `kwargs`."""
    if pretrained:
        kwargs["pretrained_cfg_overlay"] = _weights_overlay(step, kwargs.get("pretrained_cfg"),
                                                            kwargs.get("pretrained_cfg_overlay"))
    return build_model_with_cfg(_roadmap_net, PREFIX + step, pretrained, pretrained_filter_fn=fit_pretrained,
                                feature_cfg={"out_indices": (0, 1, 2, 3), "flatten_sequential": True},
                                **{**step_args(step), **kwargs})


def _entrypoint(step: str) -> Callable[..., nn.Module]:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return create(step, pretrained, **kwargs)
    entrypoint.__name__ = entrypoint.__qualname__ = PREFIX + step   # timm registers a function by its name
    entrypoint.__doc__ = f"Roadmap {step}: {step_cfg(step)['description']} (conf/roadmap/{step}.yaml)."
    return entrypoint


def cfg_name(step: str) -> str:
    """The step's pretrained config's name: `roadmap_<step>`, tagged with its published weights' tag if any."""
    return PREFIX + step + (f".{PUBLISHED[step][1].split('.')[1]}" if step in PUBLISHED else "")


default_cfgs = generate_default_cfgs({cfg_name(step): step_cfg(step) for step in STEPS})   # read by register_model
for _step in STEPS:
    register_model(_entrypoint(_step))
