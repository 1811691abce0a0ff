"""View synthesis for self-supervised training: back-project, transform, project, sample.

These follow Monodepth2's ``BackprojectDepth`` / ``Project3D`` and its ``grid_sample`` call:

- pixel ``(x, y)`` is column ``x`` (along the width) and row ``y``; a camera point is
  ``depth * K^-1 @ [x, y, 1]``, with a row of ones appended (homogeneous, ``B,4,H*W``);
- ``P = (K @ T)[:3]`` maps those points into the source camera, pixels are ``P[:2] / (P[2] + 1e-7)``
  and are normalised for ``align_corners=True`` sampling as ``(x / (W - 1) - 0.5) * 2``;
- the source image is sampled with ``F.grid_sample(mode="bilinear", padding_mode="border",
  align_corners=True)``.

``T`` maps points from the target camera's frame to the source camera's frame (``B,4,4``). ``K`` and
``inv_K`` may be ``3,3``/``4,4`` (shared by the batch) or ``B,3,3``/``B,4,4``; a 3x3 ``K`` is used as the
4x4 matrix ``[[K, 0], [0, 1]]``, which is what Monodepth2's 4x4 intrinsics are. The geometry is computed
in float32 at least (float64 stays float64), because 16-bit floats cannot hold pixel coordinates of a
640-pixel-wide image to sub-pixel precision; for the same reason a 16-bit image is sampled in float32
(as ``grid_sample`` runs under autocast anyway) and the result cast back to its dtype.

These are plain differentiable PyTorch ops (small matmuls and one ``grid_sample``): nothing here that a
fused kernel would speed up materially.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _checks
from ._precision import full_precision

__all__ = ["backproject", "project", "warp"]

_EPS = 1e-7  # Monodepth2's Project3D epsilon on the projected z


def _geometry_dtype(*dtypes: torch.dtype) -> torch.dtype:
    out = torch.float32
    for dtype in dtypes:
        out = torch.promote_types(out, dtype)
    return out


def _matrix(name: str, m: torch.Tensor, batch: int, sizes: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """``m`` as ``B,n,n`` (n in ``sizes``); a single ``n,n`` matrix (or batch 1) broadcasts over ``batch``."""
    _checks.floating(name, m)
    if m.dim() == 2:
        m = m.unsqueeze(0)
    shapes = " or ".join(f"{n},{n} / B,{n},{n}" for n in sizes)
    if m.dim() != 3 or m.shape[-1] != m.shape[-2] or m.shape[-1] not in sizes:
        raise ValueError(f"{name} must be {shapes}, got shape {tuple(m.shape)}")
    if m.shape[0] not in (1, batch):
        raise ValueError(f"{name} has batch size {m.shape[0]} but the depth/points have {batch}")
    if m.device != device:
        raise ValueError(f"{name} is on {m.device} but the depth/points are on {device}")
    return m.expand(batch, -1, -1)


def _as_4x4(k: torch.Tensor) -> torch.Tensor:
    if k.shape[-1] == 4:
        return k
    out = torch.zeros(k.shape[0], 4, 4, dtype=k.dtype, device=k.device)
    out[:, :3, :3] = k
    out[:, 3, 3] = 1
    return out


def _pixel_grid(height: int, width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``3,H*W``: rows x (column index), y (row index), 1, in row-major pixel order."""
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=device),
        torch.arange(width, dtype=dtype, device=device),
        indexing="ij",
    )
    return torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones_like(xs).reshape(-1)], 0)


