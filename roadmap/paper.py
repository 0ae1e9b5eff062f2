"""The paper's reference numbers, read from results/paper/ so that no code re-types them (see its README)."""
from __future__ import annotations

import pandas as pd

from roadmap.config import ROOT

PAPER_DIR = ROOT / "results" / "paper"


def table10() -> pd.DataFrame:
    """Table 10: one row per roadmap step in the paper's order (step, name, top1, top1_std, gmacs, ...)."""
    return pd.read_csv(PAPER_DIR / "table10.csv")


def baselines() -> pd.DataFrame:
    """Table 1's ImageNet-1K baselines, keyed by the timm model name a baseline run is called by."""
    return pd.read_csv(PAPER_DIR / "baselines.csv")


def dog_report() -> pd.DataFrame:
    """The dog-breed report's top-1 after fine-tuning ImageNet weights on 20 Stanford Dogs breeds, by timm model."""
    return pd.read_csv(PAPER_DIR / "dog_report.csv")


# What a run without a roadmap step compares with, by its dataset: (table, what the table's top-1 is).
REFERENCES = {"stanford_dogs": (dog_report, "the dog-breed report's top-1, 20 Stanford Dogs breeds")}
IMAGENET = (baselines, "paper ImageNet-1K top-1")


def reference_label(data: str | None) -> str:
    """What the published top-1 beside runs on `data` is, for a chart's axis."""
    return REFERENCES.get(data, IMAGENET)[1]


def baseline(model: str | None, name: str, data: str | None = None) -> pd.Series | None:
    """The published row a run without a roadmap step compares with (`REFERENCES`: the dog-breed report's on
    Stanford Dogs, else Table 1's); by its timm model (DeiT-S, Swin-T, MobileNetV2), else by its config name
    (ConvNeXt-T is our builder, run as model=convnext_tiny); None when the table has no such model."""
    table = REFERENCES.get(data, IMAGENET)[0]().set_index("timm_model")
    key = model if model in table.index else name
    return table.loc[key] if key in table.index else None


def convnextv2() -> pd.DataFrame:
    """ConvNeXt V2's published ImageNet-1K numbers (FCMAE pre-trained, then fine-tuned), with their source."""
    return pd.read_csv(PAPER_DIR / "convnextv2.csv")


def run_order() -> list[str]:
    """Run names in the paper's order: Table 10's steps, then Table 1's ViT baselines (by their model config)."""
    configs = {"deit_small_patch16_224": "deit_small", "swin_tiny_patch4_window7_224": "swin_tiny"}
    return [*table10()["step"], *(configs[m] for m in baselines()["timm_model"] if m in configs)]
