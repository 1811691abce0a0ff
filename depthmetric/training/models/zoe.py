"""A ZoeDepth-style metric bins head (Bhat et al., 2023) on LTDepth's encoder-decoder, written here.

Wired as ZoeDepth's ``ZoeDepth`` (v1, ``bin_centers_type="softplus"``) wires its layers: a 1x1 conv on the
bottleneck, a seed bin regressor (per-pixel softplus bin centres at the bottleneck's resolution), one
attractor layer per decoder stage (coarsest first: the stage's projected embedding plus the previous one
upsampled predicts ``A`` softplus attractor points per pixel; the previous centres, upsampled, move by
:func:`depthmetric.attractor_shift`), and the conditional log-binomial head: a 1x1 MLP on the full-resolution
features, a relative-depth channel and the last bin embedding gives ``p`` and a temperature ``t`` in
``[min_temp, max_temp]`` per pixel, and :func:`depthmetric.log_binomial_expectation` turns them and the last
centres (upsampled inside the op) into depth. Where ZoeDepth conditions on MiDaS's relative depth, the
encoder-decoder's own one-channel prediction stands in.

The fused ops keep nothing of size ``B x bins x H x W`` (or ``B x attractors x bins x h x w``) for the
backward pass, which is where ZoeDepth's own head spends its memory.

With ``seg_classes > 0`` the model also carries :class:`SegmentationHead`, the U-Net segmentation decoder of
the cross-task distillation (seed 003): it reads the encoder-decoder's maps during training only
(``forward(..., return_segmentation=True)``); depth prediction and evaluation never run it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ... import _checks, attractor_shift, log_binomial_expectation
from ...attractor_shift import KINDS, REDUCTIONS
from .lt import LTDepth

__all__ = ["ZoeLTDepth", "MetricBinsHead", "SegmentationHead", "ZOE_ATTRACTORS"]

# ZoeDepth's attractors per decoder level at 1/16, 1/8, 1/4 and 1/2 resolution (its n_attractors).
ZOE_ATTRACTORS = (16, 8, 4, 1)


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    """ZoeDepth resizes embeddings and bin centres bilinearly with aligned corners."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def _pointwise(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution (``weight`` ``out,in,1,1``) as a matmul over the channels."""
    out = torch.einsum("oc,bchw->bohw", weight.flatten(1), x)
    return out.add_(bias.view(1, -1, 1, 1))  # in place: the matmul's output is not needed for its backward


def _relu() -> nn.Module:
    return nn.ReLU(inplace=True)  # as ZoeDepth's MLPs: the conv's output is not kept beside the ReLU's


def _mlp(cin: int, hidden: int, cout: int, act=_relu, out_act: nn.Module | None = None):
    layers = [nn.Conv2d(cin, hidden, 1), act(), nn.Conv2d(hidden, cout, 1)]
    return nn.Sequential(*layers, *([out_act] if out_act is not None else []))


class _AttractorLayer(nn.Module):
    """ZoeDepth's ``AttractorLayerUnnormed``: softplus attractor points from the embedding, the previous
    centres upsampled to this level and moved by :func:`depthmetric.attractor_shift`."""

    def __init__(self, embedding_dim: int, n_attractors: int, options: dict, backend: str, mlp_dim: int = 128):
        super().__init__()
        self.net = _mlp(embedding_dim, mlp_dim, n_attractors, out_act=nn.Softplus())
        self.options, self.backend = options, backend

    def forward(self, embedding, centers, prev_embedding):
        embedding = embedding + _resize(prev_embedding, embedding.shape[-2:])
        attractors = self.net(embedding)
        centers = _resize(centers, attractors.shape[-2:])
        return attractor_shift(centers, attractors.to(centers.dtype), **self.options, backend=self.backend)


