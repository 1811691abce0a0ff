"""The two tasks a run trains: their networks, their forward pass and their losses.

Under torch.distributed the losses normalise over the global batch (``normalize="global"``) and the
contrastive loss draws its across-image samples from it (``across="global"``), so the DDP gradients are those
of one process holding the global batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import (MultiRangeContrastiveLoss, ReprojectionLoss, SegmentationDistillationLoss, SILogLoss,
               edge_aware_smoothness, warp)
from ..metrics import DATASETS
from .config import TrainConfig
from .models import MODELS, PoseNet, transformation_from_parameters

__all__ = ["SupervisedTask", "SelfSupervisedTask", "build_task", "set_train_mode", "PRESETS", "RESNET_SMALL"]

# The main job's model: MobileNetV3-Large at half width, four stages of at most two blocks (~0.1 M parameters).
LT_SMALL = dict(width_mult=0.5, stages=4, blocks_per_stage=2, decoder_channels=64, features=16)
RESNET_SMALL = dict(width=16, blocks=(1, 1, 1, 1))
# Each --arch's constructor arguments at the main job's scale (--model overrides them): ZoeDepth's head with
# 32 bins and embeddings of 32 (attractors 8/4/1 on the three decoder stages); SQLdepth's layer with 16 queries
# over 8x8 patches, 32 bins, one transformer layer.
PRESETS = {
    "ltdepth": LT_SMALL,
    "zoe": dict(LT_SMALL, n_bins=32, bin_embedding_dim=32),
    "depthnet": dict(RESNET_SMALL, decoder_width=8),
    "sql": dict(RESNET_SMALL, embedding_dim=16, patch_size=8, queries=16, bins=32, heads=2, layers=1,
                feedforward=64),
}
# The models whose fused bin heads take the run's backend.
BIN_HEADS = ("zoe", "sql")


def _depth_network(config: TrainConfig, max_depth: float, seg_classes: int = 0):
    extra = {"backend": config.backend} if config.arch in BIN_HEADS else {}
    if seg_classes and "seg_classes" not in config.model:  # a checkpoint's model config already says it
        extra["seg_classes"] = seg_classes
    return MODELS[config.arch](**{**PRESETS[config.arch], "max_depth": max_depth, **config.model}, **extra)


class _Task:
    """``modules()`` are the trained networks (checkpointed by name); ``nets`` the callables the forward pass
    uses, the same networks or their DDP / torch.compile wrappers (set by the loop)."""

    name: str

    def modules(self) -> dict:
        raise NotImplementedError

    @property
    def nets(self) -> dict:
        return getattr(self, "_nets", None) or self.modules()

    @nets.setter
    def nets(self, value: dict) -> None:
        self._nets = value

    @property
    def model(self):
        return self.modules()["model"]


class SupervisedTask(_Task):
    """LTDepth (or ZoeLTDepth) trained with ``SILogLoss`` + ``metric_weight * MultiRangeContrastiveLoss`` on its
    feature map; with ``seg_weight > 0`` (ZoeLTDepth) also ``seg_weight * SegmentationDistillationLoss`` of its
    U-Net segmentation head against the batch's ``labels`` (seed 003: ``alpha * Dice + (1 - alpha) * Focal``,
    ``lambda_dis = 0.1``), a training-only head that :meth:`predict` never runs."""

    name = "supervised"

    def __init__(self, config: TrainConfig, max_depth: float, distributed: bool = False, seg_classes: int = 0):
        self.config = config
        seg_weight = config.seg_weight or 0.0
        self.net = _depth_network(config, max_depth, seg_classes if seg_weight > 0 else 0)
        self.seg_loss = SegmentationDistillationLoss(backend=config.backend) if seg_weight > 0 else None
        scope = "global" if distributed else "local"
        self.depth_loss = SILogLoss(normalize=scope, backend=config.backend)
        self.metric_loss = (MultiRangeContrastiveLoss.preset(config.metric_preset, n_across=config.metric_across,
                                                             normalize=scope, across=scope, backend=config.backend)
                            if config.metric_loss else None)

    def modules(self) -> dict:
        return {"model": self.net}

    def forward(self, batch: dict) -> dict:
        if self.seg_loss is not None:
            depth, feats, logits = self.nets["model"](batch["image"], return_features=True, return_segmentation=True)
            out = {"depth": depth, "segmentation": logits}
        else:
            depth, feats = self.nets["model"](batch["image"], return_features=True)
            out = {"depth": depth}
        return {**out, "features": feats} if self.metric_loss is not None else out

    def criterion(self, outputs: dict, batch: dict, generator) -> tuple[torch.Tensor, dict]:
        dtype = getattr(torch, self.config.dtype)
        silog = self.depth_loss(outputs["depth"].to(dtype), batch["depth"])
        parts = {"silog": silog}
        total = silog
        if self.metric_loss is not None:
            contrastive = self.metric_loss(outputs["features"], batch["depth"], generator=generator)
            parts["contrastive"] = contrastive
            total = total + self.config.metric_weight * contrastive
        if self.seg_loss is not None:
            segmentation = self.seg_loss(outputs["segmentation"], batch["labels"])
            parts["segmentation"] = segmentation
            total = total + self.config.seg_weight * segmentation
        return total, parts

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


class SelfSupervisedTask(_Task):
    """DepthNet (or SQLDepthNet) + PoseNet trained with min-reprojection (auto-masked) + edge-aware smoothness
    over the network's scales (Monodepth2: 4; SQLdepth: 1): each scale's map upsampled to the input resolution
    for the reprojection, smoothness at the scale's own resolution weighted ``1e-3 / 2^scale``, the sum averaged
    over the scales."""

    name = "self-supervised"
    smoothness_weight = 1e-3

    def __init__(self, config: TrainConfig, max_depth: float, distributed: bool = False):
        self.config = config
        self.depth_net = _depth_network(config, max_depth)
        self.pose_net = PoseNet(**RESNET_SMALL, hidden=64)
        self.reprojection = ReprojectionLoss(normalize="global" if distributed else "local", backend=config.backend)

    def modules(self) -> dict:
        return {"model": self.depth_net, "pose": self.pose_net}

    def forward(self, batch: dict) -> dict:
        depth_net, pose_net = self.nets["model"], self.nets["pose"]
        disps = depth_net(batch["image"])
        sources = batch["sources"]
        poses = [transformation_from_parameters(*pose_net(batch["image"], sources[:, s]))
                 for s in range(sources.shape[1])]
        return {**{f"disp{s}": d for s, d in enumerate(disps)}, "poses": torch.stack(poses, 1)}

    def criterion(self, outputs: dict, batch: dict, generator) -> tuple[torch.Tensor, dict]:
        target, sources, K = batch["image"], batch["sources"], batch["K"]
        size = target.shape[-2:]
        source_list = list(sources.unbind(1))
        reprojection = smoothness = 0.0
        scales = self.depth_net.scales
        for scale in range(scales):
            disp = outputs[f"disp{scale}"].to(target.dtype)
            full = F.interpolate(disp, size=size, mode="bilinear", align_corners=False)
            depth = self.depth_net.depth(full)
            warped = [warp(src, depth, outputs["poses"][:, s], K) for s, src in enumerate(source_list)]
            reprojection = reprojection + self.reprojection(warped, target, source_list, generator=generator)
            color = target if disp.shape[-2:] == size else F.interpolate(target, size=disp.shape[-2:], mode="area")
            smoothness = smoothness + self.smoothness_weight / 2 ** scale * edge_aware_smoothness(disp, color)
        reprojection, smoothness = reprojection / scales, smoothness / scales
        return reprojection + smoothness, {"reprojection": reprojection, "smoothness": smoothness}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Depth at the input resolution: the finest scale upsampled as the reprojection sees it."""
        disp = self.depth_net(images)[0]
        return self.depth_net.depth(F.interpolate(disp, size=images.shape[-2:], mode="bilinear", align_corners=False))


