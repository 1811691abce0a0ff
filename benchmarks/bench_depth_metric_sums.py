"""The evaluation pass, ``depthmetric.metrics.compute`` (op "metrics"), whose per-image sums are the fused
``depthmetric::depth_metric_sums``: kernel vs reference, forward only (metrics are not differentiated), on
the depth losses' NYU and KITTI batches (see ``bench_depth_losses``), each with its data set's preset.
"""
from __future__ import annotations

import torch

import depthmetric
from benchmarks.bench_depth_losses import SIZES, make_inputs  # noqa: F401  (make_inputs: this file's too)
from benchmarks.harness import Case, backend_arg

CASES = [Case("metrics", label, dims, sets=sets, backward=False) for label, dims, sets in SIZES]


def flops(case: Case, mode: str) -> float:
    """Per pixel: range and validity (6), clamp (2), difference and ratio (2), one log, max ratio (2), |d| (1),
    the 10 sums with their terms (20)."""
    return case.dims["B"] * case.dims["H"] * case.dims["W"] * 34


def make_fn(case: Case, backend: str, device: torch.device):
    dataset, name = case.dims["dataset"], backend_arg(backend, device)

    def metrics(inputs: dict):
        with torch.no_grad():
            return depthmetric.metrics.compute(inputs["pred"], inputs["gt"], dataset=dataset, backend=name)

    return metrics
