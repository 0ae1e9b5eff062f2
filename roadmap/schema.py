"""Typed schemas for the `model`, `recipe`, `data` and `trainer` config groups (Hydra structured configs).

Each YAML file of those groups starts from its schema (`defaults: [<schema>, _self_]`), so a wrong type or an
unknown key fails when Hydra composes, naming the full key, before anything runs. The builders' schemas are
derived from their constructors' signatures, so a key's type, default and meaning (the docstring) live in one
place; the recipe and trainer keys are documented here, their values in conf/recipe/ and conf/trainer/.
The signatures are read from the builders' source, not imported: composing a config (for `--help`, `--cfg` or a
config error) then never loads torch or Lightning, which the builders import.
"""
from __future__ import annotations

import ast
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any, ClassVar, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

PRIMITIVES = (int, float, bool, str)

# -- what a key changes: each key's kind is declared once, with the key --------------------------------------------
DESIGN = "design"    # what a paper row describes (model, recipe): in the run directory's name and the fingerprint
BUDGET = "budget"    # what a design is trained on and for how long (data, schedule, precision, seed, a proxy's width):
                     # in both too, but a row varied in these alone is still the paper's row (roadmap.report)
RUNTIME = "runtime"  # where and how fast a job runs (paths, loggers, devices, loader processes): in neither, so a
                     # finished run rerun with another value is the same run, skipped or resumed (roadmap.runs)
KINDS = (DESIGN, BUDGET, RUNTIME)


def keyed(kind: str, default: Any = MISSING, *, ours: bool = False, added: bool = False) -> Any:
    """A schema field with its kind, where the field's schema kind (`KIND`) does not fit it. `ours`: a trainer key
    that train.py applies to the model or the process, not a Lightning Trainer argument. `added`: a key added after
    runs began to record their config, whose default trains what a record without it trained (`runs.same_run`)."""
    assert kind in KINDS, kind
    metadata = {"kind": kind, "ours": ours, "added": added}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda d=default: list(d), metadata=metadata)
    return field(default=default, metadata=metadata)


def _field_type(annotation: Any) -> Any:
    """A constructor's annotation as OmegaConf can enforce it: primitives, Optional, lists; else Any."""
    if annotation in PRIMITIVES:
        return annotation
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            inner = _field_type(rest[0])
            return Any if inner is Any else Optional[inner]
        return Any   # int | str ("auto") and the like: checked by the constructor
    if origin in (list, Sequence, tuple) and args and args[0] in PRIMITIVES:
        return List[args[0]]  # type: ignore[valid-type]
    return Any   # mappings too: they are often interpolations (data.augment: ${recipe.augment}), typed there


PACKAGE_ROOT = Path(__file__).resolve().parents[1]   # holds roadmap/
# What a builder's annotations may name, as typing objects; an annotation naming anything else is typed Any, as
# `_field_type` would type it anyway (OmegaConf enforces primitives, Optional and lists of primitives only)
ANNOTATION_NAMES = {"int": int, "float": float, "bool": bool, "str": str, "list": list, "tuple": tuple,
                    "dict": dict, "None": None, "Any": Any, "Optional": Optional, "List": List,
                    "Sequence": Sequence, "Mapping": Mapping, "Callable": Callable}


def _definition(target: str) -> ast.stmt:
    """The top-level class, function or assignment `target` (a dotted path) names, from its module's source."""
    module, _, name = target.rpartition(".")
    tree = ast.parse((PACKAGE_ROOT / Path(*module.split("."))).with_suffix(".py").read_text())
    for node in tree.body:
        names = ([t.id for t in node.targets if isinstance(t, ast.Name)] if isinstance(node, ast.Assign)
                 else [getattr(node, "name", None)])
        if name in names:
            return node
    raise LookupError(f"{target} is not defined at the top of {module}")


def source_constant(target: str) -> Any:
    """A module-level literal (e.g. a dict of defaults), read without importing its module."""
    node = _definition(target)
    assert isinstance(node, ast.Assign), f"{target} is not an assignment"
    return ast.literal_eval(node.value)


