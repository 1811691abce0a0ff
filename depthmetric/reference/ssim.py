"""Reference twins of ``depthmetric::ssim`` and the photometric error, written as Monodepth2 and
pytorch-msssim write them: padded copies, pooled/convolved moment maps, then the SSIM formula."""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import accumulate_dtype

SSIMFn = Callable[[torch.Tensor, torch.Tensor, str, str], torch.Tensor]  # (x, y, window, padding) -> map

C1 = 0.01**2
C2 = 0.03**2


def gaussian_window(dtype: torch.dtype, device: torch.device | str | None, size: int = 11,
                    sigma: float = 1.5) -> torch.Tensor:
    """The 1-d Gaussian of pytorch-msssim: ``exp(-k^2 / (2 sigma^2))`` for ``k = -5..5``, normalised."""
    k = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(k**2) / (2 * sigma**2))
    return (g / g.sum()).to(device, dtype)


def _moments(x: torch.Tensor, y: torch.Tensor, window: str, padding: str) -> tuple[torch.Tensor, ...]:
    if window == "box3":  # Monodepth2's SSIM module
        reflect, pool = nn.ReflectionPad2d(1), nn.AvgPool2d(3, 1)
        x, y = reflect(x), reflect(y)
        return pool(x), pool(y), pool(x * x), pool(y * y), pool(x * y)
    g = gaussian_window(x.dtype, x.device)
    kernel = torch.outer(g, g).expand(x.shape[1], 1, 11, 11)
    pad = 5 if padding == "same" else 0
    if padding == "reflect":  # kornia's padding="same": the border reflected, as ReflectionPad2d does
        x, y = nn.ReflectionPad2d(5)(x), nn.ReflectionPad2d(5)(y)

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, padding=pad, groups=x.shape[1])

    return filt(x), filt(y), filt(x * x), filt(y * y), filt(x * y)


def ssim(x: torch.Tensor, y: torch.Tensor, window: str = "box3", padding: str = "reflect") -> torch.Tensor:
    """SSIM map (``B,C,H',W'``) in the accumulation dtype (float32; float64 for float64)."""
    acc = accumulate_dtype(x.dtype)
    mu_x, mu_y, xx, yy, xy = _moments(x.to(acc), y.to(acc), window, padding)
    sigma_x = xx - mu_x**2
    sigma_y = yy - mu_y**2
    sigma_xy = xy - mu_x * mu_y
    num = (2 * mu_x * mu_y + C1) * (2 * sigma_xy + C2)
    den = (mu_x**2 + mu_y**2 + C1) * (sigma_x + sigma_y + C2)
    return num / den


def dissimilarity(s: torch.Tensor) -> torch.Tensor:
    """Monodepth2's structural dissimilarity of an SSIM map: ``clamp((1 - s) / 2, 0, 1)``."""
    return ((1 - s) / 2).clamp(0, 1)


def photometric_error(a: torch.Tensor, b: torch.Tensor, alpha: float = 0.85, window: str = "box3",
                      ssim_fn: Optional[SSIMFn] = None) -> torch.Tensor:
    """SPIdepth Eq. 2 / Monodepth2's ``compute_reprojection_loss``: ``B,1,H,W``.

    ``alpha * clamp((1 - SSIM) / 2, 0, 1) + (1 - alpha) * |a - b|``, each averaged over channels (the clamp is
    per channel, as Monodepth2's SSIM module returns it). ``ssim_fn(a, b, window, padding)`` defaults to
    :func:`ssim`; the public op passes the compiled one so both backends share this formula.
    """
    ssim_fn = ssim if ssim_fn is None else ssim_fn
    s = ssim_fn(a, b, window, "reflect" if window == "box3" else "same")
    dssim = dissimilarity(s).mean(1, keepdim=True)
    l1 = (a.to(s.dtype) - b.to(s.dtype)).abs().mean(1, keepdim=True)
    return alpha * dssim + (1 - alpha) * l1
