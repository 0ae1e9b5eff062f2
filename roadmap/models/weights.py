"""Weights from elsewhere into a model of this project: published ImageNet weights (`model.pretrained=true`), a
local file (`model.pretrained=<file>`, the offline path), or a checkpoint to evaluate (`eval_only=true`).

A file may hold torchvision's ResNet-50 or timm's ConvNeXt / ConvNeXt V2 weights (converted to RoadmapNet by the
same rules the parity tests prove exact), timm weights for a timm model (adapted by timm's own checkpoint filter,
e.g. DeiT's position embeddings resampled to the run's image size), or this project's own checkpoints. The
classifier head is re-initialised when the class count differs, as when fine-tuning on another dataset.
"""
from __future__ import annotations

import functools
import hashlib
import os
import sys
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import timm
import torch
import torchvision
from huggingface_hub import hf_hub_download
from safetensors.torch import load_file
from torch import nn

from roadmap.models.convert import TIMM_CONVNEXT_RULES, TORCHVISION_RULES, as_conv_kernels, rename
from roadmap.models.roadmap_net import RoadmapNet


class WeightsError(ValueError):
    """Weights cannot be found, read or fitted to the model; the message says what to change."""


# Where a checkpoint keeps the EMA of the weights (recipe.ema=true): timm's key (its CheckpointSaver's, and this
# project's best.pt), or, in a Lightning checkpoint, the Classifier's `ema` (timm's ModelEmaV3, whose copy is `module`)
EMA_STATE, EMA_PREFIX = "state_dict_ema", "ema.module."


# What `model.pretrained=true` fetches for a RoadmapNet, by the reference architecture it equals. The ConvNeXt tags
# are the paper's ImageNet-1K weights (timm's default tags for some are ImageNet-22K fine-tuned).
HUB: dict[str, tuple[Callable[[], nn.Module], list]] = {
    "torchvision:ResNet50_Weights.IMAGENET1K_V1": (torchvision.models.resnet50, TORCHVISION_RULES),
    **{f"timm:{name}": (lambda n=name: timm.create_model(n.split(".")[0]), TIMM_CONVNEXT_RULES)
       for name in ("convnext_tiny.fb_in1k", "convnext_small.fb_in1k", "convnext_base.fb_in1k",
                    "convnextv2_tiny.fcmae_ft_in1k", "convnextv2_base.fcmae_ft_in1k")},
}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def head_keys(model: nn.Module) -> set[str]:
    """The classifier's parameters: RoadmapNet's `fc`, or what timm's pretrained config names."""
    name = "fc" if isinstance(model, RoadmapNet) else model.pretrained_cfg["classifier"]
    return {k for k in model.state_dict() if k.startswith(name + ".")}


def read_state(path: Path, ema: bool = False) -> dict[str, torch.Tensor]:
    """A flat state dict from a safetensors or torch file: a bare state dict, timm's or the ConvNeXt code's
    {'model': ...}, this project's best.pt {'state_dict': ...}, or a Lightning checkpoint (keys 'model.*'); with
    `ema`, the EMA weights a checkpoint holds beside those (`EMA_STATE`, `EMA_PREFIX`), or a WeightsError."""
    try:
        state: Any = load_file(path) if path.suffix == ".safetensors" else torch.load(
            path, map_location="cpu", weights_only=True)
    except Exception as err:   # torch raises RuntimeError, EOFError or UnpicklingError, by how the file broke
        raise WeightsError(f"{path} cannot be read as weights ({(str(err).splitlines() or [''])[0]})") from None
    if ema:
        lightning = state.get("state_dict", {}) if isinstance(state, dict) else {}
        state = (state.get(EMA_STATE) if isinstance(state, dict) else None) or {
            k.removeprefix(EMA_PREFIX): v for k, v in lightning.items() if k.startswith(EMA_PREFIX)}
        if not state:
            raise WeightsError(f"{path} holds no EMA weights (neither {EMA_STATE} nor {EMA_PREFIX}* keys)")
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} holds no state dict of tensors")
    if any(k.startswith("model.") for k in state):   # a Lightning checkpoint of this project's Classifier
        state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    return {k.removeprefix("module."): v for k, v in state.items()}


def fit_state(model: nn.Module, state: dict[str, torch.Tensor], ignored: tuple[str, ...] = ()
              ) -> dict[str, torch.Tensor]:
    """`state` renamed to `model`'s keys: as it is, or through the first converter whose keys are the model's, but
    for those starting with an `ignored` prefix (a classifier the caller replaces or drops)."""
    if not isinstance(model, RoadmapNet):
        filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
        return filter_fn(state, model) if filter_fn is not None else state

    def core(keys: Any) -> set[str]:   # layer scales aside: `with_layer_scales` sets those a file lacks to 1
        return {k for k in keys if not k.endswith(".gamma") and not k.startswith(ignored)}
    for rules in (None, TORCHVISION_RULES, TIMM_CONVNEXT_RULES):
        renamed = state if rules is None else rename(state, rules)
        if core(renamed) == core(model.state_dict()):
            return as_conv_kernels(model, renamed)
    return state


FIT_HINT = "the weights must be of the same architecture and width (width_mult=1 for published weights)"


