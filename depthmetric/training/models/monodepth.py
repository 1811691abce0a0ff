"""DepthNet and PoseNet in the Monodepth2 / SPIdepth layout, with small ResNet-style encoders.

DepthNet: ResNet encoder -> decoder of (3x3 conv + ELU, nearest upsampling x2, skip concatenation, 3x3 conv +
ELU) per level, with a sigmoid disparity head at the four finest scales (full, 1/2, 1/4, 1/8 resolution), as
Monodepth2's ``DepthDecoder``. PoseNet: a ResNet encoder over target and source stacked on the channels, then
1x1 squeeze + 3x3 convs + 1x1 to 6 numbers, averaged over the image and scaled by 0.01, as Monodepth2's
``PoseDecoder``: axis-angle rotation and translation. :func:`transformation_from_parameters` turns them into
4x4 matrices; :func:`disp_to_depth` maps the sigmoid disparity to depth.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DepthNet", "PoseNet", "ResNetEncoder", "disp_to_depth", "rot_from_axisangle",
           "transformation_from_parameters"]


def disp_to_depth(disp: torch.Tensor, min_depth: float = 0.1, max_depth: float = 100.0):
    """Monodepth2's mapping of a sigmoid output to ``(scaled_disp, depth)``: disparity linear in
    ``[1/max_depth, 1/min_depth]``, depth its inverse."""
    min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
    scaled = min_disp + (max_disp - min_disp) * disp
    return scaled, 1.0 / scaled


def rot_from_axisangle(axisangle: torch.Tensor) -> torch.Tensor:
    """``B,3`` axis-angle vectors -> ``B,4,4`` homogeneous rotation matrices (Rodrigues' formula)."""
    angle = axisangle.norm(dim=-1, keepdim=True)
    axis = axisangle / (angle + 1e-7)  # Monodepth2's epsilon: a zero rotation stays finite and differentiable
    c, s = torch.cos(angle)[..., 0], torch.sin(angle)[..., 0]
    x, y, z = axis.unbind(-1)
    C = 1 - c
    rot = torch.zeros(*axisangle.shape[:-1], 4, 4, dtype=axisangle.dtype, device=axisangle.device)
    rot[..., 0, 0], rot[..., 0, 1], rot[..., 0, 2] = x * x * C + c, x * y * C - z * s, z * x * C + y * s
    rot[..., 1, 0], rot[..., 1, 1], rot[..., 1, 2] = x * y * C + z * s, y * y * C + c, y * z * C - x * s
    rot[..., 2, 0], rot[..., 2, 1], rot[..., 2, 2] = z * x * C - y * s, y * z * C + x * s, z * z * C + c
    rot[..., 3, 3] = 1
    return rot


def transformation_from_parameters(axisangle: torch.Tensor, translation: torch.Tensor, invert: bool = False):
    """``B,3`` axis-angle and ``B,3`` translation -> ``B,4,4`` matrix, with Monodepth2's semantics:
    ``M = T(t) @ R`` (rotate, then translate); with ``invert=True`` it is the inverse, ``R^T @ T(-t)``."""
    R = rot_from_axisangle(axisangle)
    t = -translation if invert else translation
    T = torch.eye(4, dtype=t.dtype, device=t.device).expand(*t.shape[:-1], 4, 4).clone()
    T[..., :3, 3] = t
    if invert:
        return R.transpose(-1, -2) @ T
    return T @ R


class _BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class ResNetEncoder(nn.Module):
    """ResNet-style encoder (basic blocks): a 7x7 stride-2 stem, a 3x3 max-pool, four stages of
    ``blocks[i]`` blocks with ``width * (1, 1, 2, 4, 8)`` channels. ``width=64, blocks=(2, 2, 2, 2)`` is the
    ResNet-18 layout Monodepth2 uses; ``in_images`` stacks frames on the channels (PoseNet). Returns the five
    features at 1/2, 1/4, 1/8, 1/16, 1/32 resolution."""

    def __init__(self, width: int = 64, blocks=(2, 2, 2, 2), in_images: int = 1):
        super().__init__()
        self.channels = [width, width, 2 * width, 4 * width, 8 * width]
        self.stem = nn.Sequential(nn.Conv2d(3 * in_images, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True))
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.stages = nn.ModuleList()
        cin = width
        for i, n in enumerate(blocks):
            cout = self.channels[i + 1]
            layers = [_BasicBlock(cin if j == 0 else cout, cout, 2 if (i > 0 and j == 0) else 1) for j in range(n)]
            self.stages.append(nn.Sequential(*layers))
            cin = cout

    def forward(self, x):
        feats = [self.stem(x)]
        y = self.pool(feats[0])
        for stage in self.stages:
            y = stage(y)
            feats.append(y)
        return feats


class _ConvELU(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3), nn.ELU(inplace=True))


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - 0.45) / 0.225  # Monodepth2's input normalisation


