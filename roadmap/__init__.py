"""roadmap: the ResNet-50 -> ConvNeXt modernization roadmap (Liu et al., CVPR 2022) as composable ablations.

    cfg = compose(["+roadmap=step05_kernel7"])
    model = build_model(cfg)
    profile(model, image_size=224)  # {'params': ..., 'gmacs': 4.15}
"""
from __future__ import annotations

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from torch import nn

from roadmap.config import compose, register_resolvers
from roadmap.models import profile

register_resolvers()


def build_model(cfg: DictConfig) -> nn.Module:
    """Instantiate `cfg.model` (our RoadmapNet or a timm baseline) from a composed config, with fresh weights:
    `model.pretrained` is loaded by the job (`roadmap.models.weights`), not by the builder."""
    spec = cfg.model.copy()
    with open_dict(spec):
        spec.pop("pretrained", None)
    try:
        return instantiate(spec, _convert_="all")
    except InstantiationException as e:
        if isinstance(e.__cause__, ValueError):  # a bad model flag: surface the builder's own message
            raise e.__cause__ from None
        raise


__all__ = ["build_model", "compose", "profile"]
