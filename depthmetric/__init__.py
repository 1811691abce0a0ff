"""depthmetric: fused training losses and metrics for monocular depth estimation.

Every op runs as a compiled CPU/CUDA kernel (``backend="auto"``) or as its pure-PyTorch reference twin
(``backend="reference"``); nothing falls back silently. ``build_info()`` says what was compiled.
"""
import sys as _sys

from . import distributed, metrics
from ._checks import set_finite_checks
from ._ext import BACKENDS, build_info
from .attractor_shift import *  # noqa: F401,F403  (attractor_shift, AttractorShift)
from .bin_expectation import *  # noqa: F401,F403  (bin_expectation, BinExpectation)
from .depth_losses import *  # noqa: F401,F403  (TrimmedMAELoss, MultiScaleDerivativeLoss, ScaleShiftInvariantLoss)
from .log_binomial_expectation import *  # noqa: F401,F403  (log_binomial_expectation, LogBinomialExpectation)
from .min_reprojection import *  # noqa: F401,F403  (ReprojectionLoss, min_reprojection_loss)
from .multi_range_contrastive import *  # noqa: F401,F403  (MultiRangeContrastiveLoss, ..., sample_shifts, PRESETS)
from .silog import *  # noqa: F401,F403  (SILogLoss, silog_loss)
from .smoothness import *  # noqa: F401,F403  (edge_aware_smoothness, EdgeAwareSmoothnessLoss)
from .ssim import *  # noqa: F401,F403  (ssim, photometric_error, SSIM, PhotometricError)
from .warping import *  # noqa: F401,F403  (backproject, project, warp)
from .rsa import *  # noqa: F401,F403  (inverse_affine_depth, rsa_loss, RSALoss)
from .segmentation import *  # noqa: F401,F403  (dice_loss, focal_loss, segmentation_distillation_loss, ...)
from .grad_l1 import *  # noqa: F401,F403  (grad_l1_loss, GradL1Loss)
from .order_statistics import *  # noqa: F401,F403  (region_median, trimmed_sum)
from .normalized_losses import *  # noqa: F401,F403  (ssi_trimmed_loss, gradient_matching_loss, MiDaSLoss, ...)
from .hdn import *  # noqa: F401,F403  (hdn_loss, HDNLoss, draw_hdn_regions)

__version__ = "0.1.0"

# The public API: each module's own __all__, read here once (tests/test_registry.py checks that every op in it
# has an entry in the tests' op registry).
__all__ = [
    "metrics", "distributed", "BACKENDS", "build_info", "set_finite_checks",
    *(name for module in ("attractor_shift", "bin_expectation", "depth_losses", "log_binomial_expectation",
                          "min_reprojection", "multi_range_contrastive", "silog", "smoothness", "ssim", "warping",
                          "rsa", "segmentation", "grad_l1", "order_statistics", "normalized_losses", "hdn")
      for name in _sys.modules[f"{__name__}.{module}"].__all__),
]
