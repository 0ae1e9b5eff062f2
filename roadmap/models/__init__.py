"""The roadmap network, its profile and weight converters from the reference implementations."""
from roadmap.models.convert import from_timm_convnext, from_torchvision_resnet
from roadmap.models.profile import profile
from roadmap.models.roadmap_net import CHOICES, RoadmapNet
from roadmap.models.vit import scaled_vit

__all__ = ["CHOICES", "RoadmapNet", "from_timm_convnext", "from_torchvision_resnet", "profile", "scaled_vit"]

from roadmap import registry  # noqa: E402,F401  (every step a timm model, once a RoadmapNet can be built)
