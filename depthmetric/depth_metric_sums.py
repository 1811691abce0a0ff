"""``depthmetric::depth_metric_sums``: the per-image sums of the evaluation metrics in one pass that reads each
prediction and ground-truth pixel once (CPU and CUDA kernels; the vectorised PyTorch twin in
``depthmetric.reference.depth_metric_sums`` runs with ``backend="reference"``). The public metrics API on top
of it is ``depthmetric.metrics``.

The op returns ``B,10`` float64 sums (columns ``SUMS``: the counted pixels, then the sums of ``|p-g|/g``,
``(p-g)^2/g``, ``(p-g)^2``, ``e``, ``e^2``, ``|e|`` with ``e = log p - log g``, and the counts of
``max(p/g, g/p) < 1.25^j``, ``j = 1..3``). A pixel inside ``window = (row0, row1, col0, col1)`` counts when
``gt`` is finite, ``> 0`` and ``min_depth < gt < max_depth`` (``<=`` both ends when ``closed``), ``mask`` is
True, and the prediction, times the image's ``scale`` and clamped to ``[min_depth, max_depth]``, is finite and
``> 0``. Per-pixel math runs in the accumulation dtype (float64 for float64 inputs, else float32). Metrics are
not differentiated: the op has no autograd.
"""
from __future__ import annotations

import torch

from . import _autograd, _ext
from .reference import depth_metric_sums as _reference

__all__ = ["depth_metric_sums", "SUMS"]

SUMS = _reference.SUMS


def depth_metric_sums(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None, scale: torch.Tensor | None,
                      min_depth: float, max_depth: float, window: tuple[int, int, int, int], closed: bool,
                      backend: str = "auto") -> torch.Tensor:
    """The ``B,10`` sums of checked ``B,1,H,W`` inputs (of one dtype), by the compiled op or its twin."""
    if _ext.use_kernel(backend, pred.device):
        _autograd.check_untransformed("depthmetric.metrics.compute", (pred, gt))
        return torch.ops.depthmetric.depth_metric_sums(pred, gt, mask, scale, min_depth, max_depth, list(window),
                                                       closed)
    return _reference.depth_metric_sums(pred, gt, mask, scale, min_depth, max_depth, window, closed)


def _register_kernels() -> None:
    """Fake kernel of the compiled op, for torch.compile and meta tensors."""

    @torch.library.register_fake("depthmetric::depth_metric_sums")
    def _(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None, scale: torch.Tensor | None,
          min_depth: float, max_depth: float, window: list[int], closed: bool = False) -> torch.Tensor:
        return pred.new_empty((pred.shape[0], len(SUMS)), dtype=torch.float64)


if _ext.extension_loaded():
    _register_kernels()
