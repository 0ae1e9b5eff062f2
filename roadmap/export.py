"""A trained run as a timm model: `python -m roadmap.export <run dir> [--out DIR] [--weights best|last]`.

The folder it writes (default <run dir>/export) has timm's Hugging Face Hub layout, config.json, model.safetensors
and a model card README.md, and loads offline wherever this package is installed:

    import roadmap, timm   # roadmap registers the steps' architectures with timm
    model = timm.create_model("local-dir:DIR", pretrained=True)

The architecture is the run's registered step (`roadmap.registry`) with every model argument the run used, or, for a
timm baseline (DeiT-S, Swin-T), timm's own model with the run's scaled arguments; the weights are the run's checkpoint,
read as `eval_only=true` reads it; the pretrained config holds the run's evaluation transform and class names.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import save_for_hf
from timm.models._hub import generate_readme
from torch import nn

from roadmap import build_model, registry
from roadmap.data import DataError, ImageDataModule
from roadmap.models import RoadmapNet
from roadmap.models.weights import WeightsError, load_weights
from roadmap.runs import (BEST, BEST_WEIGHTS, CHECKPOINTS, CONFIG, EXPORT, LAST, OVERRIDES,
                          SUMMARY, Summary)

# --weights: the files that hold them, in the order they are looked for (`roadmap.checkpoints.POLICIES`)
WEIGHTS = {"best": (BEST_WEIGHTS, BEST), "last": (LAST,)}
# what of the model's pretrained config describes the network itself, not the weights it was registered with
NETWORK_CFG_KEYS = ("architecture", "input_size", "pool_size", "first_conv", "classifier", "fixed_input_size")


class ExportError(ValueError):
    """A run cannot be exported as asked; the message says why and what to change."""


def weights_file(run_dir: Path, which: str) -> Path:
    """The checkpoint holding the run's `which` weights: best.pt or best.ckpt for best, last.ckpt for last."""
    for name in WEIGHTS[which]:
        if (run_dir / CHECKPOINTS / name).is_file():
            return run_dir / CHECKPOINTS / name
    held = sorted(p.name for p in (run_dir / CHECKPOINTS).glob("*") if p.is_file())
    raise ExportError(f"--weights {which}: {run_dir / CHECKPOINTS} has no {' or '.join(WEIGHTS[which])} (it holds "
                      f"{', '.join(held) or 'nothing'}); a finished run keeps best.pt (checkpoint=resume), an "
                      "unfinished one last.ckpt")


def timm_model(cfg: DictConfig) -> nn.Module:
    """The run's network, fresh, as timm builds it, so that timm records the arguments it is rebuilt from."""
    spec = OmegaConf.to_container(cfg.model, resolve=True)
    if get_object(spec["_target_"]) is not RoadmapNet:
        model = build_model(cfg)
        if not hasattr(model, "pretrained_cfg"):
            raise ExportError(f"model._target_={spec['_target_']} does not build a timm model: timm could not load it")
        return model
    step = cfg.roadmap.step
    if step not in registry.STEPS:
        raise ExportError(f"roadmap.step={step}: timm knows RoadmapNet as the roadmap steps ({registry.PREFIX}<step>, "
                          f"conf/roadmap/); export a run of one (+roadmap=<step>)")
    return timm.create_model(registry.PREFIX + step, **{k: v for k, v in spec.items()
                                                         if k not in ("_target_", "pretrained")})


def run_data(cfg: DictConfig) -> ImageDataModule:
    """The run's datamodule, set up for its class names and evaluation transform (no loader processes or caches)."""
    try:
        data = instantiate(cfg.data, num_workers=0, batch_processes=0, decoded_cache=False)
        data.setup()
    except DataError as err:
        raise ExportError(f"the class names come from the run's dataset, which cannot be read here: {err}") from None
    return data


