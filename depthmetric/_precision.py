"""The ops' arithmetic keeps the precision they state under ``torch.autocast``: autocast would run the
convolutions and matrix products of the PyTorch paths (the gauss11 SSIM window, the camera geometry) in
16 bits and return 16-bit losses from float32 inputs, where the compiled kernels, which autocast does not
touch, return float32."""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, TypeVar

import torch

__all__ = ["full_precision"]

F = TypeVar("F", bound=Callable[..., Any])


def full_precision(fn: F) -> F:
    """``fn`` with autocast switched off on each device where it is on (and nothing entered elsewhere)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with contextlib.ExitStack() as stack:
            for device in ("cpu", "cuda"):
                if torch.is_autocast_enabled(device):
                    stack.enter_context(torch.autocast(device, enabled=False))
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]  # functools.wraps keeps fn's signature
