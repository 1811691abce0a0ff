"""Bin heads' depth as an expectation over bin centres (AdaBins, SQLdepth, SPIdepth's self-query layer),
fused on CPU and CUDA.

``depth = sum_k softmax_k(logits / T) c_k`` per pixel. The compiled op never materialises the ``B,K,H,W``
probabilities or the resampled centres: the forward keeps one log-sum-exp and the depth per pixel, and the
backward recomputes ``prob_k`` from them; the centres' gradient is gathered (deterministic, no atomics).
The log-binomial head of ZoeDepth is :func:`depthmetric.log_binomial_expectation`.
"""
from __future__ import annotations

import math
from typing import Any, Union

import torch
from torch import nn

from . import _autograd, _checks, _ext
from .reference import bin_expectation as _reference

__all__ = ["bin_expectation", "BinExpectation"]

CENTERS_LAYOUT = "B,K (per image), B,K,1,1 or B,K,h,w (per pixel)"

# A temperature: a number, or a tensor broadcastable to B,1,H,W.
Temperature = Union[float, torch.Tensor]


def check_centers(centers: torch.Tensor, like: torch.Tensor, like_name: str, bins: int | None = None) -> torch.Tensor:
    """``centers`` as a ``B,K,h,w`` view (``B,K`` becomes ``B,K,1,1``) with ``like``'s batch, dtype and
    device, ``K >= 1`` bins (``bins`` of them when given) and ``h, w >= 1``."""
    _checks.floating("centers", centers)
    if centers.dim() == 2:
        centers = centers[:, :, None, None]
    _checks.ndim("centers", centers, 4, CENTERS_LAYOUT)
    if centers.shape[0] != like.shape[0]:
        raise ValueError(f"centers has batch size {centers.shape[0]} but {like_name} has {like.shape[0]}")
    if bins is not None and centers.shape[1] != bins:
        raise ValueError(f"centers has {centers.shape[1]} bins but {like_name} has {bins}")
    if centers.shape[1] == 0:
        raise ValueError(f"centers has no bins (shape {tuple(centers.shape)}): the expectation needs K >= 1")
    if centers.shape[2] == 0 or centers.shape[3] == 0:
        raise ValueError(f"centers must have h, w >= 1 to be resampled, got shape {tuple(centers.shape)}")
    if centers.dtype != like.dtype:
        raise TypeError(f"centers must have the dtype of {like_name} ({like.dtype}), got {centers.dtype}")
    _checks.same_device(**{like_name: like, "centers": centers})
    return centers


