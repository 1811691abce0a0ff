"""``depthmetric.metrics.DepthMetricsTM``: :class:`depthmetric.metrics.DepthMetrics` as a torchmetrics
``Metric`` (for Lightning), with torchmetrics' own state syncing. Importable only with torchmetrics installed."""
from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from . import metrics


class DepthMetricsTM(Metric):
    """The evaluation metrics of :func:`depthmetric.metrics.compute` accumulated over a data set, each image
    counted once by its id (``update(pred, gt, mask=None, ids=None)``); ``compute()`` returns the dict of
    :meth:`DepthMetrics.compute` (float metrics and ``"images"``). Takes :class:`DepthMetrics`' options and
    torchmetrics' keyword arguments (``process_group``, ``dist_sync_on_step``, ...)."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(self, dataset=None, min_depth=None, max_depth=None, crop="auto", median_scaling=False,
                 backend="auto", bounds="open", **kwargs):
        super().__init__(**kwargs)
        self._options = metrics.DepthMetrics(dataset, min_depth, max_depth, crop, median_scaling, backend,
                                             bounds=bounds).options
        self.add_state("sums", default=torch.zeros(len(metrics.METRICS), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", default=torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("ids", default=[], dist_reduce_fx="cat")
        self.add_state("rows", default=[], dist_reduce_fx="cat")  # per-image values and has_valid, float64

    def update(self, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None, ids=None) -> None:
        result = metrics.compute(pred, gt, mask=mask, **self._options)
        values, has_valid = metrics.per_image_rows(result)
        if ids is None:
            self.sums += torch.where(has_valid[:, None], values, 0.0).sum(0).to(self.sums.device)
            self.images += has_valid.sum().to(self.images.device)
        else:
            self.ids.append(metrics._ids_of(ids, values.shape[0], values.device))
            self.rows.append(torch.cat([values, has_valid[:, None].double()], 1))

    def compute(self) -> dict:
        ids = dim_zero_cat(self.ids) if len(self.ids) else torch.zeros(0, dtype=torch.int64)
        rows = dim_zero_cat(self.rows) if len(self.rows) else torch.zeros(0, len(metrics.METRICS) + 1,
                                                                          dtype=torch.float64)
        return metrics.combine(self.sums, self.images, ids.to(self.sums.device), rows[:, :-1].to(self.sums.device),
                               rows[:, -1].bool().to(self.sums.device))
