"""The paper's reference numbers, read from results/paper/ so that no code re-types them (see its README)."""
from __future__ import annotations

import csv
import functools
from typing import TYPE_CHECKING

from omegaconf import OmegaConf

from roadmap.config import CONF_DIR, ROOT

if TYPE_CHECKING:
    import pandas as pd

PAPER_DIR = ROOT / "results" / "paper"
BASELINE_DIR = CONF_DIR / "roadmap" / "baselines"
# The tables a config's `${paper:<key>,<field>}` reads (`published`), in the order a key is looked up
PUBLISHED = ("table10.csv", "convnextv2.csv", "baselines.csv")


def _read(name: str) -> pd.DataFrame:
    import pandas as pd   # here, not at the top: composing a config reads `published`, and must stay this light

    return pd.read_csv(PAPER_DIR / name)


def table10() -> pd.DataFrame:
    """Table 10: one row per roadmap step in the paper's order (step, name, top1, top1_std, gmacs, ...)."""
    return _read("table10.csv")


def baselines() -> pd.DataFrame:
    """Table 1's ImageNet-1K baselines, keyed by the timm model name a baseline run is called by."""
    return _read("baselines.csv")


def dog_report() -> pd.DataFrame:
    """The dog-breed report's top-1 after fine-tuning ImageNet weights on 20 Stanford Dogs breeds, by timm model."""
    return _read("dog_report.csv")


def convnextv2() -> pd.DataFrame:
    """ConvNeXt V2's published ImageNet-1K numbers (FCMAE pre-trained, then fine-tuned), with their source."""
    return _read("convnextv2.csv")


@functools.cache
def _published_rows() -> dict[str, dict[str, str]]:
    """Every row of `PUBLISHED` by its roadmap step and by its timm model; the first table's row wins."""
    rows: dict[str, dict[str, str]] = {}
    for name in PUBLISHED:
        with open(PAPER_DIR / name, newline="") as f:
            for row in csv.DictReader(f):
                for key in (row.get("step"), row.get("timm_model")):
                    if key:
                        rows.setdefault(key, row)
    return rows


def published(key: str | None, field: str) -> str | float | None:
    """A published row's `field` (name, top1 or gmacs), for the `paper` resolver that fills a composed config's
    `roadmap` node: the row of roadmap step `key` (Table 10, else ConvNeXt V2's table) or of timm model `key`
    (Table 1). None for no key, a key without a row, or an empty cell. Read with the csv module, so that composing
    loads no pandas, and parsed by `float`, as YAML would parse the number."""
    value = _published_rows().get(key, {}).get(field) if key is not None else None
    return None if not value else value if field == "name" else float(value)


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


@functools.cache
def roadmap_baselines() -> dict[str, str]:
    """The baselines trained beside the roadmap (conf/roadmap/baselines/), {model config name: timm model}: each
    overlay's `override /model` and that model config's `model_name`."""
    found = {}
    for path in sorted(BASELINE_DIR.glob("*.yaml")):
        model = next(entry["override /model"] for entry in OmegaConf.load(path).defaults
                     if "override /model" in entry)
        found[model] = OmegaConf.load(CONF_DIR / "model" / f"{model}.yaml").model_name
    return found


def run_order() -> list[str]:
    """Run names in the paper's order: Table 10's steps, then the roadmap's baselines (by their model config) in
    Table 1's order."""
    configs = {timm_model: name for name, timm_model in roadmap_baselines().items()}
    return [*table10()["step"], *(configs[m] for m in baselines()["timm_model"] if m in configs)]