class MetricBinsHead(nn.Module):
    """ZoeDepth's metric bins module: seed bins, attractor layers, conditional log-binomial head.

    ``forward(bottleneck, blocks, last)`` takes the bottleneck feature, the decoder blocks (coarsest first,
    one per entry of ``n_attractors``) and the full-resolution map the head conditions on (``B,last_channels,
    H,W``), and returns depth ``B,1,H,W`` (with ``return_probs=True`` also the ``B,n_bins,H,W`` probabilities,
    without gradient). Defaults are ZoeDepth's (``config_zoedepth.json``): 64 bins, embeddings of 128,
    attractors 16/8/4/1 of kind ``inv`` averaged, ``gamma=2``, temperature in ``[0.0212, 50]``, ``p_eps=1e-4``.
    ``attractor_alpha=300`` is what ZoeDepth's layers act with: they call the attractor function without the
    configured alpha (1000), so 300, its default, applies; here the value given is the value used.
    """

    def __init__(self, bottleneck_channels: int, block_channels: list[int], last_channels: int, n_bins: int = 64,
                 bin_embedding_dim: int = 128, n_attractors=ZOE_ATTRACTORS, attractor_alpha: float = 300.0,
                 attractor_gamma: int = 2, attractor_kind: str = "inv", attractor_reduction: str = "mean",
                 min_temp: float = 0.0212, max_temp: float = 50.0, p_eps: float = 1e-4, backend: str = "auto"):
        super().__init__()
        _checks.choice("attractor_kind", attractor_kind, KINDS)
        _checks.choice("attractor_reduction", attractor_reduction, REDUCTIONS)
        if len(n_attractors) != len(block_channels):
            raise ValueError(f"n_attractors needs one count per decoder block ({len(block_channels)}), "
                             f"got {list(n_attractors)}")
        if not 0 < min_temp < max_temp:
            raise ValueError(f"need 0 < min_temp < max_temp, got {min_temp}, {max_temp}")
        self.min_temp, self.max_temp, self.p_eps, self.backend = float(min_temp), float(max_temp), p_eps, backend
        self.bottleneck_conv = nn.Conv2d(bottleneck_channels, bottleneck_channels, 1)
        self.seed_bins = _mlp(bottleneck_channels, 256, n_bins, out_act=nn.Softplus())
        self.seed_projector = _mlp(bottleneck_channels, 128, bin_embedding_dim)
        self.projectors = nn.ModuleList(_mlp(c, 128, bin_embedding_dim) for c in block_channels)
        options = dict(alpha=attractor_alpha, gamma=attractor_gamma, kind=attractor_kind,
                       reduction=attractor_reduction)
        self.attractors = nn.ModuleList(_AttractorLayer(bin_embedding_dim, a, options, backend) for a in n_attractors)
        cin = last_channels + bin_embedding_dim
        self.conditional = _mlp(cin, cin // 2, 4, act=nn.GELU, out_act=nn.Softplus())

    def _conditional(self, last: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """ZoeDepth's conditional MLP on ``cat(last, upsampled embedding)`` at full resolution, computed in less
        memory with the same parameters: the first 1x1 conv is split in two, the embedding's part running at
        the embedding's resolution and upsampled after (bilinear upsampling and a 1x1 conv are both linear and
        the upsampling's weights sum to 1, so the map is the same), which never builds the concatenation or
        the full-resolution copy of the embedding; the GELU's output is recomputed in the backward pass
        instead of kept; and the full-resolution 1x1 convs are channel matmuls, which on CPU skip the copies
        oneDNN's convolution makes of its input and output."""
        first, act, second, out_act = self.conditional
        c = last.shape[1]
        hidden = _pointwise(first.weight[:, :c], first.bias, last)
        hidden += _resize(F.conv2d(embedding, first.weight[:, c:]), last.shape[-2:])  # in place: one map less
        return out_act(checkpoint(lambda h: _pointwise(second.weight, second.bias, act(h)), hidden,
                                  use_reentrant=False))

    def forward(self, bottleneck: torch.Tensor, blocks: list[torch.Tensor], last: torch.Tensor,
                return_probs: bool = False):
        x = self.bottleneck_conv(bottleneck)
        centers, embedding = self.seed_bins(x), self.seed_projector(x)
        for projector, attractor, block in zip(self.projectors, self.attractors, blocks):
            block_embedding = projector(block)
            centers = attractor(block_embedding, centers, embedding)
            embedding = block_embedding
        pt = self._conditional(last, embedding)
        pt = pt.to(torch.promote_types(pt.dtype, torch.float32)) + self.p_eps  # float32 under autocast
        p = pt[:, 0] / (pt[:, 0] + pt[:, 1])
        t = (self.max_temp - self.min_temp) * (pt[:, 2] / (pt[:, 2] + pt[:, 3])) + self.min_temp
        return log_binomial_expectation(p, t.unsqueeze(1), centers.to(p.dtype), eps=self.p_eps,
                                        return_probs=return_probs, backend=self.backend)


class _UpBlock(nn.Module):
    """U-Net's expansive step: upsample to the skip's size, concatenate it, two 3x3 conv + ReLU."""

    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(cin + cskip, cout, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU())

    def forward(self, x, skip):
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.convs(torch.cat([x, skip], 1))


class SegmentationHead(nn.Module):
    """The cross-task distillation's U-Net segmentation decoder (Ronneberger et al.'s expansive path) on the
    depth network's own multi-scale maps: from the bottleneck, one :class:`_UpBlock` per decoder block
    (coarsest first) and one onto the full-resolution features, then a 1x1 conv to ``classes`` logits.
    Where the seed's U-Net crops its skips, the skips here have the size they are concatenated at.

    ``forward(bottleneck, blocks, features)`` returns ``B,classes,H,W`` logits at the features' resolution.
    """

    def __init__(self, bottleneck_channels: int, block_channels: list[int], feature_channels: int, classes: int,
                 channels: int = 16):
        super().__init__()
        if classes < 1 or channels < 1:
            raise ValueError(f"need classes >= 1 and channels >= 1, got {classes}, {channels}")
        self.ups = nn.ModuleList()
        cin = bottleneck_channels
        for cskip in [*block_channels, feature_channels]:
            self.ups.append(_UpBlock(cin, cskip, channels))
            cin = channels
        self.classify = nn.Conv2d(channels, classes, 1)

    def forward(self, bottleneck: torch.Tensor, blocks: list[torch.Tensor], features: torch.Tensor):
        x = bottleneck
        for up, skip in zip(self.ups, [*blocks, features]):
            x = up(x, skip)
        return self.classify(x)


class ZoeLTDepth(nn.Module):
    """LTDepth's encoder-decoder with ZoeDepth's metric bins head (:class:`MetricBinsHead`) in place of its
    one-channel prediction layer: depth in metres from an expectation over ``n_bins`` per-pixel bin centres.

    Args: ``width_mult``, ``stages``, ``blocks_per_stage``, ``decoder_channels``, ``features`` as
    :class:`LTDepth` (``stages >= 2``: the head needs at least one decoder stage); ``n_attractors`` one count
    per decoder stage, coarsest first (default: ZoeDepth's 16/8/4/1 for the stages at 1/16..1/2 resolution,
    the finest ones when there are fewer stages); the other head arguments as :class:`MetricBinsHead`;
    ``backend`` runs the fused ops (a run setting, not part of ``config``). ``min_depth``/``max_depth`` bound
    nothing (ZoeDepth's softplus centres are unbounded); they are kept for the evaluation's range.

    ``forward(x, return_features=False)`` returns depth ``B,1,H,W`` (and with ``return_features=True`` the
    ``B,features,H,W`` map the contrastive loss regularises), as :class:`LTDepth`.

    ``seg_classes > 0`` adds :class:`SegmentationHead` (``seg_channels`` wide) for segmentation distillation
    while training: ``forward(x, return_segmentation=True)`` also returns its ``B,seg_classes,H,W`` logits
    (last). It is never run otherwise, so prediction and evaluation cost and compute what they would without
    it; ``seg_classes=0`` (default) builds no head.
    """

    def __init__(self, width_mult: float = 1.0, stages: int = 5, blocks_per_stage: int | None = None,
                 decoder_channels: int = 128, features: int = 32, min_depth: float = 1e-3, max_depth: float = 10.0,
                 n_bins: int = 64, bin_embedding_dim: int = 128, n_attractors=None, attractor_alpha: float = 300.0,
                 attractor_gamma: int = 2, attractor_kind: str = "inv", attractor_reduction: str = "mean",
                 min_temp: float = 0.0212, max_temp: float = 50.0, seg_classes: int = 0, seg_channels: int = 16,
                 backend: str = "auto"):
        super().__init__()
        if stages < 2:
            raise ValueError(f"ZoeLTDepth needs stages >= 2 (one decoder stage per attractor layer), got {stages}")
        if n_attractors is None:
            n_attractors = ZOE_ATTRACTORS[-(stages - 1):] if stages - 1 <= len(ZOE_ATTRACTORS) else None
            if n_attractors is None:
                raise ValueError(f"stages={stages}: give n_attractors, one count per decoder stage")
        self.trunk = LTDepth(width_mult, stages, blocks_per_stage, decoder_channels, features, min_depth, max_depth)
        head = dict(n_bins=n_bins, bin_embedding_dim=bin_embedding_dim, n_attractors=list(n_attractors),
                    attractor_alpha=attractor_alpha, attractor_gamma=attractor_gamma, attractor_kind=attractor_kind,
                    attractor_reduction=attractor_reduction, min_temp=min_temp, max_temp=max_temp)
        self.config = {**self.trunk.config, **head}
        del self.config["output"]
        self.min_depth, self.max_depth = self.trunk.min_depth, self.trunk.max_depth
        blocks = [stage.conv.out_channels for stage in self.trunk.decoder]
        self.head = MetricBinsHead(self.trunk.channels[-1], blocks, features + 1, **head, backend=backend)
        if seg_classes < 0:
            raise ValueError(f"seg_classes must be >= 0, got {seg_classes}")
        self.seg_head = (SegmentationHead(self.trunk.channels[-1], blocks, features, seg_classes, seg_channels)
                         if seg_classes else None)
        if seg_classes:  # recorded only when present, so configs of models without the head stay as they were
            self.config.update(seg_classes=seg_classes, seg_channels=seg_channels)

    def forward(self, x: torch.Tensor, return_features: bool = False, return_probs: bool = False,
                return_segmentation: bool = False):
        if return_segmentation and self.seg_head is None:
            raise ValueError("return_segmentation=True needs a model built with seg_classes > 0")
        maps = self.trunk.decode(x)
        last = torch.cat([maps["features"], maps["prediction"].to(maps["features"].dtype)], 1)
        out = self.head(maps["bottleneck"], maps["blocks"], last, return_probs=return_probs)
        depth, probs = out if return_probs else (out, None)
        extra = ((maps["features"],) if return_features else ()) + ((probs,) if return_probs else ())
        if return_segmentation:
            extra += (self.seg_head(maps["bottleneck"], maps["blocks"], maps["features"]),)
        return (depth, *extra) if extra else depth