def model_card(name: str, cfg: DictConfig, summary: Summary | None, overrides: list[str], which: str,
               weights: dict[str, Any]) -> str:
    """The model card: what the model is, the run's overrides, its scores, budget and commit, how to load it and
    how to upload it."""
    scores = "not recorded (the run did not finish)"
    if summary is not None and summary.acc1 is not None:
        top1, top5 = (summary.acc1_best, summary.acc5_best) if which == "best" else (summary.acc1, summary.acc5)
        scores = f"top-1 {top1:.2f} %, top-5 {top5:.2f} % on {cfg.data.name}'s val split ({which} epoch)"
    preset = [o for o in overrides if o.startswith("+budget=")]   # experiments/budget/: the study's budget
    epochs = summary.epochs if summary else cfg.trainer.max_epochs
    step = cfg.roadmap.step
    what = (f"Roadmap step `{step}` ({cfg.roadmap.name}) of the ResNet-50 -> ConvNeXt modernization roadmap "
            "(Liu et al., \"A ConvNet for the 2020s\", CVPR 2022), trained by the `roadmap` replay" if step else
            f"{cfg.roadmap.name or name}, a baseline of the `roadmap` replay of Liu et al., CVPR 2022")
    loads = "import roadmap, timm  # roadmap registers the steps with timm" if step else "import timm"
    details = {
        "Model type": "Image classification",
        "Architecture": f"`{name}`" + (f" (conf/roadmap/{step}.yaml) with the run's model arguments" if step else ""),
        "Dataset": cfg.data.name,
        "Scores": scores,
        "Recipe": cfg.recipe.name,
        "Budget": (f"{epochs} epoch{'s' * (epochs != 1)}"
                   + (f", {summary.steps} optimizer steps" if summary and summary.steps else "")
                   + f", {cfg.data.image_size} px, batch {cfg.data.batch_size}, width_mult "
                   f"{cfg.model.get('width_mult', 1.0)}" + (f" ({preset[0]})" if preset else "")),
        "Overrides": f"`{' '.join(overrides)}`" if overrides else "none",
        "Commit": (summary.git_commit if summary else None) or "unknown",
        "Weights": f"{which}: {weights['name']} (sha256 {weights['sha256'][:16]}...)",
    }
    usage = (f"Offline, from this folder:\n```python\n{loads}\nmodel = timm.create_model(\"local-dir:<this folder>\", "
             "pretrained=True).eval()\nlabels = model.pretrained_cfg[\"label_names\"]\n"
             "transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))\n```\n"
             "Online only, to upload it to the Hugging Face Hub:\n```python\nfrom timm.models import push_to_hf_hub\n"
             "push_to_hf_hub(model, \"<user>/<repo>\")  # weights and config.json; or, this folder as it is, card "
             "included:\n# huggingface_hub.upload_folder(repo_id=\"<user>/<repo>\", folder_path=\"<this folder>\")\n"
             "```\n")
    citation = ("@inproceedings{liu2022convnet,\n  title={A ConvNet for the 2020s},\n  author={Liu, Zhuang and Mao, "
                "Hanzi and Wu, Chao-Yuan and Feichtenhofer, Christoph and Darrell, Trevor and Xie, Saining},\n  "
                "booktitle={CVPR},\n  year={2022}\n}")
    return generate_readme({"tags": ["image-classification", "timm", "roadmap"], "license": "other",
                            "description": what + ".", "details": details, "usage": usage, "citation": citation},
                           name)


def export(run_dir: Path, out: Path | None = None, which: str = "best") -> Path:
    """Write the run's `which` weights to `out` (default <run dir>/export) in timm's Hugging Face Hub layout; returns
    `out`. Everything is read and checked before anything is written, and `out` is replaced whole."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / EXPORT
    if not (run_dir / CONFIG).is_file():
        raise ExportError(f"{run_dir} is not a run directory: it has no {CONFIG}")
    if out.exists() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise ExportError(f"--out {out} exists and holds something other than an export; choose another folder")
    cfg = OmegaConf.load(run_dir / CONFIG)
    summary = Summary.read(run_dir / SUMMARY) if (run_dir / SUMMARY).is_file() else None
    overrides = list(OmegaConf.load(run_dir / OVERRIDES)) if (run_dir / OVERRIDES).is_file() else []
    path = weights_file(run_dir, which)
    model = timm_model(cfg)
    info = load_weights(model, path, reset_head=False, field=f"--weights {which}")
    data = run_data(cfg)
    name = model.pretrained_cfg["architecture"]
    # the run's own weights: none of another source's (their location, license and evaluation) is theirs
    model.pretrained_cfg = {k: model.pretrained_cfg[k] for k in NETWORK_CFG_KEYS if k in model.pretrained_cfg}
    evaluation = {"input_size": (model.in_chans, data.image_size, data.image_size), "crop_pct": data.crop_pct,
                  "interpolation": data.interpolation, "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD}
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_for_hf(model, str(staging), model_config={"label_names": list(data.class_names)},
                    data_config=evaluation, safe_serialization=True)
        (staging / "README.md").write_text(model_card(name, cfg, summary, overrides, which, info), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m roadmap.export", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory (it holds .hydra/ and checkpoints/)")
    parser.add_argument("--out", type=Path, help="the folder to write (default: <run dir>/export)")
    parser.add_argument("--weights", choices=tuple(WEIGHTS), default="best",
                        help="best: the best epoch's (best.pt or best.ckpt); last: an unfinished run's last.ckpt")
    args = parser.parse_args(argv)
    try:
        out = export(args.run_dir, args.out, args.weights)
    except (ExportError, WeightsError) as err:
        raise SystemExit(f"python -m roadmap.export: {err}") from None
    print(f"wrote {out}; load it with: import roadmap, timm; timm.create_model(\"local-dir:{out}\", pretrained=True)")


if __name__ == "__main__":
    main()
