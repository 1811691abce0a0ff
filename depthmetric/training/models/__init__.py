"""Reference depth models: MetricDepth's lightweight ``LTDepth`` (supervised) and Monodepth2/SPIdepth's
``DepthNet`` + ``PoseNet`` (self-supervised). Written here; no pretrained weights are downloaded."""
from __future__ import annotations

from torch import nn

from .lt import LTDepth
from .monodepth import (
    DepthNet,
    PoseNet,
    ResNetEncoder,
    disp_to_depth,
    rot_from_axisangle,
    transformation_from_parameters,
)

__all__ = ["LTDepth", "DepthNet", "PoseNet", "ResNetEncoder", "disp_to_depth", "rot_from_axisangle",
           "transformation_from_parameters", "build_model", "MODELS"]

MODELS: dict[str, type[nn.Module]] = {"lt": LTDepth, "depthnet": DepthNet, "posenet": PoseNet}


def build_model(name: str, **config) -> nn.Module:
    """Construct a model by name (``lt``, ``depthnet``, ``posenet``) from the ``config`` dict it records as
    ``model.config``, so a checkpoint can rebuild it."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    return MODELS[name](**config)
