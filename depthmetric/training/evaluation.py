"""Evaluation of a task's depth network over a data set, on one rank or many (each image evaluated once,
the metrics combined over the ranks), the figure's rows, and single-image prediction."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..metrics import DATASETS, METRICS, DepthMetrics
from .config import TrainConfig
from .runtime import Runtime
from .tasks import set_train_mode

__all__ = ["evaluate", "figure_rows", "predict_image", "format_metrics"]


def format_metrics(metrics: dict) -> str:
    return "  ".join(f"{k} {metrics[k]:.4f}" for k in METRICS if k in metrics)


def _eval_input(image: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    image = image[None].to(getattr(torch, config.dtype))
    if image.shape[-2:] != (config.height, config.width):
        image = F.interpolate(image, size=(config.height, config.width), mode="bilinear", align_corners=False,
                              antialias=True)
    return image


def _metric(task, config: TrainConfig, eval_dataset: str | None, sync: bool) -> DepthMetrics:
    return DepthMetrics(dataset=eval_dataset, median_scaling=task.name == "self-supervised",
                        max_depth=None if eval_dataset else task.model.max_depth, backend=config.backend, sync=sync)


def _prediction(task, sample: dict, config: TrainConfig, device) -> torch.Tensor:
    """The prediction at the training resolution, resized to the ground truth's (what the metrics compare)."""
    pred = task.predict(_eval_input(sample["image"], config).to(device))
    return F.interpolate(pred, size=sample["depth"].shape[-2:], mode="bilinear", align_corners=True)


@torch.no_grad()
def evaluate(task, dataset, config: TrainConfig, eval_dataset: str | None, device, runtime: Runtime | None = None,
             limit: int | None = None) -> dict:
    """Metrics of ``task``'s model over ``dataset`` (per-image means; median scaling for self-supervised
    models), predicting at the training resolution and comparing at the ground truth's. Under torch.distributed
    rank ``r`` of ``W`` evaluates images ``r, r + W, ...``, padded as DistributedSampler pads so that the ranks
    keep in step (a repeated image counts once, by its index), and every rank returns the metrics of all
    images. Samples without depth are skipped (an evaluation set has depth for every image)."""
    runtime = runtime or Runtime(device=torch.device(device))
    set_train_mode(task, False)
    metrics = _metric(task, config, eval_dataset, sync=runtime.distributed)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    padded = -(-n // runtime.world_size) * runtime.world_size
    for i in (k % n for k in range(runtime.rank, padded, runtime.world_size)):
        sample = dataset[i]
        if "depth" in sample:
            metrics.update(_prediction(task, sample, config, device), sample["depth"][None].to(device), ids=[i])
    set_train_mode(task, True)
    return metrics.compute()


@torch.no_grad()
def figure_rows(task, dataset, config: TrainConfig, eval_dataset: str | None, device, keep: int) -> list[dict]:
    """The figure's first ``keep`` images with ground truth: image, ground truth, and the prediction as the
    metrics see it (median-scaled for self-supervised models, clamped to the evaluation's depth range, which
    is also the colour range's bound). Rank 0 makes the figure alone (the metrics' checks stay local)."""
    set_train_mode(task, False)
    lo_hi = DATASETS.get(eval_dataset, {})
    lo, hi = lo_hi.get("min_depth", 1e-3), lo_hi.get("max_depth", task.model.max_depth)
    rows = []
    for i in range(len(dataset)):
        if len(rows) >= keep:
            break
        sample = dataset[i]
        if "depth" not in sample:
            continue
        metric = _metric(task, config, eval_dataset, sync=False)
        pred = _prediction(task, sample, config, device)
        result = metric.update(pred, sample["depth"][None].to(device))
        shown = (pred[0, 0].double() * result["scale"][0]).clamp(lo, hi).cpu()
        rows.append({"image": sample["image"], "gt": sample["depth"][0], "pred": shown, "range": (lo, hi),
                     "label": f"#{i}  AbsRel {float(result['AbsRel']):.3f}"})
    set_train_mode(task, True)
    return rows


@torch.no_grad()
def predict_image(task, config: TrainConfig, image: torch.Tensor) -> torch.Tensor:
    """Depth (``H,W`` metres, at the image's own size) of a ``3,H,W`` image in [0, 1] (self-supervised models
    give depth up to an unknown scale)."""
    device = next(task.model.parameters()).device
    set_train_mode(task, False)
    pred = task.predict(_eval_input(image, config).to(device)).float()
    return F.interpolate(pred, size=image.shape[-2:], mode="bilinear", align_corners=True)[0, 0].cpu()
