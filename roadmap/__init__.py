"""roadmap: the ResNet-50 -> ConvNeXt modernization roadmap (Liu et al., CVPR 2022) as composable ablations.

    cfg = compose(["+roadmap=step05_kernel7"])
    model = build_model(cfg)
    profile(model, image_size=224)  # {'params': ..., 'gmacs': 4.15}
"""
from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from roadmap.config import compose, register_resolvers
from roadmap.models import profile

register_resolvers()


def build_model(cfg: DictConfig) -> nn.Module:
    """Instantiate `cfg.model` (our RoadmapNet or a timm baseline) from a composed config."""
    return instantiate(cfg.model, _convert_="all")


__all__ = ["build_model", "compose", "profile"]
