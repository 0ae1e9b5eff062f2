"""Hydra composition over the repo's conf/ and the resolvers its YAML uses."""
from __future__ import annotations

import functools
import os
import re
import string
import textwrap
from collections.abc import Sequence
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from roadmap import schema
from roadmap.runs import checkpoint_dir, run_subdir

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"


def _run_label(step: str | None, model_choice: str) -> str:
    """A run is named after its roadmap step, else after its model config (e.g. deit_small)."""
    return step or model_choice


def _swin_window(image_size: int) -> int:
    """Swin's window must tile the token grid of every stage (image_size/32 at the last): 7 at 224 px."""
    return 7 if image_size % 224 == 0 else max(1, image_size // 32)


def _kept_classes(top_classes: int | None, dataset_classes: int) -> int:
    """data.num_classes of a dataset that `data.top_classes` may cut: the kept classes, else all of them."""
    return dataset_classes if top_classes is None else top_classes


def _wandb_offline() -> bool:
    return os.environ.get("WANDB_MODE", "offline") != "online"


def _summary(path: Path) -> str:
    """The first sentence of a config file's opening comment (its prose, without `# @package` or example lines)."""
    prose = []
    for line in path.read_text().splitlines():
        if not line.startswith("#") or line.startswith(("#  ", "# -")):
            break
        if not line.startswith("# @package"):
            prose.append(line.removeprefix("#").strip())
    return re.split(r"(?<=[^.]{3})\. (?=[A-Z])", " ".join(prose))[0].rstrip(".")   # not at "e.g." or "Sec. 2"


@functools.cache   # Hydra resolves the help template at each merge into it, 7 lists a composition
def _help_options(folder: str, width: int = 118) -> str:
    """The help page's list of a group's configs (conf/roadmap, experiments/budget, ...), read from its folder: one
    line each, name and summary; sub-steps (02a) before their step (02), as in the paper's Table 10, and subfolders
    (roadmap/baselines) after the folder's own files. Read once a process."""
    root = ROOT / folder

    def order(path: Path) -> tuple[int, str]:
        rel = path.relative_to(root)
        return len(rel.parts), re.sub(r"^(step\d+)_", r"\1~_", str(rel))
    files = sorted(root.rglob("*.yaml"), key=order)
    names = [str(p.relative_to(root).with_suffix("")) for p in files]
    column = max(map(len, names))
    lines = [f"  {name:<{column}}  " + textwrap.shorten(_summary(p), width - column - 4, placeholder=" ...")
             for name, p in zip(names, files)]
    return "\n".join(lines).replace("$", "$$")   # Hydra fills the page's $FLAGS_HELP & co. with string.Template


def register_resolvers() -> None:
    """The resolvers conf/ uses, and the config groups' typed schemas (`roadmap.schema`) in Hydra's ConfigStore:
    both process-wide, put there once, when `roadmap` is imported."""
    from roadmap.paper import published   # here: roadmap.paper reads this module's paths

    schema.store()
    for name, fn in {"roadmap_root": lambda: str(ROOT), "run_label": _run_label, "run_subdir": run_subdir,
                     "checkpoint_dir": checkpoint_dir, "swin_window": _swin_window, "kept_classes": _kept_classes,
                     "wandb_offline": _wandb_offline, "help_options": _help_options, "paper": published}.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def compose_with_hydra(overrides: Sequence[str] = ()) -> DictConfig:
    """conf/config.yaml composed with command-line style overrides, its `hydra` node kept (run and sweep
    directories, the help page) and set as the current HydraConfig, so `${hydra:...}` interpolations resolve."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose conf/config.yaml with command-line style overrides, e.g. ['+roadmap=step05_kernel7'].

    As under `python run.py`, `${hydra:...}` interpolations resolve (e.g. the chosen model config);
    set `paths.output_dir` yourself, since no run directory is created.
    """
    return without_hydra(compose_with_hydra(overrides))


def without_hydra(cfg: DictConfig) -> DictConfig:
    """`cfg` less its `hydra` node, as a job sees its config (in place; the HydraConfig set keeps it)."""
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def help_page(overrides: Sequence[str] = ()) -> str:
    """What `python run.py --help` prints: conf/hydra/help/'s template over the composed config. Hydra's own --help
    first lists every config group's options for $APP_CONFIG_GROUPS, which the template does not use: that was 6.3
    of its 7.7 s under a profiler."""
    return string.Template(compose_with_hydra(overrides).hydra.help.template).safe_substitute()