@full_precision
def backproject(depth: torch.Tensor, inv_K: torch.Tensor) -> torch.Tensor:
    """Camera points of every pixel: ``depth * inv_K[:3, :3] @ [x, y, 1]``, plus a row of ones.

    ``depth`` is ``B,1,H,W`` or ``B,H,W`` (metres; invalid values are carried through, not masked);
    ``inv_K`` is ``3,3``/``4,4``/``B,3,3``/``B,4,4``. Returns ``B,4,H*W`` in float32 (float64 for float64
    input), ordered row-major over the pixels like ``depth.flatten(2)``.

    Args:
        depth: the depth, floating ``B,1,H,W`` or ``B,H,W``, metres.
        inv_K: the inverse intrinsics, ``3,3``, ``4,4``, ``B,3,3`` or ``B,4,4``, on the depth's device.

    Returns:
        The homogeneous camera points, ``B,4,H*W``, float32 (float64 for float64 input).

    Raises:
        TypeError: a non-tensor or non-floating input.
        ValueError: a depth that is not one channel, a matrix of another shape, batch or device.
    """
    depth = _checks.depth_map("depth", depth)
    batch, _, height, width = depth.shape
    inv_K = _matrix("inv_K", inv_K, batch, (3, 4), depth.device)
    dtype = _geometry_dtype(depth.dtype, inv_K.dtype)
    rays = inv_K[:, :3, :3].to(dtype) @ _pixel_grid(height, width, dtype, depth.device)
    points = depth.flatten(2).to(dtype) * rays
    return torch.cat([points, torch.ones_like(points[:, :1])], 1)


@full_precision
def project(
    points: torch.Tensor,
    K: torch.Tensor,
    T: torch.Tensor,
    height: int | None = None,
    width: int | None = None,
) -> torch.Tensor:
    """Normalised sampling grid ``B,H,W,2`` (x then y, in [-1, 1] inside the image) of camera points.

    ``points`` are homogeneous target-camera points, ``B,4,H*W`` (as :func:`backproject` returns, then
    ``height`` and ``width`` are required) or ``B,4,H,W``. ``T`` (``B,4,4`` or ``4,4``) moves them into
    the source camera and ``K`` projects them: pixel ``= P[:2] / (P[2] + 1e-7)`` with ``P = (K @ T)[:3] @
    points``, normalised as ``(x / (W - 1) - 0.5) * 2`` for ``grid_sample(align_corners=True)``. Points
    behind the camera are not masked (as in Monodepth2); they land far outside the image or mirrored.

    Args:
        points: homogeneous target-camera points, floating ``B,4,H*W`` or ``B,4,H,W``.
        K: the intrinsics, ``3,3``, ``4,4``, ``B,3,3`` or ``B,4,4``.
        T: the target-camera -> source-camera transform, ``4,4`` or ``B,4,4``.
        height: ``H``; required with ``B,4,H*W`` points. Default ``None``.
        width: ``W``; required with ``B,4,H*W`` points. Default ``None``.

    Returns:
        The sampling grid, ``B,H,W,2``, float32 (float64 for float64 input).

    Raises:
        TypeError: non-floating points.
        ValueError: shapes that do not fit, ``height``/``width`` missing, disagreeing or < 2, a matrix of
            another shape, batch or device.
    """
    _checks.floating("points", points)
    if points.dim() == 4:
        if (height is not None and height != points.shape[2]) or (width is not None and width != points.shape[3]):
            raise ValueError(
                f"height/width ({height}, {width}) disagree with points of shape {tuple(points.shape)}"
            )
        height, width = points.shape[2], points.shape[3]
        points = points.flatten(2)
    elif points.dim() == 3:
        if height is None or width is None:
            raise ValueError("height and width are required when points is B,4,H*W")
        if points.shape[2] != height * width:
            raise ValueError(f"points has {points.shape[2]} columns but height*width is {height * width}")
    else:
        raise ValueError(f"points must be B,4,H*W or B,4,H,W, got shape {tuple(points.shape)}")
    if points.shape[1] != 4:
        raise ValueError(f"points must be homogeneous (4 rows: x, y, z, 1), got shape {tuple(points.shape)}")
    if height < 2 or width < 2:
        raise ValueError(f"height and width must be >= 2 to normalise coordinates, got {height}x{width}")
    batch = points.shape[0]
    K = _matrix("K", K, batch, (3, 4), points.device)
    T = _matrix("T", T, batch, (4,), points.device)
    dtype = _geometry_dtype(points.dtype, K.dtype, T.dtype)
    P = (_as_4x4(K.to(dtype)) @ T.to(dtype))[:, :3, :]
    cam = P @ points.to(dtype)
    pix = cam[:, :2] / (cam[:, 2:3] + _EPS)
    pix = pix.reshape(batch, 2, height, width).permute(0, 2, 3, 1)
    scale = pix.new_tensor([width - 1, height - 1])
    return (pix / scale - 0.5) * 2


