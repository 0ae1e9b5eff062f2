"""Residual block and stem/downsample layers of the roadmap network.

One `Block` covers every block of the paper's Figure 2/3: the ResNet bottleneck (1x1 reduce -> kxk ->
1x1 expand), its ResNeXt-ified form (depthwise kxk), the inverted bottleneck with the depthwise conv in the
middle (step 04) or moved up (step 05), and the ConvNeXt block (one norm, one activation, layer scale).
Which convs exist and where norms and activations sit is data, decided by the constructor flags.
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import DropPath, LayerNorm2d, register_notrace_module
from timm.layers.grn import GlobalResponseNorm
from torchvision.ops import Permute

ACT_LAYERS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "gelu": nn.GELU,
}
NORM_LAYERS: dict[str, Callable[[int], nn.Module]] = {
    "batchnorm": nn.BatchNorm2d,
    "layernorm": LayerNorm2d,  # eps 1e-6, as ConvNeXt
}


@register_notrace_module   # FX (timm's feature extraction) keeps it whole, as it keeps BatchNorm2d
class BatchNormNHWC(nn.BatchNorm2d):
    """BatchNorm2d for an NHWC tensor: seen as NCHW it is channels-last, which BatchNorm2d handles natively."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BatchNorm2d.forward with its statistics tracked at a fixed momentum, written out: TorchScript has no super()
        momentum = self.momentum
        assert momentum is not None, "BatchNormNHWC keeps an exponential average of the statistics (a momentum)"
        if self.training and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        return F.batch_norm(x.permute(0, 3, 1, 2), self.running_mean, self.running_var, self.weight, self.bias,
                            self.training, momentum, self.eps).permute(0, 2, 3, 1)


# The same norms over the last dim, for the channels-last parts of an inverted block.
NHWC_NORM_LAYERS: dict[str, Callable[[int], nn.Module]] = {
    "batchnorm": BatchNormNHWC,
    "layernorm": partial(nn.LayerNorm, eps=1e-6),
}


class Pointwise(nn.Conv2d):
    """A 1x1 conv applied to an NHWC tensor as one matrix multiply over channels (timm's ConvNeXt uses Linear).

    It stays a Conv2d (weight out x in x 1 x 1, the same init and state-dict keys as the NCHW conv it stands for)
    because it is one; only the layout differs. On CPU the GEMM is faster than oneDNN's 1x1 conv (results/bench/
    README.md, "What profiling changed in the model").
    """

    def __init__(self, in_chs: int, out_chs: int, *, bias: bool):
        super().__init__(in_chs, out_chs, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.flatten(1), self.bias)


def conv(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1, *,
         bias: bool) -> nn.Conv2d:
    """'Same' padding conv; a bias only where no BatchNorm follows (BN's shift makes it redundant)."""
    return nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding=kernel_size // 2, groups=groups,
                     bias=bias)


def _permuted(layers: list[tuple[str, nn.Module, bool]]) -> OrderedDict[str, nn.Module]:
    """Chain (name, layer, wants NHWC) with a permute wherever the layout changes; NCHW in and out."""
    chain: OrderedDict[str, nn.Module] = OrderedDict()
    current = False
    for name, layer, wants_nhwc in [*layers, ("", None, False)]:
        if wants_nhwc != current:
            n = sum(key.startswith("to_") for key in chain)
            chain[f"to_{'nhwc' if wants_nhwc else 'nchw'}{n}"] = Permute([0, 2, 3, 1] if wants_nhwc else [0, 3, 1, 2])
            current = wants_nhwc
        if layer is not None:
            chain[name] = layer
    return chain


