"""How the compiled ops meet autograd beyond a first-order backward.

- Double backward (``create_graph=True``): a kernel's backward is not itself differentiable, so under
  ``create_graph`` the ops' backward returns the gradient of the reference twin instead (the same formula,
  as a differentiable graph); :func:`reference_vjp`.
- ``torch.func`` transforms (``grad``, ``vmap``, ``jvp``, ``jacrev``, ...) and forward-mode AD: a kernel
  would compute on the unwrapped values and silently drop the transform (a zero tangent, a lost vmap
  dimension), so it refuses them and names the twin, which supports them all; :func:`check_untransformed`.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
import torch.autograd.forward_ad as forward_ad
from torch._C._functorch import TransformType, get_interpreter_stack, is_functorch_wrapped_tensor


def reference_vjp(forward: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor], grad_output: torch.Tensor,
                  needs_grad: Sequence[bool]) -> list[torch.Tensor | None]:
    """``grad_output``'s vector-Jacobian product through ``forward(*inputs)`` (a kernel's reference twin,
    returning the output the kernel's backward was given the gradient of), as a graph that can itself be
    differentiated; None for each input where ``needs_grad`` is False."""
    wanted = [x for x, need in zip(inputs, needs_grad) if need]
    with torch.enable_grad():
        grads = iter(torch.autograd.grad(forward(*inputs), wanted, grad_output, create_graph=True,
                                         allow_unused=True))
    return [next(grads) if need else None for need in needs_grad]


def is_transformed(t: torch.Tensor) -> bool:
    """``t`` is under a ``torch.func`` transform or carries a forward-mode tangent."""
    return is_functorch_wrapped_tensor(t) or forward_ad.unpack_dual(t).tangent is not None


def check_untransformed(op: str, tensors: Iterable[torch.Tensor]) -> None:
    """Refuse inputs under a ``torch.func`` transform or with a forward-mode tangent for a compiled kernel."""
    if torch.compiler.is_compiling():
        return
    for t in tensors:
        if is_transformed(t):
            raise RuntimeError(
                f"{op}: the compiled kernel does not support torch.func transforms (grad, vmap, jvp, jacrev, "
                "hessian, ...) or forward-mode AD; it would drop the transform silently. Pass "
                "backend='reference' (the pure-PyTorch twin, the same formula, supports them all), or use "
                "torch.autograd.grad / .backward(), with create_graph=True for double backward, which the "
                "kernel supports.")


def under_vmap() -> bool:
    """Inside ``torch.vmap``, where no value can be read on the host (data-dependent checks are skipped)."""
    stack = get_interpreter_stack()
    return bool(stack) and any(level.key() == TransformType.Vmap for level in stack)