def with_layer_scales(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with the layer scales it lacks (torchvision's ResNet-50 into step 01) at 1, which keeps its function."""
    target = model.state_dict()
    return {**state, **{k: torch.ones_like(target[k]) for k in set(target) - set(state) if k.endswith(".gamma")}}


def _differ(target: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> list[str]:
    return sorted(k for k in set(state) & set(target) if state[k].shape != target[k].shape)


def misfit(model: nn.Module, state: dict[str, torch.Tensor], tolerated: Collection[str] = ()) -> str:
    """Why `state` does not load into `model`, '' if it does: keys missing or unknown, shapes that differ; the
    `tolerated` keys, which the caller adapts or drops, aside."""
    target = model.state_dict()
    missing = sorted(set(target) - set(state) - set(tolerated))
    unexpected = sorted(set(state) - set(target) - set(tolerated))
    differ = [k for k in _differ(target, state) if k not in tolerated]
    problems = [f"{len(missing)} model keys missing (e.g. {missing[0]})" if missing else "",
                f"{len(unexpected)} unknown keys (e.g. {unexpected[0]})" if unexpected else "",
                f"{len(differ)} shapes differ (e.g. {differ[0]}: {tuple(state[differ[0]].shape)} in the "
                f"file, {tuple(target[differ[0]].shape)} here)" if differ else ""]
    return "; ".join(p for p in problems if p)


def load_weights(model: nn.Module, path: str | Path, reset_head: bool = True,
                 head_init_scale: float = 1.0, field: str = "model.pretrained", ema: bool = False) -> dict[str, Any]:
    """Load the weights in `path` (with `ema`, its EMA weights) into `model`, every key and shape exactly, except a
    classifier of another class count: with `reset_head` it keeps the model's fresh init, scaled by
    `head_init_scale` (the ConvNeXt fine-tuning recipe's 0.001); and layer scales the file lacks are 1
    (`with_layer_scales`). Returns what the run records: the file's name, path and sha256, and whether the head
    was reset. `field` names the config key in errors."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"{field}={path}: no such file")
    state = with_layer_scales(model, fit_state(model, read_state(path, ema)))
    target = model.state_dict()
    head = head_keys(model)
    differ = _differ(target, state)
    reset = bool(differ) and set(differ) <= head
    if reset and not reset_head:
        raise WeightsError(f"{field}={path} has a classifier for {state[differ[0]].shape[0]} classes, the model "
                           f"{target[differ[0]].shape[0]}: set data.num_classes to match")
    problems = misfit(model, state, head if reset else set())
    if problems:
        raise WeightsError(f"{field}={path} does not fit this model: {problems}; {FIT_HINT}")
    if reset:
        state = {k: v for k, v in state.items() if k not in head}
        with torch.no_grad():
            for key in head:
                target[key].mul_(head_init_scale)
    model.load_state_dict(state, strict=not reset)
    return {"name": path.name, "path": str(path.resolve()), "sha256": sha256(path), "head_reset": reset}


@functools.cache
def _published_state(name: str) -> dict[str, torch.Tensor]:
    """HUB's reference architecture `name` as RoadmapNet's keys, on the meta device: its shapes, built once."""
    reference, rules = HUB[name]
    with torch.device("meta"):
        return rename(reference().state_dict(), rules)


def _architecture(model: nn.Module) -> str:
    """The published weights whose architecture `model` has: HUB's entry for a RoadmapNet, timm's default
    pretrained tag for a timm model."""
    if not isinstance(model, RoadmapNet):
        cfg = model.pretrained_cfg
        return f"timm:{cfg['architecture']}" + (f".{cfg['tag']}" if cfg.get("tag") else "")

    def shapes(state: dict[str, torch.Tensor]) -> dict[str, torch.Size]:   # the head and layer scale aside
        return {k: v.shape for k, v in state.items() if not (k.startswith("fc.") or k.endswith(".gamma"))}

    for name in HUB:
        if shapes(as_conv_kernels(model, _published_state(name))) == shapes(model.state_dict()):
            return name
    raise WeightsError("model.pretrained=true: no published weights have this architecture (torchvision's "
                       "ResNet-50 is steps 00-01, timm's ConvNeXt steps 07-08 at width_mult=1); train one and "
                       "pass model.pretrained=<its checkpoint>")


def fetch(name: str) -> Path:
    """The file of published weights `name` ('torchvision:<Weights.TAG>' or 'timm:<model>.<tag>'), downloaded
    into torch's or Hugging Face's cache on first use. Offline and not cached: one WeightsError saying how to
    provide the file."""
    source, _, ident = name.partition(":")
    url = torchvision.models.get_weight(ident).url if source == "torchvision" else None
    repo = None if url else timm.models.get_pretrained_cfg(ident).hf_hub_id
    try:
        if url:
            path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(url, str(path), progress=False)
            return path
        return Path(hf_hub_download(repo, "model.safetensors"))
    except Exception as err:   # urllib, requests and huggingface_hub each raise their own kinds when offline
        where = url or f"https://huggingface.co/{repo} (model.safetensors)"
        raise WeightsError(f"model.pretrained=true: {name} is not cached and cannot be downloaded "
                           f"({type(err).__name__}); fetch {where} on a connected machine and pass "
                           "model.pretrained=<that file>") from None


def load_pretrained(model: nn.Module, pretrained: bool | str | None, head_init_scale: float = 1.0
                    ) -> dict[str, Any] | None:
    """`model.pretrained`: false/null does nothing; true loads the published weights of the model's architecture;
    a path loads that file. Returns what `load_weights` records, with the published weights' name."""
    if pretrained in (None, False, "false"):
        return None
    if pretrained in (True, "true"):
        name = _architecture(model)
        return {**load_weights(model, fetch(name), head_init_scale=head_init_scale), "name": name}
    return load_weights(model, pretrained, head_init_scale=head_init_scale)
