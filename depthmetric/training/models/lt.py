"""LTDepth: the MetricDepth paper's lightweight model (Sec. IV-C), written here (no downloads).

Encoder: MobileNetV3-Large (Howard et al., 2019) inverted-residual blocks (1x1 expansion, depthwise kxk,
squeeze-and-excitation with hard-sigmoid gate, 1x1 projection; ReLU in the early blocks and hard-swish in the
later ones) grouped into stages that each halve the resolution. Decoder: per stage, bilinear upsampling x2,
concatenation of the encoder's skip feature, then 3x3 conv + LeakyReLU; a last upsampling to the input
resolution gives the feature map that :class:`depthmetric.MultiRangeContrastiveLoss` regularises, and one 3x3
prediction layer turns it into depth.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ... import _checks

__all__ = ["LTDepth", "MOBILENETV3_LARGE"]

OUTPUTS = ("sigmoid", "softplus")  # the depth head's squashing function

# MobileNetV3-Large (Table 1 of the MobileNetV3 paper): (kernel, expansion, out, SE, hard-swish, stride).
# Grouped by output stride: 1/2 (after the stride-2 stem), 1/4, 1/8, 1/16, 1/32.
MOBILENETV3_LARGE: list[list[tuple[int, int, int, bool, bool, int]]] = [
    [(3, 16, 16, False, False, 1)],
    [(3, 64, 24, False, False, 2), (3, 72, 24, False, False, 1)],
    [(5, 72, 40, True, False, 2), (5, 120, 40, True, False, 1), (5, 120, 40, True, False, 1)],
    [(3, 240, 80, False, True, 2), (3, 200, 80, False, True, 1), (3, 184, 80, False, True, 1),
     (3, 184, 80, False, True, 1), (3, 480, 112, True, True, 1), (3, 672, 112, True, True, 1)],
    [(5, 672, 160, True, True, 2), (5, 960, 160, True, True, 1), (5, 960, 160, True, True, 1)],
]


def _divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled channel count to a multiple of ``divisor`` without losing more than 10% (MobileNet's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class _ConvBNAct(nn.Sequential):
    def __init__(self, cin, cout, kernel, stride=1, groups=1, act: type[nn.Module] | None = nn.ReLU):
        layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        hidden = _divisible(channels / 4)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x):
        scale = x.mean((2, 3), keepdim=True)
        return x * F.hardsigmoid(self.expand(F.relu(self.reduce(scale))))


class _InvertedResidual(nn.Module):
    def __init__(self, cin, kernel, expanded, cout, se, hswish, stride):
        super().__init__()
        act = nn.Hardswish if hswish else nn.ReLU
        layers = []
        if expanded != cin:
            layers.append(_ConvBNAct(cin, expanded, 1, act=act))
        layers.append(_ConvBNAct(expanded, expanded, kernel, stride, groups=expanded, act=act))
        if se:
            layers.append(_SqueezeExcite(expanded))
        layers.append(_ConvBNAct(expanded, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class _DecoderStage(nn.Module):
    """Upsample x2 to the skip's size, concatenate the skip, 3x3 conv + LeakyReLU."""

    def __init__(self, cin, cskip, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin + cskip, cout, 3, padding=1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x, skip=None, size=None):
        size = skip.shape[-2:] if skip is not None else size
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if skip is not None:
            x = torch.cat([x, skip], 1)
        return self.act(self.conv(x))