class Block(nn.Module):
    """A residual block: three convs in a branch, a shortcut, optional layer scale and stochastic depth.

    Conv order (`conv1`, `conv2`, `conv3`), with C = `width`:
      bottleneck:                1x1 in->C, kxk C->C (groups C if depthwise), 1x1 C->4C    (output 4C)
      inverted, dw middle:       1x1 in->4C, kxk 4C->4C depthwise, 1x1 4C->C               (output C)
      inverted, dw top:          kxk in->in depthwise, 1x1 in->4C, 1x1 4C->C                (output C)
    `norms='every'` puts a norm after each conv; `'single'` keeps one, after the spatial conv (the ConvNeXt
    block). `activations='every'` puts one after each conv but the last and one after the addition (ResNet);
    `'single'` keeps one, on the 4x hidden expansion (between the two 1x1 convs when dw is on top). `grn` adds
    ConvNeXt V2's Global Response Normalization after that activation (Woo et al., CVPR 2023).
    A stride > 1 sits on the spatial conv (torchvision's ResNet v1.5), with a conv+norm projection shortcut.

    Layout: a bottleneck is NCHW throughout. An inverted block works channels-last (NHWC) everywhere but its kxk
    conv, so its 1x1 convs are matrix multiplies over channels (`Pointwise`) and its norms act on the last dim:
    the second of the two equivalent ConvNeXt layouts, which timm also picks, for speed (results/bench/).
    """

    def __init__(self, in_chs: int, width: int, *, stride: int = 1, block: str = "bottleneck",
                 depthwise: bool = False, dw_position: str = "middle", kernel_size: int = 3,
                 act: str = "relu", activations: str = "every", norm: str = "batchnorm",
                 norms: str = "every", grn: bool = False, layer_scale_init: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        hidden = 4 * width
        if block == "bottleneck":
            out_chs = hidden
            specs = [(in_chs, width, 1, 1), (width, width, kernel_size, width if depthwise else 1),
                     (width, out_chs, 1, 1)]
            spatial, expand = 1, None
        elif dw_position == "middle":
            out_chs = width
            specs = [(in_chs, hidden, 1, 1), (hidden, hidden, kernel_size, hidden if depthwise else 1),
                     (hidden, out_chs, 1, 1)]
            spatial, expand = 1, 0
        else:
            out_chs = width
            specs = [(in_chs, in_chs, kernel_size, in_chs if depthwise else 1), (in_chs, hidden, 1, 1),
                     (hidden, out_chs, 1, 1)]
            spatial, expand = 0, 1

        nhwc = block == "inverted"
        layers: list[tuple[str, nn.Module, bool]] = []   # (name, layer, wants NHWC)
        for i, (cin, cout, k, groups) in enumerate(specs):
            has_norm = norms == "every" or i == spatial
            has_act = (activations == "every" and i < 2) or (activations == "single" and i == expand)
            bias = not (has_norm and norm == "batchnorm")
            if nhwc and k == 1:
                layers.append((f"conv{i + 1}", Pointwise(cin, cout, bias=bias), True))
            else:
                layers.append((f"conv{i + 1}", conv(cin, cout, k, stride if i == spatial else 1, groups, bias=bias),
                               False))
            if has_norm:
                layers.append((f"norm{i + 1}", (NHWC_NORM_LAYERS if nhwc else NORM_LAYERS)[norm](cout), nhwc))
            if has_act:
                layers.append((f"act{i + 1}", ACT_LAYERS[act](), nhwc))
            if grn and i == expand:   # ConvNeXt V2: Global Response Normalization on the 4x hidden features
                layers.append((f"grn{i + 1}", GlobalResponseNorm(cout, channels_last=nhwc), nhwc))
        self.branch = nn.Sequential(_permuted(layers))
        self.gamma = nn.Parameter(torch.full((out_chs,), layer_scale_init)) if layer_scale_init > 0 else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if stride != 1 or in_chs != out_chs:
            self.shortcut = nn.Sequential(OrderedDict(
                conv=conv(in_chs, out_chs, 1, stride, bias=norm != "batchnorm"),
                norm=NORM_LAYERS[norm](out_chs)))
        else:
            self.shortcut = nn.Identity()
        self.post_act = ACT_LAYERS[act]() if activations == "every" else nn.Identity()
        self.out_chs = out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        if self.gamma is not None:
            out = out * self.gamma.reshape(1, -1, 1, 1)
        out = self.drop_path(out)
        out += self.shortcut(x)   # in place, as torchvision's ResNet: one activation-sized allocation less
        return self.post_act(out)


def stem(kind: str, in_chans: int, width: int, norm: str, act: str) -> nn.Sequential:
    """ResNet stem (7x7/2 conv, norm, act, 3x3/2 max-pool) or the 'patchify' stem (4x4/4 conv, norm)."""
    bias = norm != "batchnorm"
    if kind == "resnet":
        return nn.Sequential(OrderedDict(
            conv=conv(in_chans, width, 7, 2, bias=bias), norm=NORM_LAYERS[norm](width),
            act=ACT_LAYERS[act](), pool=nn.MaxPool2d(3, 2, 1)))
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(in_chans, width, 4, 4, bias=bias), norm=NORM_LAYERS[norm](width)))


def downsample_layer(in_chs: int, out_chs: int, norm: str) -> nn.Sequential:
    """ConvNeXt's separate downsampling layer between stages: norm, then a 2x2 stride-2 conv."""
    return nn.Sequential(OrderedDict(norm=NORM_LAYERS[norm](in_chs), conv=nn.Conv2d(in_chs, out_chs, 2, 2)))
