"""timm's model API on RoadmapNet, as timm's ConvNeXt has it, and a roadmap step as the backbone of torchvision's
detection and a segmentation head: feature maps, intermediates, classifier resets, gradient checkpointing."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.segmentation.fcn import FCNHead
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
STEPS = ["step00_baseline", "step07_separate_downsampling"]   # both stems, both kinds of downsampling


def _model(step: str, **kwargs) -> nn.Module:
    return timm.create_model(f"roadmap_{step}", width_mult=0.25, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS)
def test_features_only_maps_at_reductions_4_to_32(step):
    model = _model(step)
    body = _model(step, features_only=True, out_indices=(1, 2, 3))
    assert body.feature_info.reduction() == [8, 16, 32]
    assert body.feature_info.channels() == [info["num_chs"] for info in model.feature_info[1:]]
    assert [m for m in body.feature_info.module_name()] == ["stages.1", "stages.2", "stages.3"]
    maps = body(X)
    assert [tuple(m.shape) for m in maps] == [(2, c, 32 // r, 32 // r) for c, r in
                                               zip(body.feature_info.channels(), body.feature_info.reduction())]
    assert model.feature_info[0]["reduction"] == 4 and model.feature_info[-1]["num_chs"] == model.num_features


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS)
def test_both_feature_wrappers_give_the_same_maps(step):
    """timm's module-walking wrapper (the default) and the one calling `forward_intermediates` agree exactly."""
    maps = []
    for feature_cls in ("list", "getter"):
        torch.manual_seed(0)
        maps.append(_model(step, features_only=True, feature_cls=feature_cls).eval()(X))
    assert len(maps[0]) == len(maps[1]) == 4
    assert all(torch.equal(a, b) for a, b in zip(*maps))


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS)
def test_forward_intermediates_end_in_forward_features(step):
    model = _model(step).eval()
    with torch.no_grad():
        final, taps = model.forward_intermediates(X)
        assert torch.equal(final, model.forward_features(X)) and torch.equal(taps[-1], final)
        assert [t.shape[1] for t in taps] == [info["num_chs"] for info in model.feature_info]
        early = model.forward_intermediates(X, indices=[1], stop_early=True, intermediates_only=True)
        assert len(early) == 1 and torch.equal(early[0], taps[1])
        kept = model.prune_intermediate_layers([1])
        assert kept == [1] and len(model.stages) == 2 and model.num_classes == 0
        assert torch.equal(model.forward_features(X), taps[1]) and torch.equal(model(X), taps[1])   # no head left
        assert model.num_features == model.feature_info[1]["num_chs"]


@pytest.mark.slow
def test_reset_classifier():
    model = _model("step07_separate_downsampling", num_classes=10).eval()
    with torch.no_grad():
        features = model.forward_head(model.forward_features(X), pre_logits=True)
        model.reset_classifier(5)
        assert isinstance(model.get_classifier(), nn.Linear) and model.get_classifier().out_features == 5
        assert model(X).shape == (2, 5) and model.num_classes == 5
        model.reset_classifier(0)
        assert torch.equal(model(X), features)   # no classifier: the pooled, normalized features
        model.reset_classifier(0, "")
        normalized = model.head_norm(model.forward_features(X))
        assert torch.equal(model(X), normalized)   # no pooling either: the map, normalized
        model.reset_classifier(3)   # the pooling is kept: the classes at every position
        fc = model.get_classifier()
        per_position = torch.einsum("nchw,kc->nkhw", normalized, fc.weight) + fc.bias[:, None, None]
        torch.testing.assert_close(model(X), per_position)
    with pytest.raises(ValueError, match=r"^global_pool='max' is invalid: allowed 'avg' \| ''$"):
        _model("step00_baseline", global_pool="max")


@pytest.mark.slow
@pytest.mark.parametrize("step", ["step00_baseline", "step07_separate_downsampling"])   # BatchNorm; drop path
def test_grad_checkpointing_gives_the_same_gradients_and_keeps_less(step):
    """Exactly the same loss, gradients and BatchNorm statistics (recomputing a block does not count its batch
    twice; the same paths are dropped), while the forward keeps a fraction of the activations for backward."""
    runs = []
    for on in (False, True):
        torch.manual_seed(0)
        model = _model(step, num_classes=10).train()
        model.set_grad_checkpointing(on)
        kept: list[int] = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t.numel()) or t, lambda t: t):
            loss = model(X).logsumexp(1).sum()
        loss.backward()
        runs.append((loss, [p.grad for p in model.parameters()], list(model.buffers()), sum(kept)))
    (loss0, grads0, stats0, kept0), (loss1, grads1, stats1, kept1) = runs
    assert torch.equal(loss0, loss1)
    assert all(torch.equal(a, b) for a, b in zip(grads0, grads1))
    assert all(torch.equal(a, b) for a, b in zip(stats0, stats1))
    assert kept1 < kept0 / 4


class FPNBackbone(nn.Module):
    """A roadmap step's `features_only` body under torchvision's FPN: the backbone torchvision's detectors take."""

    def __init__(self, step: str, out_channels: int = 32):
        super().__init__()
        self.body = _model(step, features_only=True)
        self.fpn = FeaturePyramidNetwork(self.body.feature_info.channels(), out_channels,
                                         extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(self.body(x))))


def _stem_grad(backbone: FPNBackbone) -> torch.Tensor:
    return next(p.grad for name, p in backbone.body.named_parameters() if name.startswith("stem"))


@pytest.mark.parametrize("step", ["step00_baseline", "step07_separate_downsampling"])
def test_faster_rcnn_trains_on_a_step(step):
    """One training step of torchvision's Faster R-CNN (FPN, RPN, RoI heads) on two 64-px images with boxes."""
    torch.manual_seed(0)
    backbone = FPNBackbone(step)
    detector = FasterRCNN(backbone, num_classes=3, min_size=64, max_size=64, rpn_batch_size_per_image=32,
                          box_batch_size_per_image=16).train()
    images = list(torch.rand(2, 3, 64, 64))
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 44.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[20.0, 4.0, 60.0, 30.0], [2.0, 30.0, 30.0, 62.0]]),
                "labels": torch.tensor([2, 1])}]
    losses = detector(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grad = _stem_grad(backbone)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.slow
@pytest.mark.parametrize("step", ["step00_baseline", "step07_separate_downsampling"])
def test_segmentation_head_trains_on_a_step(step):
    """torchvision's FCN head on the FPN's stride-4 map, upsampled to the image: per-pixel cross-entropy."""
    torch.manual_seed(0)
    backbone, head = FPNBackbone(step), FCNHead(32, 4)
    mask = torch.randint(0, 4, (2, 32, 32))
    logits = F.interpolate(head(backbone(X)["0"]), size=X.shape[-2:], mode="bilinear", align_corners=False)
    loss = F.cross_entropy(logits, mask)
    assert logits.shape == (2, 4, 32, 32) and torch.isfinite(loss)
    loss.backward()
    grad = _stem_grad(backbone)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