@full_precision
def warp(
    image: torch.Tensor,
    depth: torch.Tensor,
    T: torch.Tensor,
    K: torch.Tensor,
    inv_K: torch.Tensor | None = None,
    align_corners: bool = True,
) -> torch.Tensor:
    """Synthesise the target view from the source ``image`` (``B,C,H,W``).

    ``depth`` is the target view's depth (``B,1,H,W`` or ``B,H,W``, same ``H,W`` as ``image``), ``T`` the
    target-camera -> source-camera transform (``B,4,4`` or ``4,4``), ``K`` the intrinsics at this
    resolution; ``inv_K`` defaults to the inverse of ``K[:3, :3]``. Pixels projecting outside the source
    take the border value (``padding_mode="border"``), as in Monodepth2. Returns ``B,C,H,W`` in the
    image's dtype, differentiable in ``image``, ``depth``, ``T`` and ``K``. NaN/Inf in ``image`` or ``depth``
    raise a ``ValueError`` (see ``depthmetric.set_finite_checks``).

    The grid of :func:`project` puts pixel centres at integers, which ``grid_sample`` reads exactly with
    ``align_corners=True`` (the default: a point that projects onto pixel ``(x, y)`` samples it).
    ``align_corners=False`` reproduces Monodepth2 on torch >= 1.3, which builds the same grid but samples
    with ``grid_sample``'s default, so its warps sit up to half a pixel off towards the borders.

    Args:
        image: the source image, floating ``B,C,H,W`` with ``H, W >= 2``.
        depth: the target view's depth, ``B,1,H,W`` or ``B,H,W``, at the image's ``H,W``.
        T: the target-camera -> source-camera transform, ``4,4`` or ``B,4,4``.
        K: the intrinsics at this resolution, ``3,3``, ``4,4``, ``B,3,3`` or ``B,4,4``.
        inv_K: the inverse intrinsics; ``None`` (default): the inverse of ``K[:3, :3]``.
        align_corners: ``grid_sample``'s; True (default) samples the projected pixel centres exactly.

    Returns:
        The warped image, ``B,C,H,W`` in the image's dtype.

    Raises:
        TypeError: a non-tensor or non-floating input, a non-bool ``align_corners``.
        ValueError: shapes, sizes or devices that do not match, NaN/Inf in ``image`` or ``depth``.
    """
    _checks.image("image", image)
    _checks.flag("align_corners", align_corners)
    depth = _checks.depth_map("depth", depth, batch=image.shape[0])
    _checks.same_device(image=image, depth=depth)
    _checks.image_sized("depth", depth, image, "; resize the depth (or the image) to the resolution being warped")
    # A NaN/Inf depth (a diverged network) would warp to a plausible image yet put NaN into depth's gradient.
    _checks.check_values({"image": image, "depth": depth})
    batch, _, height, width = image.shape
    if height < 2 or width < 2:
        raise ValueError(f"image must be at least 2x2 to be warped, got shape {tuple(image.shape)}")
    K = _matrix("K", K, batch, (3, 4), image.device)
    # one geometry dtype for all inputs (a float64 image gets float64 geometry); 16-bit grids would
    # misplace samples by up to ~0.4% of the image width, so a 16-bit image is sampled in float32.
    dtype = _geometry_dtype(image.dtype, depth.dtype, K.dtype)
    if inv_K is None:
        inv_K = torch.linalg.inv(K[:, :3, :3].to(dtype))
    points = backproject(depth.to(dtype), inv_K)
    grid = project(points, K, T, height, width).to(dtype)
    warped = F.grid_sample(image.to(dtype), grid, mode="bilinear", padding_mode="border",
                           align_corners=align_corners)
    return warped.to(image.dtype)
