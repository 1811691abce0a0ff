"""depthmetric: fused training losses and metrics for monocular depth estimation.

Every op runs as a compiled CPU/CUDA kernel (``backend="auto"``) or as its pure-PyTorch reference twin
(``backend="reference"``); nothing falls back silently. ``build_info()`` says what was compiled.
"""
from ._checks import set_finite_checks
from ._ext import BACKENDS, build_info
from .multi_range_contrastive import (
    PRESETS,
    MultiRangeContrastiveLoss,
    multi_range_contrastive_loss,
    sample_shifts,
)

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "build_info",
    "set_finite_checks",
    "MultiRangeContrastiveLoss",
    "multi_range_contrastive_loss",
    "sample_shifts",
    "PRESETS",
]
