"""roadmap: the ResNet-50 -> ConvNeXt modernization roadmap (Liu et al., CVPR 2022) as composable ablations.

    cfg = compose(["+roadmap=step05_kernel7"])
    model = build_model(cfg)
    profile(model, image_size=224)  # {'params': ..., 'gmacs': 4.15}

Importing it registers every step with timm (`roadmap.registry`): timm.create_model("roadmap_step05_kernel7") -- when
timm is imported, so that importing roadmap alone loads no torch (`roadmap.timm_hook`).
"""
from __future__ import annotations

import os

# Before torch loads libgomp, which reads it once: libgomp's default long spin has an idle thread hold a core the
# batch's helper process needs (results/cpu_replay/README.md, "Speed"). Set GOMP_SPINCOUNT to choose another.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from typing import TYPE_CHECKING, Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from roadmap.config import compose, register_resolvers
from roadmap.timm_hook import register_with_timm

if TYPE_CHECKING:
    from torch import nn

register_resolvers()
register_with_timm()


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


def __getattr__(name: str) -> Any:
    """`profile` on first use: it imports torch, which composing a config (run.py --help) must not."""
    if name == "profile":
        from roadmap.models import profile
        return profile
    raise AttributeError(f"module 'roadmap' has no attribute {name!r}")


__all__ = ["build_model", "compose", "profile"]
