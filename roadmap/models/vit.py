"""The paper's ViT baselines (DeiT-S, Swin-T) from timm, width-scaled the way RoadmapNet is for cheap proxies."""
from __future__ import annotations

from collections.abc import Sequence

import timm
from timm.layers import make_divisible
from torch import nn


def scaled_vit(model_name: str, embed_dim: int, num_heads: int | Sequence[int], width_mult: float = 1.0,
               **kwargs) -> nn.Module:
    """timm's `model_name` with `embed_dim` x `width_mult` (rounded to a multiple of 8, as RoadmapNet rounds its
    widths) and each stage's head count x `width_mult` (at least 1), so the width per head stays near the
    original's; depth, patch size and the rest are timm's. GMACs then fall about as width_mult^2, as the
    convnets' do (the paper compares models of equal FLOPs). `kwargs` go to `timm.create_model`."""
    if width_mult <= 0:
        raise ValueError(f"model.width_mult={width_mult} is invalid: allowed a number > 0")
    dim = make_divisible(embed_dim * width_mult, 8) if width_mult != 1 else embed_dim
    multi = not isinstance(num_heads, int)
    heads = [max(1, round(h * width_mult)) for h in (num_heads if multi else [num_heads])]
    for stage, h in enumerate(heads):   # Swin doubles the width at every stage
        stage_dim = dim * 2 ** stage if multi else dim
        if stage_dim % h:
            raise ValueError(f"model.width_mult={width_mult} gives width {stage_dim} with {h} heads, which do not "
                             "divide it: pick a width_mult whose scaled widths divide evenly")
    return timm.create_model(model_name, embed_dim=dim, num_heads=tuple(heads) if multi else heads[0], **kwargs)
