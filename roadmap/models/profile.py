"""Parameters and GMACs, counted the way the paper counts "FLOPs" (multiply-accumulates of conv and linear)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@torch.no_grad()
def profile(model: nn.Module, image_size: int = 224, in_chans: int = 3) -> dict[str, float]:
    """`params` (all parameters) and `gmacs` for one image; torch's counter reports FLOPs = 2 x MACs."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(1, in_chans, image_size, image_size, device=device))
    model.train(was_training)
    return {"params": sum(p.numel() for p in model.parameters()),
            "gmacs": counter.get_total_flops() / 2e9}
