"""Load reference weights into RoadmapNet: torchvision's ResNet-50 (step 00) and timm's ConvNeXt (step 07) and
ConvNeXt V2 (step 08).

These conversions are the proof that the builder is exactly the published architecture: same parameters,
same logits. They map state-dict keys only; tensors are copied unchanged, except that ConvNeXt's Linear
(pointwise) weights become 1x1 conv kernels.
"""
from __future__ import annotations

import re

import torch
from torch import nn

TORCHVISION_RULES = [
    (r"^conv1\.", "stem.conv."),
    (r"^bn1\.", "stem.norm."),
    (r"^layer(\d)\.(\d+)\.conv(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.{m[2]}.branch.conv{m[3]}."),
    (r"^layer(\d)\.(\d+)\.bn(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.{m[2]}.branch.norm{m[3]}."),
    (r"^layer(\d)\.(\d+)\.downsample\.0\.", lambda m: f"stages.{int(m[1]) - 1}.{m[2]}.shortcut.conv."),
    (r"^layer(\d)\.(\d+)\.downsample\.1\.", lambda m: f"stages.{int(m[1]) - 1}.{m[2]}.shortcut.norm."),
]

_BLOCK_PARTS = {"conv_dw": "branch.conv1", "norm": "branch.norm1", "mlp.fc1": "branch.conv2",
                "mlp.grn": "branch.grn2", "mlp.fc2": "branch.conv3", "gamma": "gamma"}
TIMM_CONVNEXT_RULES = [
    (r"^stem\.0\.", "stem.conv."),
    (r"^stem\.1\.", "stem.norm."),
    (r"^stages\.(\d)\.downsample\.0\.", r"stages.\1.0.norm."),
    (r"^stages\.(\d)\.downsample\.1\.", r"stages.\1.0.conv."),
    # blocks of stages 1-3 sit after their separate downsampling layer (index 0)
    (r"^stages\.(\d)\.blocks\.(\d+)\.(conv_dw|norm|mlp\.fc1|mlp\.grn|mlp\.fc2|gamma)",
     lambda m: f"stages.{m[1]}.{int(m[2]) + (m[1] != '0')}.{_BLOCK_PARTS[m[3]]}"),
    (r"^head\.norm\.", "head_norm."),
    (r"^head\.fc\.", "fc."),
]


def rename(state: dict[str, torch.Tensor], rules: list) -> dict[str, torch.Tensor]:
    """Rename each key by the first rule whose pattern matches it."""
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            new, n = re.subn(pattern, repl, key)
            if n:
                key = new
                break
        out[key] = value
    return out


def as_conv_kernels(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Linear (out, in) weights become 1x1 conv (out, in, 1, 1) kernels where the model has convs."""
    target = model.state_dict()
    state = dict(state)
    for key, value in state.items():
        if key in target and target[key].dim() == 4 and value.dim() == 2:
            state[key] = value[:, :, None, None]
    return state


def _load(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    model.load_state_dict(as_conv_kernels(model, state), strict=True)
    return model


def from_torchvision_resnet(model: nn.Module, resnet: nn.Module) -> nn.Module:
    """Copy a torchvision `resnet50()` into a step-00 RoadmapNet (strict: every key must match)."""
    return _load(model, rename(resnet.state_dict(), TORCHVISION_RULES))


def from_timm_convnext(model: nn.Module, convnext: nn.Module) -> nn.Module:
    """Copy a timm `convnext_*` or `convnextv2_*` into a ConvNeXt-configured RoadmapNet (strict: every key must
    match)."""
    return _load(model, rename(convnext.state_dict(), TIMM_CONVNEXT_RULES))
