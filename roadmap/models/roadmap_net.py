"""RoadmapNet: one configurable network from ResNet-50 to ConvNeXt-T (Liu et al., CVPR 2022, Fig. 2)."""
# NOTE no `from __future__ import annotations`: FX writes `forward`'s annotations into the code it generates, where
# TorchScript (timm's FX + script tests) cannot resolve them as strings
import math
import re
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial
from typing import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from timm.layers import make_divisible, trunc_normal_
from timm.models._features import feature_take_indices

from roadmap.models.blocks import ACT_LAYERS, NORM_LAYERS, Block, downsample_layer
from roadmap.models.blocks import stem as make_stem

CHOICES = {
    "stem": ("resnet", "patchify"),
    "block": ("bottleneck", "inverted"),
    "dw_position": ("middle", "top"),
    "act": tuple(ACT_LAYERS),
    "activations": ("every", "single"),
    "norm": tuple(NORM_LAYERS),
    "norms": ("every", "single"),
    "downsample": ("in_block", "separate"),
    "weight_init": ("resnet", "convnext"),
}


GLOBAL_POOLS = ("avg", "")   # timm's names: the mean over the map, or none (the head then keeps the map)


def _invalid(field: str, value: object, allowed: str) -> ValueError:
    return ValueError(f"model.{field}={value!r} is invalid: allowed {allowed}")


@contextmanager
def _norm_stats_kept(block: nn.Module) -> Iterator[None]:
    """Recomputing a checkpointed block in backward runs its BatchNorms in training mode a second time, which would
    move their running statistics twice a step; they are put back as the first forward left them."""
    stats = [b for m in block.modules() if isinstance(m, nn.BatchNorm2d) for b in m.buffers()]
    kept = [b.clone() for b in stats]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, k in zip(stats, kept):
                b.copy_(k)


def _contexts(block: nn.Module) -> tuple[AbstractContextManager, AbstractContextManager]:
    """torch's `context_fn`: nothing around the forward, the norm statistics kept around the recomputation."""
    return nullcontext(), _norm_stats_kept(block)


def checkpointed(stages: Iterable[nn.Sequential], x: torch.Tensor) -> torch.Tensor:
    """The blocks of `stages` in sequence, each under activation checkpointing: only its input is kept for backward,
    which runs it again (the same paths dropped: the RNG state is replayed) to get the activations it needs."""
    for stage in stages:
        for block in stage:
            x = checkpoint(block, x, use_reentrant=False, context_fn=partial(_contexts, block))
    return x


