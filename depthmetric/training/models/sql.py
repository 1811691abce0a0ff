"""SQLDepthNet: SPIdepth / SQLdepth's self-query layer on a ResNet encoder-decoder, written here.

The encoder-decoder (ResNet basic blocks, a U-Net decoder with bilinear upsampling to each skip) gives a
``B,E,h,w`` feature map at half the input resolution. The self-query layer (SQLdepth's
``Depth_Decoder_QueryTr``): patch embeddings of that map (a ``patch x patch`` stride-``patch`` conv) plus learned
positions go through a small transformer encoder; its first ``queries`` outputs are the queries. A 3x3 conv
gives per-pixel embeddings; the energies are the queries' dot products with them (``B,Q,h,w``); each query's
summary is the energy-softmax-weighted mean of the pixel embeddings (softmax over the pixels: exactly
``scaled_dot_product_attention`` with scale 1); an MLP over the summaries regresses ``bins`` bin widths
(ReLU + 0.1, normalised, spread over ``[min_depth, max_depth]``) whose midpoints are the per-image centres; a
1x1 conv turns the energies into bin logits, and :func:`depthmetric.bin_expectation` (softmax over the bins,
expectation over the centres) gives depth, without keeping the ``B,bins,h,w`` probabilities for backward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ... import bin_expectation
from .monodepth import ResNetEncoder, _normalise

__all__ = ["SQLDepthNet", "SelfQueryLayer"]

MAX_PATCHES = 500  # SQLdepth's table of learned positions


class SelfQueryLayer(nn.Module):
    """SQLdepth's self-query layer: ``forward(x)`` maps ``B,in_channels,h,w`` features to depth ``B,1,h,w``
    (with ``return_probs=True`` also the ``B,bins,h,w`` probabilities, without gradient). Defaults are SPIdepth's
    KITTI ResNet-50 configuration (embeddings of 64, patches of 16, 120 queries, 4 heads, 4 layers,
    feed-forward 1024) with 128 bins; ``h*w/patch^2`` must be at least ``queries`` and at most 500."""

    def __init__(self, in_channels: int, embedding_dim: int = 64, patch_size: int = 16, queries: int = 120,
                 bins: int = 128, heads: int = 4, layers: int = 4, feedforward: int = 1024, min_depth: float = 1e-3,
                 max_depth: float = 80.0, backend: str = "auto"):
        super().__init__()
        if not 0 < min_depth < max_depth:
            raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
        self.queries, self.patch_size = queries, patch_size
        self.min_depth, self.max_depth, self.backend = float(min_depth), float(max_depth), backend
        self.patch_embedding = nn.Conv2d(in_channels, embedding_dim, patch_size, patch_size)
        self.positions = nn.Parameter(torch.rand(MAX_PATCHES, embedding_dim))
        layer = nn.TransformerEncoderLayer(embedding_dim, heads, feedforward, batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.pixel_embedding = nn.Conv2d(in_channels, embedding_dim, 3, padding=1)
        self.bin_regressor = nn.Sequential(nn.Linear(embedding_dim * queries, 16 * queries), nn.LeakyReLU(),
                                           nn.Linear(16 * queries, 256), nn.LeakyReLU(), nn.Linear(256, bins))
        self.to_logits = nn.Conv2d(queries, bins, 1)

    def centers(self, summaries: torch.Tensor) -> torch.Tensor:
        """Per-image bin centres ``B,bins`` from the query summaries ``B,Q,E`` (SQLdepth's ``norm="linear"``)."""
        widths = F.relu(self.bin_regressor(summaries.flatten(1))) + 0.1
        widths = (self.max_depth - self.min_depth) * widths / widths.sum(1, keepdim=True)
        edges = torch.cumsum(F.pad(widths, (1, 0), value=self.min_depth), 1)
        return 0.5 * (edges[:, :-1] + edges[:, 1:])

    def forward(self, x: torch.Tensor, return_probs: bool = False):
        tokens = self.patch_embedding(x).flatten(2).transpose(1, 2)  # B,N,E
        n = tokens.shape[1]
        if not self.queries <= n <= MAX_PATCHES:
            raise ValueError(f"the {tuple(x.shape[-2:])} feature map gives {n} patches of {self.patch_size}; the "
                             f"self-query layer needs between queries={self.queries} and {MAX_PATCHES}")
        queries = self.transformer(tokens + self.positions[:n])[:, : self.queries]  # B,Q,E
        pixels = self.pixel_embedding(x)
        B, E, h, w = pixels.shape
        pixels = pixels.flatten(2).transpose(1, 2)  # B,hw,E
        energies = (queries @ pixels.transpose(1, 2)).view(B, self.queries, h, w)
        summaries = F.scaled_dot_product_attention(queries, pixels, pixels, scale=1.0)
        logits = self.to_logits(energies)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # float32 under autocast
        return bin_expectation(logits, self.centers(summaries).to(logits.dtype), return_probs=return_probs,
                               backend=self.backend)


class _UpBlock(nn.Module):
    """Bilinear upsampling to the skip's size, concatenation, 3x3 conv + BatchNorm + ReLU (SQLdepth's U-Net)."""

    def __init__(self, cin, cskip, cout):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(cin + cskip, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                                  nn.ReLU(inplace=True))

    def forward(self, x, skip):
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        return self.conv(torch.cat([x, skip], 1))


class SQLDepthNet(nn.Module):
    """The self-supervised task's SQL depth network: ``forward(x)`` returns ``[depth]``, one ``B,1,H/2,W/2`` map
    in metres (SQLdepth trains at one scale, its output depth itself); :meth:`depth` is the identity, so the task
    treats it as :class:`DepthNet`'s disparities (upsampled for the reprojection, smoothed at its resolution).

    ``width``/``blocks`` size the ResNet encoder; ``embedding_dim`` is the decoder's output and the self-query
    layer's embedding; the other arguments as :class:`SelfQueryLayer`. ``H, W`` divisible by 32.
    """

    scales = 1  # SQLdepth trains at one scale

    def __init__(self, width: int = 64, blocks=(2, 2, 2, 2), embedding_dim: int = 64, patch_size: int = 16,
                 queries: int = 120, bins: int = 128, heads: int = 4, layers: int = 4, feedforward: int = 1024,
                 min_depth: float = 1e-3, max_depth: float = 80.0, backend: str = "auto"):
        super().__init__()
        self.config = dict(width=width, blocks=tuple(blocks), embedding_dim=embedding_dim, patch_size=patch_size,
                           queries=queries, bins=bins, heads=heads, layers=layers, feedforward=feedforward,
                           min_depth=min_depth, max_depth=max_depth)
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.encoder = ResNetEncoder(width, blocks)
        enc = self.encoder.channels
        self.decoder = nn.ModuleList()
        ch = enc[-1]
        for i in range(3, -1, -1):  # up to the 1/2-resolution skip
            cout = max(embedding_dim, enc[i])
            self.decoder.append(_UpBlock(ch, enc[i], cout))
            ch = cout
        self.query_layer = SelfQueryLayer(ch, embedding_dim, patch_size, queries, bins, heads, layers, feedforward,
                                          min_depth, max_depth, backend)

    def forward(self, x: torch.Tensor, return_probs: bool = False):
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ValueError(f"x must be B,3,H,W with H and W divisible by 32, got shape {tuple(x.shape)}")
        feats = self.encoder(_normalise(x))
        y = feats[-1]
        for block, skip in zip(self.decoder, reversed(feats[:-1])):
            y = block(y, skip)
        out = self.query_layer(y, return_probs=return_probs)
        return out if return_probs else [out]

    def depth(self, out: torch.Tensor) -> torch.Tensor:
        return out