def _annotation(node: ast.expr | None) -> Any:
    if node is None:
        return Any
    try:
        return eval(ast.unparse(node), {"__builtins__": {}}, dict(ANNOTATION_NAMES))
    except Exception:   # a name outside ANNOTATION_NAMES (nn.Module, a class): nothing OmegaConf could enforce
        return Any


def source_parameters(target: str) -> list[tuple[str, Any, Any]]:
    """(name, annotation, default or MISSING) of the keyword parameters of `target`, a class (its __init__ less
    `self`) or a function, read from its source: the builders import torch, their signatures need not."""
    node = _definition(target)
    if isinstance(node, ast.ClassDef):
        node = next(n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    assert isinstance(node, ast.FunctionDef), f"{target} is not a class or a function"
    args = node.args
    positional = (args.posonlyargs + args.args)[1 if node.name == "__init__" else 0:]
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    return [(arg.arg, _annotation(arg.annotation), MISSING if default is None else ast.literal_eval(default))
            for arg, default in [*zip(positional, defaults), *zip(args.kwonlyargs, args.kw_defaults)]]


def signature_schema(name: str, target: str, kind: str, kinds: Mapping[str, str] | None = None,
                     added: Sequence[str] = (), required: Sequence[str] = (),
                     extra: Sequence[tuple[str, Any, Any]] = ()) -> type:
    """A dataclass with the keyword parameters of `target` (a dotted path: types and defaults from its signature),
    `_target_` and the `extra` (name, type, field) keys the job reads beside them; the `required` ones have no
    default: each config must set them (a YAML's `???` cannot unset a default). Its keys are of `kind`, but those
    `kinds` names; `added` as in `keyed`."""
    fields: list[tuple[str, Any, Any]] = [("_target_", str, field(default=target))]
    for param, annotation, default in source_parameters(target):
        default = MISSING if param in required else default
        fields.append((param, _field_type(annotation),
                       keyed((kinds or {}).get(param, kind), default, added=param in added)))
    return make_dataclass(name, [*fields, *extra], namespace={"KIND": kind})


# The classic recipe's augmentation (roadmap.data.transforms), the defaults of the recipe's `augment` keys
CLASSIC_AUGMENT = source_constant("roadmap.data.transforms.CLASSIC_AUGMENT")


@dataclass
class AugmentSchema:
    """timm's train transform keys (`roadmap.data.transforms`); unset keys take the classic recipe's values."""
    auto_augment: Optional[str] = CLASSIC_AUGMENT["auto_augment"]  # timm's policy string, e.g. rand-m9-mstd0.5-inc1
    re_prob: float = CLASSIC_AUGMENT["re_prob"]           # random erasing probability
    re_mode: str = CLASSIC_AUGMENT["re_mode"]             # erased pixels: const | rand | pixel (per-pixel noise)
    re_count: int = CLASSIC_AUGMENT["re_count"]           # at most this many boxes an image
    interpolation: str = CLASSIC_AUGMENT["interpolation"]  # resize filter: bilinear | bicubic
    scale: List[float] = field(default_factory=lambda: list(CLASSIC_AUGMENT["scale"]))  # RandomResizedCrop area
    hflip: float = CLASSIC_AUGMENT["hflip"]               # horizontal flip probability
    color_jitter: Optional[float] = CLASSIC_AUGMENT["color_jitter"]


# false | true (the published weights of the model's architecture) | a weights file: `roadmap.models.weights`
PRETRAINED = ("pretrained", Any, keyed(DESIGN, False, added=True))
# width_mult: the CPU budgets' narrower proxy of a row, not another design
RoadmapNetSchema = signature_schema("RoadmapNetSchema", "roadmap.models.roadmap_net.RoadmapNet", DESIGN,
                                    kinds={"width_mult": BUDGET}, extra=[PRETRAINED])
DataSchema = signature_schema(   # augment: typed in recipe
    "DataSchema", "roadmap.data.datamodule.ImageDataModule", BUDGET, added=("top_classes",), required=("num_classes",),
    kinds=dict.fromkeys(("root", "cache_dir", "num_workers", "batch_processes", "worker_nice", "pin_memory",
                         "persistent_workers", "download"), RUNTIME))


@dataclass
class RecipeSchema:
    """A training recipe (conf/recipe/): what `roadmap.module.Classifier` trains with."""
    KIND: ClassVar[str] = DESIGN
    name: str = MISSING
    epochs: int = MISSING                   # the recipe's schedule length; trainer.max_epochs may compress it
    optimizer: str = MISSING                # timm's optimizer name: momentum (SGD) | adamw | ...
    momentum: Optional[float] = MISSING
    betas: Optional[List[float]] = MISSING
    lr: float = MISSING                     # per base_batch_size images; scaled by the effective batch size
    lr_scaling: str = MISSING               # lr x (effective batch / base_batch_size)^k: linear | sqrt | none
    base_batch_size: int = MISSING
    weight_decay: float = MISSING
    schedule: str = MISSING                 # cosine (linear warmup then cosine, per step) | step
    decay_epochs: Optional[float] = MISSING  # step schedule: lr x decay_rate every decay_epochs (of `epochs`)
    decay_rate: Optional[float] = MISSING
    warmup_epochs: float = MISSING          # of `epochs`; compressed proportionally if the run is shorter
    min_lr: float = MISSING
    label_smoothing: float = MISSING
    mixup: float = MISSING                  # alphas; 0 turns each off
    cutmix: float = MISSING
    mix_prob: float = MISSING
    switch_prob: float = MISSING
    drop_path_rate: float = MISSING         # stochastic depth
    layer_scale_init: float = MISSING       # 0: no layer scale
    ema: bool = MISSING                     # an EMA of the weights, evaluated beside them
    ema_decay: float = MISSING
    grad_clip: Optional[float] = MISSING
    layer_decay: Optional[float] = keyed(DESIGN, None, added=True)   # layer-wise lr decay (fine-tuning); null: one lr
    head_init_scale: float = keyed(DESIGN, 1.0, added=True)   # a classifier re-initialised for fine-tuning starts x this
    augment: AugmentSchema = field(default_factory=AugmentSchema)


@dataclass
class TrainerSchema:
    """Lightning Trainer arguments (conf/trainer/default.yaml), plus the model-side switches train.py applies."""
    KIND: ClassVar[str] = BUDGET
    accelerator: str = keyed(RUNTIME)       # auto | cpu | gpu
    devices: Any = keyed(RUNTIME)           # auto | a count | a list of ids
    num_nodes: int = keyed(RUNTIME)
    strategy: str = keyed(RUNTIME)          # auto: DDP when several devices or nodes are used
    precision: str = MISSING                # auto: bf16-mixed on GPU and on CPUs with native bf16, else 32-true
    max_epochs: int = MISSING
    accumulate_grad_batches: int = MISSING
    gradient_clip_val: Optional[float] = MISSING
    deterministic: Any = MISSING            # true | false | warn
    benchmark: Any = keyed(RUNTIME)         # cudnn.benchmark; auto: on with a GPU unless deterministic
    log_every_n_steps: int = keyed(RUNTIME)
    limit_train_batches: Any = MISSING      # null | a batch count (int) | a fraction (float)
    limit_val_batches: Any = MISSING
    fast_dev_run: Any = MISSING             # false | true | a batch count
    profiler: Optional[str] = None          # simple | advanced | pytorch
    channels_last: Any = keyed(RUNTIME, ours=True)   # auto: on with a GPU or oneDNN on the CPU (x86), off elsewhere
    cpu_threads: Any = keyed(RUNTIME, ours=True)     # torch threads on CPU; auto: the cores per process
    compile: bool = keyed(RUNTIME, ours=True)        # torch.compile the model
    efficiency: bool = keyed(RUNTIME, False, ours=True)   # after training, time the model alone: summary.job_efficiency
    grad_checkpointing: bool = keyed(RUNTIME, False, ours=True)   # recompute activations in backward: less memory,
                                                                  # same gradients (README)


@dataclass
class TimmSchema:
    """A timm model as timm builds it (e.g. the dog-breed report's MobileNetV2)."""
    KIND: ClassVar[str] = DESIGN
    _target_: str = "timm.create_model"
    model_name: str = MISSING               # timm's name
    pretrained: Any = keyed(DESIGN, False, added=True)   # false | true (published weights) | a weights file
    num_classes: int = MISSING
    drop_path_rate: float = MISSING


@dataclass
class ViTSchema(TimmSchema):
    """A timm transformer baseline, scaled by `roadmap.models.scaled_vit`."""
    _target_: str = "roadmap.models.scaled_vit"
    embed_dim: int = MISSING                # timm's; x width_mult
    num_heads: Any = MISSING                # an int, or one per stage (Swin); x width_mult
    width_mult: float = keyed(BUDGET, 1.0)
    img_size: int = MISSING


@dataclass
class SwinSchema(ViTSchema):
    window_size: int = MISSING              # must tile the token grid of every stage


SCHEMAS = {("model", "roadmap_net_schema"): RoadmapNetSchema, ("model", "timm_schema"): TimmSchema,
           ("model", "vit_schema"): ViTSchema,
           ("model", "swin_schema"): SwinSchema, ("recipe", "recipe_schema"): RecipeSchema,
           ("data", "data_schema"): DataSchema, ("trainer", "trainer_schema"): TrainerSchema}


# The kinds of conf/config.yaml's own keys and of the config groups without a schema
TOP_LEVEL_KINDS = {"seed": BUDGET, "group": BUDGET, "name": DESIGN, "roadmap": DESIGN, "force": RUNTIME,
                   "ckpt_path": RUNTIME, "checkpoint": RUNTIME, "eval_only": RUNTIME, "paths": RUNTIME,
                   "logger": RUNTIME, "callbacks": RUNTIME, "hydra": RUNTIME}


def _fields(group: str) -> list[dataclasses.Field]:
    return [f for (g, _), schema in SCHEMAS.items() if g == group for f in dataclasses.fields(schema)]


def kind(key: str) -> str:
    """A dotted key's kind (`trainer.devices` -> runtime, `model.kernel_size` -> design). An override's key may
    carry Hydra's +/~ and name a group (`data`, `hydra/launcher`); a key no schema declares, such as
    `+model.new_flag`, counts as its group's kind, and outside any group as design: it names its own run."""
    top, _, rest = key.lstrip("+~").replace("/", ".").partition(".")
    if top in TOP_LEVEL_KINDS:
        return TOP_LEVEL_KINDS[top]
    schemas = [schema for (g, _), schema in SCHEMAS.items() if g == top]
    if not schemas:
        return DESIGN
    name = rest.partition(".")[0]
    declared = next((f for f in _fields(top) if f.name == name), None)
    return declared.metadata.get("kind", schemas[0].KIND) if declared else schemas[0].KIND


def keys_with(flag: str, group: str) -> list[str]:
    """The keys of `group` whose schema field sets `flag` (`ours`, `added`), in declaration order."""
    return list(dict.fromkeys(f.name for f in _fields(group) if f.metadata.get(flag)))


def default(key: str) -> Any:
    """A dotted config key's schema default (`recipe.layer_decay` -> None), from the first schema of its group
    that has the field."""
    group, _, name = key.partition(".")
    for (schema_group, _), schema in SCHEMAS.items():
        fields = {f.name: f for f in dataclasses.fields(schema)}
        if schema_group == group and name in fields and fields[name].default is not MISSING:
            return fields[name].default
    raise KeyError(f"{key} has no schema default")


def config_error(err: BaseException) -> str:
    """A composition error as one line naming the full key and what it allows (Hydra prints several)."""
    cause = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException) else err
    key = getattr(cause, "full_key", None)
    if not isinstance(cause, OmegaConfBaseException) or not key:
        return " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and dataclasses.is_dataclass(cause.object_type):
        parent = key.rpartition(".")[0] or "the config"
        keys = ", ".join(f.name for f in dataclasses.fields(cause.object_type) if not f.name.startswith("_"))
        return f"{key} is not a key of {parent}; allowed: {keys}"
    return f"{key}: {cause.msg.splitlines()[0]}"


def store() -> None:
    """Put the schemas in Hydra's ConfigStore, where the group YAML files name them in their defaults."""
    cs = ConfigStore.instance()
    for (group, name), schema in SCHEMAS.items():
        cs.store(group=group, name=name, node=schema)