def check_positive(name: str, value: object) -> float:
    """A number that is finite and > 0 (a temperature)."""
    number = _checks.real(name, value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {number!r}")
    return number


def pixel_map(name: str, value: object, like: torch.Tensor) -> torch.Tensor:
    """A temperature (a number, a 0-d tensor, a ``B,H,W`` tensor or one broadcastable to ``B,1,H,W``) as a
    ``B,1,H,W`` map in the accumulation dtype of ``like``: an expanded view (a number or a 0-d tensor is
    one element with stride 0, not a copy); the gradient of a tensor flows back through it."""
    B, _, H, W = like.shape
    acc = _checks.accumulate_dtype(like.dtype)
    if not isinstance(value, torch.Tensor):
        return torch.full((), check_positive(name, value), dtype=acc, device=like.device).expand(B, 1, H, W)
    _checks.floating(name, value)
    _checks.same_device(input=like, **{name: value})
    t = value.unsqueeze(1) if value.dim() == 3 else value
    if t.dim() > 4 or any(n not in (1, m) for n, m in zip(t.shape[::-1], (W, H, 1, B))):
        raise ValueError(f"{name} must be a number, a 0-d tensor, B,H,W or broadcastable to B,1,H,W = "
                         f"{(B, 1, H, W)}, got shape {tuple(value.shape)}")
    return t.to(acc).expand(B, 1, H, W)


def bin_expectation(
    logits: torch.Tensor,
    centers: torch.Tensor,
    *,
    temperature: Temperature = 1.0,
    return_probs: bool = False,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Depth as the expectation of bin centres under ``softmax(logits / temperature)`` over the bins.

    ``logits``: ``B,K,H,W`` (float16, bfloat16, float32 or float64; ``K >= 1``). ``centers``: the bin
    centres in metres, ``B,K`` (per image, AdaBins), ``B,K,1,1``, or ``B,K,h,w`` (per pixel), with the
    logits' dtype and device; per-pixel centres of another size are resampled to ``H,W`` exactly as
    ``F.interpolate(centers, (H, W), mode="bilinear", align_corners=True)`` (in the accumulation dtype).
    ``temperature``: a number > 0, or a tensor (0-d, ``B,H,W`` or broadcastable to ``B,1,H,W``, any floating
    dtype) that gets a gradient; a tensor's values are not checked for sign (0 divides by zero).

    ``depth[b, 0] = sum_k softmax_k(logits[b] / T) * c[b, k]``, ``B,1,H,W`` in the logits' dtype, arithmetic
    in float32 (float64 for float64). Gradients reach ``logits``, ``centers`` and a tensor ``temperature``.
    With ``return_probs=True`` also the ``B,K,H,W`` probabilities (no gradient; for figures).

    Args:
        logits: the bins' scores, floating ``B,K,H,W`` with ``K >= 1``.
        centers: the bin centres in metres, ``B,K``, ``B,K,1,1`` or ``B,K,h,w``, with the logits' dtype and
            device.
        temperature: a number > 0 (default 1), or a floating tensor (0-d, ``B,H,W`` or broadcastable to
            ``B,1,H,W``) that gets a gradient.
        return_probs: also return the probabilities. Default False.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``.

    Returns:
        The depth, ``B,1,H,W`` in the logits' dtype; with ``return_probs=True`` the tuple ``(depth, probs)``,
        ``probs`` ``B,K,H,W`` without gradient.

    Raises:
        TypeError: a wrong type or dtype, named.
        ValueError: a wrong shape or device, no bins, a non-positive or non-finite number temperature, and
            NaN/Inf in ``logits``, ``centers`` or a tensor ``temperature`` (see
            :func:`depthmetric.set_finite_checks`).
        RuntimeError: ``backend="auto"`` when the kernel for the device was not built.
    """
    logits = _checks.ndim("logits", _checks.floating("logits", logits), 4, "B,K,H,W")
    if logits.shape[1] == 0:
        raise ValueError(f"logits has no bins (shape {tuple(logits.shape)}): the softmax needs K >= 1")
    centers = check_centers(centers, logits, "logits", logits.shape[1])
    t = pixel_map("temperature", temperature, logits)
    _checks.flag("return_probs", return_probs)
    named = {"logits": logits, "centers": centers}
    if isinstance(temperature, torch.Tensor):
        named["temperature"] = temperature
    _checks.check_values(named)
    if _ext.use_kernel(backend, logits.device):
        _autograd.check_untransformed("depthmetric.bin_expectation", (logits, centers, t))
        depth, _, probs = torch.ops.depthmetric.bin_expectation(logits, centers, t, return_probs)
    else:
        depth, probs = _reference.bin_expectation(logits, centers, t, return_probs)
    return (depth, probs) if return_probs else depth


class BinExpectation(nn.Module):
    """AdaBins/SQLdepth's bin head: ``depth = sum_k softmax_k(logits / temperature) c_k``.

    >>> import torch
    >>> from depthmetric import BinExpectation
    >>> logits = torch.randn(2, 16, 4, 4)
    >>> centers = torch.linspace(0.5, 10, 16).expand(2, 16)
    >>> head = BinExpectation()
    >>> depth = head(logits, centers)   # logits B,K,H,W; centers B,K (per image) or B,K,h,w (per pixel)
    >>> depth.shape
    torch.Size([2, 1, 4, 4])

    ``temperature``: a number > 0, or a tensor (e.g. an ``nn.Parameter``) broadcastable to ``B,1,H,W``. See
    :func:`bin_expectation` for shapes, dtypes, the resampling of the centres and the errors.

    Args:
        temperature: a number > 0 (default 1), or a floating tensor broadcastable to ``B,1,H,W``.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``.

    Returns:
        Called as ``head(logits, centers, return_probs=False)``: what :func:`bin_expectation` returns.

    Raises:
        TypeError, ValueError: a bad temperature or backend.
    """

    def __init__(self, temperature: Temperature = 1.0, backend: str = "auto") -> None:
        super().__init__()
        if not isinstance(temperature, torch.Tensor):
            temperature = check_positive("temperature", temperature)
        _ext.check_backend(backend)
        self.temperature, self.backend = temperature, backend

    def forward(self, logits: torch.Tensor, centers: torch.Tensor,
                return_probs: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The expected depth of ``logits`` over ``centers``.

        Args:
            logits: the bins' scores, floating ``B,K,H,W``.
            centers: the bin centres, ``B,K``, ``B,K,1,1`` or ``B,K,h,w``.
            return_probs: also return the probabilities. Default False.

        Returns:
            What :func:`bin_expectation` returns.
        """
        return bin_expectation(logits, centers, temperature=self.temperature, return_probs=return_probs,
                               backend=self.backend)

    def extra_repr(self) -> str:
        t = self.temperature if not isinstance(self.temperature, torch.Tensor) else "tensor"
        return f"temperature={t}, backend={self.backend!r}"


def _register_kernels() -> None:
    """Fake kernels (for torch.compile / meta tensors) and autograd of the compiled op."""

    @torch.library.register_fake("depthmetric::bin_expectation")
    def _(logits: torch.Tensor, centers: torch.Tensor, temperature: torch.Tensor,
          return_probs: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, K, H, W = logits.shape
        acc = _checks.accumulate_dtype(logits.dtype)
        return (logits.new_empty((B, 1, H, W)), logits.new_empty((2, B, H, W), dtype=acc),
                logits.new_empty((B, K, H, W) if return_probs else (0,)))

    @torch.library.register_fake("depthmetric::_bin_expectation_backward")
    def _(grad: torch.Tensor, logits: torch.Tensor, centers: torch.Tensor, temperature: torch.Tensor,
          stats: torch.Tensor, need_logits: bool = True, need_centers: bool = True,
          need_temperature: bool = True) -> tuple[torch.Tensor, ...]:
        return tuple(torch.empty(x.shape if need else (0,), dtype=x.dtype, device=x.device)
                     for x, need in ((logits, need_logits), (centers, need_centers),
                                     (temperature, need_temperature)))

    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, ...]) -> None:
        logits, centers, temperature, _ = inputs
        ctx.mark_non_differentiable(output[1], output[2])
        ctx.save_for_backward(logits, centers, temperature, output[1])

    def backward(ctx: Any, grad: torch.Tensor, grad_stats: torch.Tensor | None,
                 grad_probs: torch.Tensor | None) -> tuple[Any, ...]:
        logits, centers, temperature, stats = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():  # create_graph=True: a gradient that can be differentiated again
            grads = _autograd.reference_vjp(lambda l, c, t: _reference.bin_expectation(l, c, t, False)[0],
                                            (logits, centers, temperature), grad, needs)
            return (*grads, None)
        # grad goes as it comes (from a sum, an expanded scalar): both kernels read it through its strides.
        grads = torch.ops.depthmetric._bin_expectation_backward(grad, logits, centers, temperature, stats, *needs)
        return (*(g if need else None for g, need in zip(grads, needs)), None)

    torch.library.register_autograd("depthmetric::bin_expectation", backward, setup_context=setup_context)


if _ext.extension_loaded():
    _register_kernels()
