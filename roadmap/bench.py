"""Throughput of the roadmap steps, each timed interleaved with the implementation it claims to equal.

    python -m roadmap.bench --steps step00_baseline,step07_separate_downsampling --device cpu --image-size 64

A step and its reference (torchvision's ResNet-50 for steps 00/01, timm's ConvNeXt-T for step 07) live in one
process, see the same input tensors and take turns repeat by repeat (the order flips every repeat), so drift
from clocks or neighbouring processes hits both. Each repeat yields one ratio ours/reference of the time per
step (> 1: ours is slower); the table reports its min and median, and the ratio of each side's fastest round.
DeiT-S and Swin-T are timed for context.
This is a measurement, not a test: nothing here judges the numbers.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import groupby, islice
from operator import attrgetter
from pathlib import Path

import lightning as L
import pandas as pd
import timm
import torch
import torchvision
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from roadmap import build_model, compose, paper, profile
from roadmap.config import CONF_DIR
from roadmap.timing import Runner

# The main rows (Figure 2's eight and step 08, beyond the paper); lettered files (step02a, ...) are sub-steps.
MAIN_STEPS = sorted(p.stem for p in (CONF_DIR / "roadmap").glob("step[0-9][0-9]_*.yaml"))
CONTEXT_MODELS = tuple(paper.roadmap_baselines())   # conf/model/ names of the ViT baselines beside the roadmap


@dataclass
class Entry:
    """One model to time. `make(image_size)` builds it afresh: the ViTs fix their token grid when built."""
    group: str   # the step it is compared within, or its own name for a context model
    name: str
    role: str    # ours | reference | context
    make: Callable[[int], nn.Module]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m roadmap.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", default=",".join(MAIN_STEPS), help="comma-separated conf/roadmap/ names")
    p.add_argument("--refs", action=argparse.BooleanOptionalAction, default=True,
                   help="time each step's reference implementation and, for context, the ViT baselines")
    p.add_argument("--context", action=argparse.BooleanOptionalAction, default=True,
                   help="with --refs: include the ViT baselines (DeiT-S, Swin-T)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=("32", "bf16"), default="32", help="bf16 runs under torch.autocast")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile every model (warmup absorbs it)")
    p.add_argument("--repeats", type=int, default=10, help="timed rounds; one ratio per round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model and mode before timing")
    p.add_argument("--iters", type=int, default=2, help="steps per model, mode and round (short rounds pair "
                   "ours and the reference more tightly in time; raise it on a GPU)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None,
                   help="also time this conf/data/ train loader alone (e.g. synthetic), per recipe of the steps")
    p.add_argument("--data-batches", type=int, default=20, help="loader batches timed (after 2 untimed)")
    p.add_argument("--csv", type=Path, default=None, help="write the table here")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for every composed config")
    return p.parse_args(argv)


def entries(args: argparse.Namespace) -> list[Entry]:
    """Our steps, each followed by its reference; then the context ViTs (with --refs --context)."""
    common = [f"data.num_classes={args.num_classes}", *args.overrides]
    out = []
    for step in args.steps.split(","):
        cfg = compose([f"+roadmap={step}", *common])
        # built at the size asked (a ViT baseline's patch grid follows data.image_size)
        out.append(Entry(step, step, "ours", lambda size, step=step: build_model(
            compose([f"+roadmap={step}", f"data.image_size={size}", *common]))))
        reference = reference_for(step, cfg, args.num_classes) if args.refs else None
        if reference is not None:
            out.append(Entry(step, reference[0], "reference", reference[1]))
    if args.refs and args.context:
        for name in CONTEXT_MODELS:
            # the modern recipe's stochastic depth, as the T-sized steps train with
            def make(size: int, name: str = name) -> nn.Module:
                return build_model(compose([f"model={name}", "recipe=modern", f"data.image_size={size}", *common]))
            out.append(Entry(name, name, "context", make))
    return out


def reference_for(step: str, cfg: DictConfig, num_classes: int) -> tuple[str, Callable] | None:
    """(name, make) of the published implementation a step equals, built with the step's training flags.

    torchvision's ResNet has no stochastic depth or layer scale, so step 01 (which adds them) is compared with
    the plain ResNet-50: its ratio includes their cost.
    """
    if step in ("step00_baseline", "step01_modern_training"):
        return "torchvision resnet50", lambda size: torchvision.models.resnet50(num_classes=num_classes)
    if step == "step07_separate_downsampling":
        m = cfg.model
        return "timm convnext_tiny", lambda size: timm.create_model(
            "convnext_tiny", num_classes=num_classes, drop_path_rate=m.drop_path_rate,
            ls_init_value=m.layer_scale_init or None)
    return None


def time_group(group: list[Entry], args: argparse.Namespace, x: torch.Tensor, y: torch.Tensor) -> list[dict]:
    """Build, profile and warm each model of a group, then time them in alternating order, round by round."""
    rows, runners = [], []
    for entry in group:
        L.seed_everything(args.seed, verbose=False)
        model = entry.make(args.image_size)
        counts = profile(model, image_size=args.image_size)   # on CPU, before any device or compile wrapper
        gmacs_224 = counts["gmacs"] if args.image_size == 224 else profile(entry.make(224), 224)["gmacs"]
        runner = Runner(model, x, y, channels_last=args.channels_last, compile=args.compile,
                        bf16=args.precision == "bf16")
        peaks = {mode: runner.warm(mode, max(args.warmup, 1)) for mode in ("infer", "train")}
        runners.append(runner)
        rows.append({"group": entry.group, "model": entry.name, "role": entry.role, "params": counts["params"],
                     "gmacs_224": round(gmacs_224, 3), "gmacs": round(counts["gmacs"], 3),
                     "train_peak_mib": peaks["train"], "infer_peak_mib": peaks["infer"]})
    seconds = [{"train": [], "infer": []} for _ in runners]
    for r in range(args.repeats):
        order = list(enumerate(runners))
        for mode in ("train", "infer"):
            for i, runner in order if r % 2 == 0 else order[::-1]:
                seconds[i][mode].append(runner.seconds(mode, args.iters))
    images = args.batch_size * args.iters
    for row, sec in zip(rows, seconds):
        for mode in ("train", "infer"):
            row[f"{mode}_img_s"] = images / statistics.median(sec[mode])
    if len(runners) == 2:   # ours, reference
        for mode in ("train", "infer"):
            ours, ref = seconds[0][mode], seconds[1][mode]
            ratios = [a / b for a, b in zip(ours, ref)]
            rows[0][f"{mode}_ratio_min"] = min(ratios)
            rows[0][f"{mode}_ratio_median"] = statistics.median(ratios)
            rows[0][f"{mode}_ratio_best"] = min(ours) / min(ref)   # each side's least disturbed round
    return rows


def loader_rows(args: argparse.Namespace) -> list[dict]:
    """Images per second the `--data` train loader delivers alone, once per recipe among the steps."""
    rows = []
    recipes = {compose([f"+roadmap={s}", *args.overrides]).recipe.name: s for s in args.steps.split(",")}
    for recipe, step in recipes.items():
        cfg = compose([f"+roadmap={step}", f"data={args.data}", f"data.image_size={args.image_size}",
                       f"data.batch_size={args.batch_size}", *args.overrides])
        datamodule = instantiate(cfg.data, _convert_="all")
        datamodule.prepare_data()
        datamodule.setup("fit")
        batches = iter(datamodule.train_dataloader())
        for _ in islice(batches, 2):   # worker start-up
            pass
        start, seen = time.perf_counter(), 0
        for images, _ in islice(batches, args.data_batches):
            seen += len(images)
        rows.append({"group": "data", "model": f"{args.data} loader, {recipe} recipe "
                     f"({datamodule.workers()} workers)", "role": "loader",
                     "train_img_s": seen / (time.perf_counter() - start)})
    return rows


def settings(args: argparse.Namespace) -> dict:
    return {"device": args.device, "precision": args.precision, "channels_last": args.channels_last,
            "compile": args.compile, "threads": torch.get_num_threads(), "image_size": args.image_size,
            "batch_size": args.batch_size, "repeats": args.repeats, "iters": args.iters}


def run(args: argparse.Namespace) -> pd.DataFrame:
    """Time every requested model and return one row per model (plus loader rows with --data)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    device = torch.device(args.device)
    L.seed_everything(args.seed, verbose=False)
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=gen).to(device)
    y = torch.randint(0, args.num_classes, (args.batch_size,), generator=gen).to(device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    rows = []
    for _, members in groupby(entries(args), key=attrgetter("group")):
        group = list(members)
        rows += time_group(group, args, x, y)
        print(f"timed {', '.join(e.name for e in group)}", flush=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.data:
        rows += loader_rows(args)
    return pd.DataFrame(rows).assign(**settings(args)).astype({"params": "Int64"})


SHOWN = ["model", "role", "params", "gmacs_224", "gmacs", "train_img_s", "infer_img_s", "train_ratio_min",
         "train_ratio_median", "train_ratio_best", "infer_ratio_min", "infer_ratio_median", "infer_ratio_best",
         "train_peak_mib", "infer_peak_mib"]


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    table = run(args)
    print(f"\n{settings(args)}\nratio = our time per step / the reference's in the same round (> 1: ours slower), "
          f"min and median over {args.repeats} rounds; best = our fastest round / its fastest round; "
          f"img/s = median round; gmacs at {args.image_size} px; peak MiB on CUDA only")
    shown = table[[c for c in SHOWN if c in table]].astype(object)
    print(shown.where(shown.notna(), None).to_markdown(index=False, floatfmt=".3f", missingval="n/a"))
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.csv, index=False, float_format="%.4f")
        print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