class RoadmapNet(nn.Module):
    """ResNet-50 ... ConvNeXt-T as one network; every roadmap step flips constructor flags.

    Flag (paper's name) — the step that flips it:
      depths              stage compute ratio: [3,4,6,3] -> [3,3,9,3]            step 02a
      stem                'resnet' -> 'patchify' (4x4 stride-4 "patchify" stem)    step 02
      depthwise           dense -> depthwise spatial conv (ResNeXt-ify)           step 03a
      widths, stem_width  network width 64 -> 96 (ResNeXt-ify)                     step 03
      block               'bottleneck' -> 'inverted' (inverted bottleneck)         step 04
      dw_position         'middle' -> 'top' (moving up the depthwise conv)         step 05a
      kernel_size         3 -> 7 (large kernel; 5/9/11 are the paper's sweep)      step 05
      act                 'relu' -> 'gelu' (replacing ReLU with GELU)              step 06a
      activations         'every' -> 'single' (fewer activation functions)         step 06b
      norms               'every' -> 'single' (fewer normalization layers)         step 06c
      norm                'batchnorm' -> 'layernorm' (substituting BN with LN)     step 06
      downsample          'in_block' -> 'separate' (separate downsampling layers)  step 07
      grn                 Global Response Normalization, no layer scale (ConvNeXt V2) step 08
      layer_scale_init, drop_path_rate: training settings (paper Table 5), on from step 01.
    `widths` are the bottleneck (inner) widths for 'bottleneck' blocks, whose output is 4x; for 'inverted'
    blocks they are the residual widths and the hidden width is 4x. `width_mult` scales all widths (cheap
    proxies); `weight_init` picks torchvision's ResNet init or ConvNeXt's truncated normal (std 0.02).

    timm's model API, as its ConvNeXt has it: `feature_info` (one entry per stage, reductions 4/8/16/32),
    `forward_intermediates` / `prune_intermediate_layers` (so `features_only=True` backbones work),
    `reset_classifier` / `get_classifier`, and `set_grad_checkpointing`. None of it adds a parameter or draws from
    the RNG at construction: a network is built exactly as before. `num_classes=0` leaves out the classifier.
    """

    def __init__(self, depths: Sequence[int] = (3, 4, 6, 3), widths: Sequence[int] = (64, 128, 256, 512),
                 stem_width: int = 64, stem: str = "resnet", block: str = "bottleneck",
                 depthwise: bool = False, dw_position: str = "middle", kernel_size: int = 3,
                 act: str = "relu", activations: str = "every", norm: str = "batchnorm",
                 norms: str = "every", downsample: str = "in_block", layer_scale_init: float = 0.0,
                 drop_path_rate: float = 0.0, num_classes: int = 1000, in_chans: int = 3,
                 width_mult: float = 1.0, weight_init: str = "resnet", grn: bool = False):
        super().__init__()
        depths, widths = list(depths), list(widths)
        self._validate(locals())
        widths = [make_divisible(w * width_mult, 8) for w in widths]
        stem_width = make_divisible(stem_width * width_mult, 8)
        self.num_classes, self.in_chans = num_classes, in_chans
        self.separate_downsample = downsample == "separate"
        self.global_pool = "avg"
        self.grad_checkpointing = False

        self.stem = make_stem(stem, in_chans, stem_width, norm, act)
        # linear stochastic-depth ramp; computed on the CPU whatever device the model is built on (timm's meta tests)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        stages, chs, idx, self.feature_info = [], stem_width, 0, []
        for i, (depth, width) in enumerate(zip(depths, widths)):
            layers: list[nn.Module] = []
            out_chs = width * (4 if block == "bottleneck" else 1)
            if downsample == "separate" and i > 0:
                layers.append(downsample_layer(chs, out_chs, norm))
                chs = out_chs
            for j in range(depth):
                stride = 2 if downsample == "in_block" and i > 0 and j == 0 else 1
                layers.append(Block(chs, width, stride=stride, block=block, depthwise=depthwise,
                                    dw_position=dw_position, kernel_size=kernel_size, act=act,
                                    activations=activations, norm=norm, norms=norms, grn=grn,
                                    layer_scale_init=layer_scale_init, drop_path=dpr[idx]))
                chs, idx = out_chs, idx + 1
            stages.append(nn.Sequential(*layers))
            # both stems reduce by 4 and every later stage halves the map, in a block or in its downsampling layer
            self.feature_info.append({"num_chs": chs, "reduction": 4 * 2 ** i, "module": f"stages.{i}"})
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = chs
        # ConvNeXt normalizes the pooled features; ResNet feeds them straight to the classifier.
        self.head_norm = NORM_LAYERS[norm](chs) if downsample == "separate" else nn.Identity()
        self.fc = nn.Linear(chs, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_resnet if weight_init == "resnet" else self._init_convnext)

    @staticmethod
    def _validate(args: dict) -> None:
        for field, allowed in CHOICES.items():
            if args[field] not in allowed:
                raise _invalid(field, args[field], " | ".join(map(repr, allowed)))
        k = args["kernel_size"]
        if not isinstance(k, int) or isinstance(k, bool) or k < 3 or k % 2 == 0:
            raise _invalid("kernel_size", k, "an odd integer >= 3")
        if len(args["depths"]) != len(args["widths"]):
            raise _invalid("depths", args["depths"], f"one entry per stage, as widths ({len(args['widths'])})")
        for field in ("depths", "widths"):
            if not args[field] or any(not isinstance(v, int) or v < 1 for v in args[field]):
                raise _invalid(field, args[field], "a non-empty list of positive integers")
        if args["block"] == "bottleneck":
            for field, ok in (("dw_position", "middle"), ("activations", "every"), ("norms", "every")):
                if args[field] != ok:
                    raise _invalid(field, args[field], f"{ok!r} with block='bottleneck' ({args[field]!r} needs block='inverted')")
        if args["grn"] and (args["block"] != "inverted" or args["activations"] != "single"):
            raise _invalid("grn", args["grn"], "true only with block='inverted' and activations='single' "
                                               "(GRN follows the one activation on the 4x hidden features)")
        if args["layer_scale_init"] < 0:
            raise _invalid("layer_scale_init", args["layer_scale_init"], "a number >= 0 (0 = off)")
        if not 0 <= args["drop_path_rate"] < 1:
            raise _invalid("drop_path_rate", args["drop_path_rate"], "a number in [0, 1)")
        if args["width_mult"] <= 0:
            raise _invalid("width_mult", args["width_mult"], "a number > 0")

    @staticmethod
    def _init_resnet(m: nn.Module) -> None:
        """torchvision's ResNet init: Kaiming-normal (fan_out) convs, unit norms, default Linear."""
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @staticmethod
    def _init_convnext(m: nn.Module) -> None:
        """The official ConvNeXt init: truncated normal (std 0.02) convs and Linear, zero biases."""
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def group_matcher(self, coarse: bool = False) -> Callable[[str], tuple[float, ...]]:
        """Parameter groups for timm's layer-wise lr decay (`recipe.layer_decay`), formed as the official ConvNeXt
        fine-tuning code forms them: the stem, stage 0, stage 1, stage 2 in threes of blocks, stage 3, then the
        head (timm puts unmatched parameters last); a separate downsampling layer joins the group after it.
        timm numbers the groups consecutively: that is the official numbering for 27-block stages (ConvNeXt-B),
        while for ConvNeXt-T the official code skips 6 numbers, decaying its lower stages 0.7^6 further."""
        def group(name: str) -> tuple[float, ...]:
            if name.startswith("stem."):
                return (0,)
            found = re.match(r"stages\.(\d+)\.(\d+)\.", name)
            if found is None:
                return (math.inf,)
            stage, index = int(found[1]), int(found[2])
            block = max(0, index - int(self.separate_downsample and stage > 0))
            return (stage + 1, block // 3 if stage == 2 and not coarse else 0)
        return group

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint every block (and downsampling layer) of the stages: activations are recomputed in backward
        instead of kept, for less memory at the cost of a second forward (`trainer.grad_checkpointing`)."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def set_global_pool(self, global_pool: str) -> None:
        """'avg' (the network's own) or '' (none: the head keeps the map, classified at every position)."""
        if global_pool not in GLOBAL_POOLS:
            raise ValueError(f"global_pool={global_pool!r} is invalid: allowed {' | '.join(map(repr, GLOBAL_POOLS))}")
        self.global_pool = global_pool

    def reset_classifier(self, num_classes: int, global_pool: str | None = None, reset_other: bool = False) -> None:
        """A new classifier for `num_classes` (0: none, the head returns its features), on the device and in the
        dtype of the rest; `global_pool` as in `set_global_pool` (None keeps it); `reset_other` drops the head norm."""
        self.num_classes = num_classes
        if global_pool is not None:
            self.set_global_pool(global_pool)
        if reset_other:
            self.head_norm = nn.Identity()
        like = self.stem.conv.weight
        self.fc = (nn.Linear(self.num_features, num_classes, device=like.device, dtype=like.dtype).train(self.training)
                   if num_classes > 0 else nn.Identity())

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False
                              ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's: the stages' output maps at `indices` (all, the last n, or those listed), with the final map
        unless `intermediates_only`; `stop_early` runs no stage past the last one taken. `norm` has nothing to do:
        no norm sits between the last stage and the head (ConvNeXt's head norm follows the pooling)."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt={output_fmt!r} is invalid: allowed 'NCHW'")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        intermediates = []
        x = self.stem(x)
        stages = self.stages[:max_index + 1] if stop_early else self.stages
        for i, stage in enumerate(stages):
            x = checkpointed([stage], x) if self.grad_checkpointing else stage(x)
            if i in take_indices:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """timm's: drop the stages after the last of `indices` (and then the head, which fits only the last stage);
        `prune_head` drops it anyway. Returns the absolute indices kept. `prune_norm`: see `forward_intermediates`."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        prune_end = max_index < len(self.stages) - 1
        self.stages = self.stages[:max_index + 1]
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "", reset_other=True)
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpointed(self.stages, x)
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = self.head_norm(x.mean((2, 3), keepdim=True)).flatten(1)
            return x if pre_logits else self.fc(x)
        x = self.head_norm(x)   # no pooling: the classifier acts at every position (a 1x1 conv, as in timm's heads)
        return x if pre_logits else self.fc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