class DepthNet(nn.Module):
    """Monodepth2's depth network: returns the sigmoid disparities ``[disp_0, disp_1, disp_2, disp_3]``,
    ``disp_s`` of shape ``B,1,H/2^s,W/2^s`` (``H, W`` divisible by 32). :meth:`depth` maps them through
    :func:`disp_to_depth` with ``min_depth=0.1, max_depth=100`` (Monodepth2's defaults; settable).

    ``width``/``blocks`` size the ResNet encoder (64 and (2, 2, 2, 2) is ResNet-18); ``decoder_width`` is the
    finest decoder level's channels, doubling per level (16 is Monodepth2's ``[16, 32, 64, 128, 256]``).
    """

    scales = 4

    def __init__(self, width: int = 64, blocks=(2, 2, 2, 2), decoder_width: int = 16, min_depth: float = 0.1,
                 max_depth: float = 100.0):
        super().__init__()
        self.config = dict(width=width, blocks=tuple(blocks), decoder_width=decoder_width, min_depth=min_depth,
                           max_depth=max_depth)
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.encoder = ResNetEncoder(width, blocks)
        enc = self.encoder.channels
        dec = [decoder_width << i for i in range(5)]
        self.upconv0, self.upconv1, self.dispconv = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i in range(4, -1, -1):  # deepest level first
            self.upconv0.append(_ConvELU(enc[-1] if i == 4 else dec[i + 1], dec[i]))
            self.upconv1.append(_ConvELU(dec[i] + (enc[i - 1] if i > 0 else 0), dec[i]))
        for s in range(self.scales):
            self.dispconv.append(nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dec[s], 1, 3)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ValueError(f"x must be B,3,H,W with H and W divisible by 32, got shape {tuple(x.shape)}")
        feats = self.encoder(_normalise(x))
        y = feats[-1]
        disps: list[torch.Tensor] = [None] * self.scales  # type: ignore[list-item]
        for k, i in enumerate(range(4, -1, -1)):
            y = F.interpolate(self.upconv0[k](y), scale_factor=2, mode="nearest")
            if i > 0:
                y = torch.cat([y, feats[i - 1]], 1)
            y = self.upconv1[k](y)
            if i < self.scales:
                d = self.dispconv[i](y)
                disps[i] = torch.sigmoid(d.to(torch.promote_types(d.dtype, torch.float32)))
        return disps

    def depth(self, disp: torch.Tensor) -> torch.Tensor:
        return disp_to_depth(disp, self.min_depth, self.max_depth)[1]


class PoseNet(nn.Module):
    """Monodepth2's separate pose network: ``forward(target, source)`` stacks the two ``B,3,H,W`` frames and
    returns ``(axisangle, translation)``, each ``B,3`` and scaled by 0.01 (Monodepth2's PoseDecoder).
    :meth:`matrix` returns the ``B,4,4`` transformation that maps target-camera points into the source camera
    (what :func:`depthmetric.warp` takes), via :func:`transformation_from_parameters`."""

    def __init__(self, width: int = 64, blocks=(2, 2, 2, 2), hidden: int = 256):
        super().__init__()
        self.config = dict(width=width, blocks=tuple(blocks), hidden=hidden)
        self.encoder = ResNetEncoder(width, blocks, in_images=2)
        self.decoder = nn.Sequential(
            nn.Conv2d(self.encoder.channels[-1], hidden, 1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 6, 1),
        )

    def forward(self, target: torch.Tensor, source: torch.Tensor):
        if target.shape != source.shape or target.dim() != 4 or target.shape[1] != 3:
            raise ValueError(f"target and source must both be B,3,H,W, got {tuple(target.shape)} and "
                             f"{tuple(source.shape)}")
        x = _normalise(torch.cat([target, source], 1))
        out = self.decoder(self.encoder(x)[-1])
        out = 0.01 * out.to(torch.promote_types(out.dtype, torch.float32)).mean((2, 3))  # autocast: float32
        return out[:, :3], out[:, 3:]

    def matrix(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        return transformation_from_parameters(*self(target, source))
