"""Augmentations of sample dicts that keep image, depth, source frames, intrinsics and poses consistent.

Each is a callable ``aug(sample, generator=None) -> sample`` (a new dict; tensors are not modified in
place) drawing its randomness from the given ``torch.Generator`` (the global CPU generator when None),
so a data pipeline is reproducible. Keys they understand: ``image`` (3,H,W), ``depth`` (1,H,W),
``labels`` (H,W integer segmentation classes), ``sources`` (S,3,H,W), ``K`` (3,3) and ``poses`` (S,4,4,
target camera -> source camera); other keys pass through untouched.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["Compose", "RandomHorizontalFlip", "ColorJitter", "RandomCrop", "crop", "resize"]

_SPATIAL = ("image", "depth", "sources", "labels")


def _uniform(low: float, high: float, generator) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


class Compose:
    """Apply augmentations in order, all drawing from the same generator."""

    def __init__(self, augmentations):
        self.augmentations = list(augmentations)

    def __call__(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        for augmentation in self.augmentations:
            sample = augmentation(sample, generator)
        return sample


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``.

    Image, depth and sources flip together; the principal point moves to ``cx' = W - 1 - cx`` (pixel
    centres at integers, as in :func:`depthmetric.warp`). A mirrored scene seen by mirrored cameras has
    relative poses ``F T F`` with ``F = diag(-1, 1, 1, 1)``, so ``poses`` are conjugated too.
    """

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        if torch.rand((), generator=generator).item() >= self.p:
            return dict(sample)
        out = dict(sample)
        for key in _SPATIAL:
            if key in out:
                out[key] = out[key].flip(-1)
        width = sample["image"].shape[-1]
        if "K" in out:
            K = out["K"].clone()
            K[0, 2] = width - 1 - K[0, 2]
            out["K"] = K
        if "poses" in out:
            F = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=out["poses"].dtype))
            out["poses"] = F @ out["poses"] @ F
        return out


class ColorJitter:
    """Random brightness, contrast and saturation factors (each uniform in ``[1 - s, 1 + s]``), applied in
    that order with the same factors to the target and every source frame (so photometric consistency
    between frames survives), clamped to [0, 1]. Depth, K and poses are untouched. ``p`` is the
    probability of jittering at all (Monodepth2 uses 0.5)."""

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2, p: float = 1.0):
        for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        self.brightness, self.contrast, self.saturation, self.p = brightness, contrast, saturation, p

    @staticmethod
    def _grey(x: torch.Tensor) -> torch.Tensor:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(3, 1, 1)
        return (x * weights).sum(-3, keepdim=True)

    def _apply(self, x: torch.Tensor, b: float, c: float, s: float) -> torch.Tensor:
        x = (x * b).clamp(0, 1)
        mean = self._grey(x).mean(dim=(-3, -2, -1), keepdim=True)
        x = ((x - mean) * c + mean).clamp(0, 1)
        grey = self._grey(x)
        return ((x - grey) * s + grey).clamp(0, 1)

    def __call__(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        if torch.rand((), generator=generator).item() >= self.p:
            return dict(sample)
        b = _uniform(1 - self.brightness, 1 + self.brightness, generator)
        c = _uniform(1 - self.contrast, 1 + self.contrast, generator)
        s = _uniform(1 - self.saturation, 1 + self.saturation, generator)
        out = dict(sample)
        for key in ("image", "sources"):
            if key in out:
                out[key] = self._apply(out[key], b, c, s)
        return out


def crop(sample: dict, top: int, left: int, height: int, width: int) -> dict:
    """Crop image, depth and sources to ``[top:top+height, left:left+width]``; ``cx -= left``, ``cy -= top``."""
    full_h, full_w = sample["image"].shape[-2:]
    if top < 0 or left < 0 or top + height > full_h or left + width > full_w:
        raise ValueError(f"crop {height}x{width} at ({top}, {left}) does not fit in {full_h}x{full_w}")
    out = dict(sample)
    for key in _SPATIAL:
        if key in out:
            out[key] = out[key][..., top : top + height, left : left + width].contiguous()
    if "K" in out:
        K = out["K"].clone()
        K[0, 2] -= left
        K[1, 2] -= top
        out["K"] = K
    return out


def resize(sample: dict, height: int, width: int) -> dict:
    """Resize image and sources (bilinear, antialiased), depth (nearest: never mixes valid with invalid
    depth) and labels (nearest) to ``height x width``, and scale K with them (pixel centres at integers: ``x' = (x + 0.5) s - 0.5``)."""
    h, w = sample["image"].shape[-2:]
    out = dict(sample)
    if (h, w) == (height, width):
        return out
    size = (height, width)
    out["image"] = F.interpolate(sample["image"][None], size=size, mode="bilinear", align_corners=False,
                                 antialias=True)[0]
    if "sources" in sample:
        out["sources"] = F.interpolate(sample["sources"], size=size, mode="bilinear", align_corners=False,
                                       antialias=True)
    if "depth" in sample:
        out["depth"] = F.interpolate(sample["depth"][None], size=size, mode="nearest")[0]
    if "labels" in sample:  # nearest, as depth: a class is never blended with its neighbour's
        out["labels"] = F.interpolate(sample["labels"][None, None].float(), size=size,
                                      mode="nearest")[0, 0].to(sample["labels"].dtype)
    if "K" in sample:
        K = sample["K"].clone()
        for row, s in ((0, width / w), (1, height / h)):
            K[row, row] *= s
            K[row, 2] = (K[row, 2] + 0.5) * s - 0.5
        out["K"] = K
    return out


class RandomCrop:
    """A ``height x width`` window at a uniformly random position (same for image, depth and sources)."""

    def __init__(self, height: int, width: int):
        if height < 1 or width < 1:
            raise ValueError(f"height and width must be positive, got {height}x{width}")
        self.height, self.width = int(height), int(width)

    def __call__(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        full_h, full_w = sample["image"].shape[-2:]
        if full_h < self.height or full_w < self.width:
            raise ValueError(f"cannot crop {self.height}x{self.width} from an image of {full_h}x{full_w}")
        top = int(torch.randint(0, full_h - self.height + 1, (), generator=generator))
        left = int(torch.randint(0, full_w - self.width + 1, (), generator=generator))
        return crop(sample, top, left, self.height, self.width)
