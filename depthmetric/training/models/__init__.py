"""Reference depth models: MetricDepth's lightweight ``LTDepth`` and ``ZoeLTDepth`` (its encoder-decoder with
ZoeDepth's metric bins head) for the supervised task; Monodepth2's ``DepthNet`` and ``SQLDepthNet`` (SPIdepth's
self-query layer), each with ``PoseNet``, for the self-supervised task. Written here; no pretrained weights are
downloaded."""
from __future__ import annotations

from torch import nn

from .lt import LTDepth
from .sql import SelfQueryLayer, SQLDepthNet
from .zoe import MetricBinsHead, SegmentationHead, ZoeLTDepth
from .monodepth import (
    DepthNet,
    PoseNet,
    ResNetEncoder,
    disp_to_depth,
    rot_from_axisangle,
    transformation_from_parameters,
)

__all__ = ["LTDepth", "ZoeLTDepth", "MetricBinsHead", "SegmentationHead", "SQLDepthNet", "SelfQueryLayer", "DepthNet", "PoseNet",
           "ResNetEncoder", "disp_to_depth", "rot_from_axisangle", "transformation_from_parameters", "build_model",
           "MODELS"]

MODELS: dict[str, type[nn.Module]] = {"ltdepth": LTDepth, "zoe": ZoeLTDepth, "depthnet": DepthNet,
                                      "sql": SQLDepthNet, "posenet": PoseNet}


def build_model(name: str, **config) -> nn.Module:
    """Construct a model by name (a key of ``MODELS``) from the ``config`` dict it records as
    ``model.config``, so a checkpoint can rebuild it."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    return MODELS[name](**config)
