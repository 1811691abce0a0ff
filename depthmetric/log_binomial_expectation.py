"""ZoeDepth's log-binomial bin head (metric bins): ``LogBinomial`` followed by the expectation over the bin
centres, fused on CPU and CUDA.

``l_k = (lb(K-1, k) + k log(clamp(p, eps, 1)) + (K-1-k) log(clamp(1-p, eps, 1))) / t`` and
``depth = sum_k softmax_k(l) c_k``. The compiled op computes the ``K`` logits of a pixel from ``p`` and ``t``
where it needs them: nothing of size ``B,K,H,W`` is stored (ZoeDepth's module materialises the logits, the
probabilities and the product with the centres); the backward recomputes the probabilities from one
log-sum-exp per pixel and gathers the centres' gradient (deterministic, no atomics).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from . import _autograd, _checks, _ext
from .bin_expectation import Temperature, check_centers, pixel_map
from .reference import log_binomial_expectation as _reference

__all__ = ["log_binomial_expectation", "LogBinomialExpectation"]

EPS = 1e-4  # ZoeDepth's clamp of p and 1 - p


def check_eps(eps: object) -> float:
    value = _checks.real("eps", eps)
    if not (math.isfinite(value) and 0 < value < 1):
        raise ValueError(f"eps must be a number in (0, 1), got {value!r}")
    return value


def check_p(p: object) -> torch.Tensor:
    """``p`` as ``B,1,H,W`` (``B,H,W`` accepted)."""
    p = _checks.floating("p", p)
    if p.dim() == 3:
        p = p.unsqueeze(1)
    if p.dim() != 4 or p.shape[1] != 1:
        raise ValueError(f"p must be B,H,W or B,1,H,W (one channel), got shape {tuple(p.shape)}")
    return p


def log_binomial_expectation(
    p: torch.Tensor,
    t: Temperature,
    centers: torch.Tensor,
    *,
    eps: float = EPS,
    return_probs: bool = False,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """ZoeDepth's ``LogBinomial(K)(p, t, eps)`` followed by ``sum_k prob_k c_k``.

    ``p``: the binomial's success probability, ``B,H,W`` or ``B,1,H,W`` (float16, bfloat16, float32 or
    float64; values are clamped to ``[eps, 1]`` and ``1 - p`` to ``[eps, 1]`` as ZoeDepth does). ``t``: the
    temperature, a number > 0 or a tensor (``B,1,H,W``, ``B,H,W``, 0-d or broadcastable; ZoeDepth keeps it
    in ``[0.0212, 50]``) that gets a gradient. ``centers``: ``B,K`` (per image), ``B,K,1,1`` or ``B,K,h,w``
    (per pixel; resampled to ``H,W`` exactly as ``F.interpolate(mode="bilinear", align_corners=True)``),
    with ``p``'s dtype and device; ``K = centers.shape[1] >= 1`` bins.

    ``l_k = (lb(K-1, k) + k log(clamp(p, eps, 1)) + (K-1-k) log(clamp(1-p, eps, 1))) / t`` with ZoeDepth's
    Stirling ``lb(n, k) = n' log n' - k' log k' - (n'-k') log(n'-k'+1e-7)``, ``n' = n + 1e-7``,
    ``k' = k + 1e-7`` (computed in float64 here, ZoeDepth's buffers are float32), softmax over ``k``, depth
    ``B,1,H,W`` in ``p``'s dtype (arithmetic in float32, float64 for float64). Gradients reach ``p``, a
    tensor ``t`` and ``centers``, with the clamps' gradient passing where ``eps <= x <= 1``, bounds included (at
    ``p == 1`` the clamp of ``p`` passes and that of ``1 - p`` blocks; at ``p == 0`` the reverse), as
    ``torch.clamp``'s autograd does up to torch 2.13 (the torches ZoeDepth was written for); torch 2.14's
    ``torch.clamp`` with number bounds blocks the gradient at the bounds themselves, so there autograd
    through ZoeDepth's module differs at those points. With
    ``return_probs=True`` also the ``B,K,H,W`` probabilities (no gradient; for figures).

    Args:
        p: the binomial's success probability, floating ``B,H,W`` or ``B,1,H,W``.
        t: the temperature, a number > 0 or a floating tensor (``B,1,H,W``, ``B,H,W``, 0-d or broadcastable)
            that gets a gradient.
        centers: the bin centres in metres, ``B,K``, ``B,K,1,1`` or ``B,K,h,w``, with ``p``'s dtype and
            device.
        eps: the clamp of ``p`` and ``1 - p``, in (0, 1). Default 1e-4 (ZoeDepth's).
        return_probs: also return the probabilities. Default False.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``.

    Returns:
        The depth, ``B,1,H,W`` in ``p``'s dtype; with ``return_probs=True`` the tuple ``(depth, probs)``,
        ``probs`` ``B,K,H,W`` without gradient.

    Raises:
        TypeError: a wrong type or dtype, named.
        ValueError: a wrong shape or device, no bins, ``eps`` outside (0, 1), a non-positive or non-finite
            number ``t``, and NaN/Inf in ``p``, ``t`` or ``centers`` (see
            :func:`depthmetric.set_finite_checks`).
        RuntimeError: ``backend="auto"`` when the kernel for the device was not built.
    """
    p = check_p(p)
    centers = check_centers(centers, p, "p")
    tm = pixel_map("t", t, p)
    eps = check_eps(eps)
    _checks.flag("return_probs", return_probs)
    named = {"p": p, "centers": centers}
    if isinstance(t, torch.Tensor):
        named["t"] = t
    _checks.check_values(named)
    if _ext.use_kernel(backend, p.device):
        _autograd.check_untransformed("depthmetric.log_binomial_expectation", (p, tm, centers))
        depth, _, probs = torch.ops.depthmetric.log_binomial_expectation(p, tm, centers, eps, return_probs)
    else:
        depth, probs = _reference.log_binomial_expectation(p, tm, centers, eps, return_probs)
    return (depth, probs) if return_probs else depth


class LogBinomialExpectation(nn.Module):
    """ZoeDepth's metric-bins head: ``LogBinomial`` then the expectation over the bin centres.

    >>> import torch
    >>> from depthmetric import LogBinomialExpectation
    >>> p, t = torch.rand(2, 1, 4, 4), 1.0
    >>> centers = torch.linspace(0.5, 10, 16).expand(2, 16)
    >>> head = LogBinomialExpectation()
    >>> depth = head(p, t, centers)   # p B,1,H,W; t B,1,H,W or a number; centers B,K or B,K,h,w
    >>> depth.shape
    torch.Size([2, 1, 4, 4])

    See :func:`log_binomial_expectation` for shapes, dtypes, the formula, ZoeDepth's conventions and the
    errors.

    Args:
        eps: the clamp of ``p`` and ``1 - p``, in (0, 1). Default 1e-4.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``.

    Returns:
        Called as ``head(p, t, centers, return_probs=False)``: what :func:`log_binomial_expectation` returns.

    Raises:
        TypeError, ValueError: a bad ``eps`` or backend.
    """

    def __init__(self, eps: float = EPS, backend: str = "auto") -> None:
        super().__init__()
        _ext.check_backend(backend)
        self.eps, self.backend = check_eps(eps), backend

    def forward(self, p: torch.Tensor, t: Temperature, centers: torch.Tensor,
                return_probs: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The expected depth of the log-binomial distribution of ``p`` and ``t`` over ``centers``.

        Args:
            p: the success probability, ``B,H,W`` or ``B,1,H,W``.
            t: the temperature, a number > 0 or a tensor broadcastable to ``B,1,H,W``.
            centers: the bin centres, ``B,K``, ``B,K,1,1`` or ``B,K,h,w``.
            return_probs: also return the probabilities. Default False.

        Returns:
            What :func:`log_binomial_expectation` returns.
        """
        return log_binomial_expectation(p, t, centers, eps=self.eps, return_probs=return_probs,
                                        backend=self.backend)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, backend={self.backend!r}"


def _register_kernels() -> None:
    """Fake kernels (for torch.compile / meta tensors) and autograd of the compiled op."""

    @torch.library.register_fake("depthmetric::log_binomial_expectation")
    def _(p: torch.Tensor, t: torch.Tensor, centers: torch.Tensor, eps: float,
          return_probs: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, _, H, W = p.shape
        acc = _checks.accumulate_dtype(p.dtype)
        return (p.new_empty((B, 1, H, W)), p.new_empty((2, B, H, W), dtype=acc),
                p.new_empty((B, centers.shape[1], H, W) if return_probs else (0,)))

    @torch.library.register_fake("depthmetric::_log_binomial_expectation_backward")
    def _(grad: torch.Tensor, p: torch.Tensor, t: torch.Tensor, centers: torch.Tensor, stats: torch.Tensor,
          eps: float, need_p: bool = True, need_t: bool = True, need_centers: bool = True) -> tuple[torch.Tensor, ...]:
        return tuple(torch.empty(x.shape if need else (0,), dtype=x.dtype, device=x.device)
                     for x, need in ((p, need_p), (t, need_t), (centers, need_centers)))

    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, ...]) -> None:
        p, t, centers, eps, _ = inputs
        ctx.eps = eps
        ctx.mark_non_differentiable(output[1], output[2])
        ctx.save_for_backward(p, t, centers, output[1])

    def backward(ctx: Any, grad: torch.Tensor, grad_stats: torch.Tensor | None,
                 grad_probs: torch.Tensor | None) -> tuple[Any, ...]:
        p, t, centers, stats = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():  # create_graph=True: a gradient that can be differentiated again
            grads = _autograd.reference_vjp(
                lambda p, t, c: _reference.log_binomial_expectation(p, t, c, ctx.eps, False)[0], (p, t, centers),
                grad, needs)
            return (*grads, None, None)
        # grad goes as it comes (from a sum, an expanded scalar): both kernels read it through its strides.
        grads = torch.ops.depthmetric._log_binomial_expectation_backward(grad, p, t, centers, stats, ctx.eps, *needs)
        return (*(g if need else None for g, need in zip(grads, needs)), None, None)

    torch.library.register_autograd("depthmetric::log_binomial_expectation", backward, setup_context=setup_context)


if _ext.extension_loaded():
    _register_kernels()
