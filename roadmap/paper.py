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
