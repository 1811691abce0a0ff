"""``depthmetric.metrics.DepthMetricsTM``: :class:`depthmetric.metrics.DepthMetrics` as a torchmetrics
``Metric`` (for Lightning), with torchmetrics' own state syncing. Importable only with torchmetrics installed."""
from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric

from . import metrics


class DepthMetricsTM(Metric):
    """The evaluation metrics of :func:`depthmetric.metrics.compute` accumulated over a data set, each image
    counted once by its id (``update(pred, gt, mask=None, ids=None)``); ``compute()`` returns the dict of
    :meth:`DepthMetrics.compute` as tensors (float64 metrics, int64 ``"images"``). Takes :class:`DepthMetrics`' options and
    torchmetrics' keyword arguments (``process_group``, ``dist_sync_on_step``, ...). The state and its
    arithmetic are :class:`DepthMetrics`'; torchmetrics syncs it (sums added, id lists concatenated)."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    sums: torch.Tensor  # the states of metrics.empty_state, registered by add_state
    images: torch.Tensor
    ids: list[torch.Tensor]
    rows: list[torch.Tensor]

    def __init__(self, dataset: str | None = None, min_depth: float | None = None, max_depth: float | None = None,
                 crop: str | None = "auto", median_scaling: bool = False, backend: str = "auto",
                 bounds: str = "open", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._options = metrics.DepthMetrics(dataset, min_depth, max_depth, crop, median_scaling, backend,
                                             bounds=bounds).options
        for name, default in metrics.empty_state().items():
            self.add_state(name, default=default, dist_reduce_fx="cat" if isinstance(default, list) else "sum")

    def update(self, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None,
               ids: metrics.Ids | None = None) -> None:
        metrics.add_batch(self, metrics.compute(pred, gt, mask=mask, **self._options), ids)

    def compute(self) -> dict[str, torch.Tensor]:
        """The metrics as 0-d float64 tensors (``"images"`` int64), as a torchmetrics ``Metric`` returns them."""
        values = metrics.combine(self.sums, self.images, self.ids, self.rows)
        return {name: torch.tensor(value, dtype=torch.int64 if name == "images" else torch.float64,
                                   device=self.sums.device) for name, value in values.items()}