class LTDepth(nn.Module):
    """MetricDepth's lightweight U-Net-style depth model (MobileNetV3-Large encoder), for metric depth.

    Args:
        width_mult: channel multiplier of the encoder (1.0 is MobileNetV3-Large; 0.5 or less trains on a CPU).
        stages: number of resolution-halving encoder stages used, 1..5 (5 reaches 1/32 as MobileNetV3 does).
        blocks_per_stage: keep at most this many inverted-residual blocks per stage (``None``: all of them).
        decoder_channels: channels of the deepest decoder stage; each shallower stage halves it (at least
            ``features``).
        features: channels of the full-resolution feature map before the prediction layer (what
            ``forward(..., return_features=True)`` returns and the contrastive loss regularises).
        min_depth, max_depth: output range in metres.
        output: ``"sigmoid"`` gives ``min_depth + (max_depth - min_depth) * sigmoid(z)``, bounded as the NYU/KITTI
            ranges are (the default); ``"softplus"`` gives ``min_depth + softplus(z)``, unbounded above.

    ``forward(x)`` takes ``B,3,H,W`` images in [0, 1] (normalised inside with ImageNet statistics) and returns
    depth ``B,1,H,W`` in metres; with ``return_features=True`` it returns ``(depth, features)`` with features
    ``B,features,H,W``. Any ``H, W`` works (skips are resized to match).
    """

    def __init__(
        self,
        width_mult: float = 1.0,
        stages: int = 5,
        blocks_per_stage: int | None = None,
        decoder_channels: int = 128,
        features: int = 32,
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
        output: str = "sigmoid",
    ):
        super().__init__()
        if not 1 <= stages <= len(MOBILENETV3_LARGE):
            raise ValueError(f"stages must be in 1..{len(MOBILENETV3_LARGE)}, got {stages}")
        _checks.choice("output", output, OUTPUTS)
        if not (0 <= min_depth < max_depth):
            raise ValueError(f"need 0 <= min_depth < max_depth, got {min_depth}, {max_depth}")
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        if blocks_per_stage is not None and blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be >= 1 or None, got {blocks_per_stage}")
        self.config = dict(width_mult=width_mult, stages=stages, blocks_per_stage=blocks_per_stage,
                           decoder_channels=decoder_channels, features=features, min_depth=min_depth,
                           max_depth=max_depth, output=output)
        self.min_depth, self.max_depth, self.output = float(min_depth), float(max_depth), output
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

        stem = _divisible(16 * width_mult)
        self.stem = _ConvBNAct(3, stem, 3, stride=2, act=nn.Hardswish)
        self.encoder = nn.ModuleList()
        skips, cin = [], stem
        for blocks in MOBILENETV3_LARGE[:stages]:
            layers = []
            for kernel, expansion, cout, se, hswish, stride in blocks[:blocks_per_stage]:
                cout, expanded = _divisible(cout * width_mult), _divisible(expansion * width_mult)
                layers.append(_InvertedResidual(cin, kernel, expanded, cout, se, hswish, stride))
                cin = cout
            self.encoder.append(nn.Sequential(*layers))
            skips.append(cin)
        self.channels = skips  # each encoder stage's output channels
        # Decoder from the deepest stage up to 1/2 resolution (the first stage's skip), then to full resolution.
        self.decoder = nn.ModuleList()
        ch = cin
        for i in range(stages - 2, -1, -1):
            cout = max(features, decoder_channels >> (stages - 2 - i))
            self.decoder.append(_DecoderStage(ch, skips[i], cout))
            ch = cout
        self.head = _DecoderStage(ch, 0, features)
        self.predict = nn.Conv2d(features, 1, 3, padding=1)

    def decode(self, x: torch.Tensor) -> dict:
        """The encoder-decoder's intermediate maps, for heads built on it (``ZoeLTDepth``): ``bottleneck`` (the
        deepest encoder feature), ``blocks`` (each decoder stage's output, coarsest first), ``features`` (full
        resolution) and ``prediction`` (the one-channel output before the range activation, float32)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"x must be B,3,H,W images, got shape {tuple(x.shape)}")
        y = self.stem((x - self.mean) / self.std)
        skips = []
        for stage in self.encoder:
            y = stage(y)
            skips.append(y)
        bottleneck, blocks = y, []
        for stage, skip in zip(self.decoder, reversed(skips[:-1])):
            y = stage(y, skip)
            blocks.append(y)
        feats = self.head(y, size=x.shape[-2:])
        z = self.predict(feats)
        z = z.to(torch.promote_types(z.dtype, torch.float32))  # the depth head runs in float32 under autocast
        return {"bottleneck": bottleneck, "blocks": blocks, "features": feats, "prediction": z}

    def forward(self, x: torch.Tensor, return_features: bool = False):
        maps = self.decode(x)
        feats, z = maps["features"], maps["prediction"]
        if self.output == "sigmoid":
            depth = self.min_depth + (self.max_depth - self.min_depth) * torch.sigmoid(z)
        else:
            depth = self.min_depth + F.softplus(z)
        return (depth, feats) if return_features else depth