def set_train_mode(task, training: bool) -> None:
    """Training (or evaluation) mode for the task's networks; with ``freeze_bn`` BatchNorm stays in
    evaluation mode while training."""
    for module in task.modules().values():
        module.train(training)
        if training and task.config.freeze_bn:
            for layer in module.modules():
                if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
                    layer.eval()


def build_task(config: TrainConfig, max_depth: float | None = None, distributed: bool = False,
               seg_classes: int | None = None):
    """The task of ``config``; ``seg_classes``: the training data's segmentation classes, for the head of
    ``seg_weight > 0`` (default: the model config's, else the synthetic scenes')."""
    config = config.resolved()
    if max_depth is None:  # supervised: the data set's evaluation cap (NYU's for other data); DepthNet: 100 m
        max_depth = DATASETS.get(config.data, DATASETS["nyu"])["max_depth"] if config.task == "supervised" else 100.0
    if config.task == "supervised":
        if seg_classes is None:
            from .data.synthetic import CLASSES

            seg_classes = config.model.get("seg_classes", len(CLASSES))
        task = SupervisedTask(config, max_depth, distributed, seg_classes)
    else:
        task = SelfSupervisedTask(config, max_depth, distributed)
    for module in task.modules().values():
        module.to(getattr(torch, config.dtype))
    return task
