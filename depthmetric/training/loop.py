"""The training loop, on one process or under torchrun: AdamW with a warm-up + cosine schedule, DDP with
SyncBatchNorm on several ranks, periodic evaluation, checkpoints, the figure and the results JSON.

Reproducibility: the model is initialised from ``torch.manual_seed(seed)`` (DDP then gives every rank rank
0's weights); the data order and augmentations come from seeded streams (see ``pipeline``), the losses'
random draws at step ``k`` from a generator seeded with ``(seed, k, rank)`` (the contrastive loss's shifts
are drawn on rank 0 and sent to all), so a run resumed from a checkpoint at step ``k`` continues exactly as
the uninterrupted run would, and a CPU run is repeatable (``torch.use_deterministic_algorithms`` on CPU).

Each step splits the backward pass at the network outputs: the losses run on detached copies of the
outputs, their backward gives the gradient at the outputs, and that is then back-propagated through the
network (DDP's gradient averaging hooks run there). The gradients are the same as one ``backward()``; the
split lets the loop time the losses alone (``loss_seconds`` in the results).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import signal
import time

import torch

from .. import _ext
from . import figures
from .checkpoint import read_checkpoint, save_checkpoint, saved_config
from .config import MissingLabels, TrainConfig, write_config_file
from .evaluation import evaluate, figure_rows, format_metrics
from .logs import RunLog
from .pipeline import generator, load_data, training_batches
from .runtime import StopSignals, broadcast_object, start, stop
from .tasks import build_task, set_train_mode

__all__ = ["train", "schedule"]


def schedule(optimizer, config: TrainConfig):
    """Linear warm-up over ``warmup`` steps, then cosine decay to 5% of ``lr`` at ``steps`` (or constant)."""
    lr = torch.optim.lr_scheduler
    warmup = lr.LinearLR(optimizer, start_factor=1 / max(1, config.warmup), total_iters=max(0, config.warmup - 1))
    if config.schedule == "constant" or config.steps <= config.warmup:
        return warmup
    cosine = lr.CosineAnnealingLR(optimizer, T_max=config.steps - config.warmup, eta_min=0.05 * config.lr)
    return lr.SequentialLR(optimizer, [warmup, cosine], milestones=[config.warmup])


@torch.no_grad()
def _move_ulps(task, ulps: int) -> None:
    """Every floating parameter ``ulps`` representable numbers up (down when negative)."""
    for module in task.modules().values():
        for p in module.parameters():
            target = torch.full_like(p, math.inf if ulps > 0 else -math.inf)
            for _ in range(abs(ulps)):
                p.copy_(torch.nextafter(p, target))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def train(config: TrainConfig, resume: str | None = None, datasets=None) -> dict:
    """Run (or resume) a training job; returns the results dict also written to ``<out>/metrics.json``.

    ``datasets`` = ``(train_set, eval_set, eval_dataset_name)`` replaces :func:`load_data` (tests use it).
    Writes ``<out>/checkpoint.pt`` (at each evaluation, every ``save_every`` steps and at the end; see
    ``checkpoint`` for ``keep``), ``<out>/figure.png``, ``<out>/config.json`` and ``<out>/metrics.json``
    (rank 0).

    SIGTERM or SIGINT (see :class:`~.runtime.StopSignals`) stops the run after the step in progress: rank 0
    writes the checkpoint of the step every rank reached, says so in one line, and every rank raises
    ``SystemExit(128 + signal number)`` (143 for SIGTERM, 130 for SIGINT). A signal during the final
    evaluation lets the run finish.
    """
    # The run sets process-wide switches (deterministic algorithms, thread count); the caller gets its own back.
    deterministic = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    threads = torch.get_num_threads()
    runtime = start(config.device)
    try:
        with StopSignals() as signals:
            return _train(config, resume, datasets, runtime, signals)
    finally:
        stop(runtime)
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        torch.set_num_threads(threads)


def _resumed_config(config: TrainConfig, state: dict, resume: str) -> TrainConfig:
    saved = saved_config(state)
    # A resumed run keeps what defines the model and the random streams; the rest may change. The segmentation
    # head exists or not by seg_weight (a checkpoint from before it existed has none).
    return dataclasses.replace(config, task=saved.task, seed=saved.seed, model=saved.model, dtype=saved.dtype,
                               seg_weight=state["config"].get("seg_weight") or 0.0,
                               data=saved.data if config.data is None else config.data,
                               out=config.out or os.path.dirname(os.path.abspath(resume)))


def _wrap(task, config: TrainConfig, runtime) -> None:
    """DDP on several ranks (with SyncBatchNorm on GPUs; torch has none for the CPU, where BatchNorm keeps each
    rank's batch statistics unless ``freeze_bn``), torch.compile on request."""
    nets = {}
    for name, module in task.modules().items():
        net = module
        if runtime.distributed and runtime.device.type == "cuda" and not config.freeze_bn:
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        if runtime.distributed:
            net = torch.nn.parallel.DistributedDataParallel(
                net, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None)
        if config.compile and name == "model":
            net = torch.compile(net)
        nets[name] = net
    task.nets = nets


def _train(config: TrainConfig, resume: str | None, datasets, runtime, signals: StopSignals) -> dict:
    state = read_checkpoint(resume) if resume is not None else None
    if state is not None:
        config = _resumed_config(config, state, resume)
    config = dataclasses.replace(config, world_size=runtime.world_size, device=str(runtime.device)).resolved()
    device = runtime.device
    if config.amp == "fp16" and device.type != "cuda":
        raise ValueError("--amp fp16 needs a CUDA device (use bf16 on CPU)")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    if config.deterministic and device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    out = broadcast_object(config.out or os.path.join("runs", config.name or time.strftime("%Y%m%d-%H%M%S")),
                           runtime)
    if runtime.main:
        os.makedirs(out, exist_ok=True)
    config = dataclasses.replace(config, out=out)

    train_set, eval_set, eval_dataset = datasets if datasets is not None else load_data(config)
    if train_set is None:
        raise ValueError("training on --data-root needs --train-split")
    classes = getattr(train_set, "classes", None)  # segmentation labels: the synthetic scenes have them
    if config.seg_weight > 0 and not classes:
        raise MissingLabels(f"--seg-weight {config.seg_weight}: the data set {config.data!r} has no segmentation "
                            "labels (only --data synthetic has them); pass --seg-weight 0")
    task = build_task(config, max_depth=state["max_depth"] if state else None, distributed=runtime.distributed,
                      seg_classes=len(classes) if classes else 0)
    if config.init_ulps and state is None:
        _move_ulps(task, config.init_ulps)
    for module in task.modules().values():
        module.to(device)
    set_train_mode(task, True)
    params = [p for m in task.modules().values() for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = schedule(optimizer, config)
    scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None

    history: dict = {"step": [], "loss": [], "lr": []}
    eval_history: list = []
    step, metrics_before = 0, None
    if state is not None:
        for name, module in task.modules().items():
            module.load_state_dict(state["models"][name]["state"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        step, history, eval_history = state["step"], state["history"], state["eval_history"]
        metrics_before = state.get("metrics_before")
    _wrap(task, config, runtime)
    log = RunLog(config.log, out, runtime.main, config.progress, config.steps, step)
    if state is not None:
        log.line(f"resumed from {resume} at step {step}")
    log.line(f"depthmetric train: task={config.task} data={config.data} ({len(train_set)} train / {len(eval_set)} "
             f"eval images) {config.height}x{config.width} batch={config.batch_size} x {runtime.world_size} "
             f"rank(s) steps={config.steps} backend={config.backend} device={device} dtype={config.dtype} "
             f"amp={config.amp} -> {out}")
    if runtime.main:
        write_config_file(config, out)

    def evaluation(at: int) -> dict:
        metrics = evaluate(task, eval_set, config, eval_dataset, device, runtime)
        eval_history.append({"step": at, **metrics})
        log.metrics(at, metrics)
        return metrics

    def checkpoint(at: int) -> None:
        if runtime.main:
            save_checkpoint(os.path.join(out, "checkpoint.pt"), task, optimizer, at, config, history, eval_history,
                            metrics_before, scheduler, scaler, keep=config.keep)

    if metrics_before is None:
        metrics_before = evaluation(step)
        log.line(f"before training: {format_metrics(metrics_before)}")

    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
    loss_seconds, steps_done = 0.0, 0
    t_start = time.perf_counter()
    for step, batch in training_batches(train_set, config, runtime.rank, runtime.world_size, step):
        t_step = time.perf_counter()
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        lr = optimizer.param_groups[0]["lr"]
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            outputs = task.forward(batch)
        # Split backward: losses on detached outputs (timed), then the network's backward from their gradients.
        detached = {k: v.detach().requires_grad_() for k, v in outputs.items()}
        t_loss = time.perf_counter()
        loss, parts = task.criterion(detached, batch, generator(config.seed, 3, step, runtime.rank))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss is {float(loss)} at step {step}; lower --lr or disable --amp")
        (scaler.scale(loss) if scaler is not None else loss).backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        loss_seconds += time.perf_counter() - t_loss
        keys = [k for k in outputs if detached[k].grad is not None]
        torch.autograd.backward([outputs[k] for k in keys], [detached[k].grad for k in keys])
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        steps_done += 1
        history["step"].append(step + 1)
        history["loss"].append(float(loss.detach()))
        history["lr"].append(lr)
        for k, v in parts.items():
            history.setdefault(k, []).append(float(v.detach()))
        log.step(step + 1, history["loss"][-1], {k: history[k][-1] for k in parts}, lr, time.perf_counter() - t_step)
        evaluating = (step + 1) % config.eval_every == 0
        if evaluating and step + 1 < config.steps:
            log.line(f"step {step + 1}: {format_metrics(evaluation(step + 1))}")
        stop_signal = signals.agreed(runtime)
        periodic = evaluating or (config.save_every and (step + 1) % config.save_every == 0)
        if stop_signal or (periodic and step + 1 < config.steps):  # the last step's comes after the loop
            checkpoint(step + 1)
        if stop_signal:
            path = os.path.join(out, "checkpoint.pt")
            log.line(f"stopped by {signal.Signals(stop_signal).name} at step {step + 1}: wrote {path}; continue "
                     f"with --resume {path}", quiet_too=True)
            log.close()
            raise SystemExit(128 + stop_signal)
    step = config.steps
    train_seconds = time.perf_counter() - t_start

    metrics_after = evaluation(step) if not eval_history or eval_history[-1]["step"] != step else eval_history[-1]
    checkpoint(step)
    log.line(f"after {step} steps:  {format_metrics(metrics_after)}")
    results = {
        "config": dataclasses.asdict(config),
        "device": str(device),
        "torch": torch.__version__,
        "build_info": _ext.build_info(),
        "metrics_before": metrics_before,
        "metrics_after": metrics_after,
        "eval_history": eval_history,
        "history": history,
        "timing": {
            "steps_this_run": steps_done,
            "train_seconds": train_seconds,
            "steps_per_second": steps_done / train_seconds if train_seconds > 0 else None,
            "loss_seconds": loss_seconds,
            "peak_rss_mb": _peak_rss_mb(),
            "threads": torch.get_num_threads(),
            "world_size": runtime.world_size,
        },
        "files": {"checkpoint": os.path.join(out, "checkpoint.pt"),
                  "figure": os.path.join(out, "figure.png") if config.figure else None,
                  "config": os.path.join(out, "config.json"), "metrics": os.path.join(out, "metrics.json")},
    }
    if runtime.main:
        if config.figure:
            rows = figure_rows(task, eval_set, config, eval_dataset, device, config.eval_images)
            title = (f"{config.task} {type(task.model).__name__} on {config.data}, {step} steps, "
                     f"backend={config.backend}: AbsRel {metrics_before.get('AbsRel', float('nan')):.3f} -> "
                     f"{metrics_after.get('AbsRel', float('nan')):.3f}")
            curves = {k: v for k, v in history.items() if k != "lr"}
            log.figure(step, figures.training_figure(rows, curves, results["files"]["figure"], title=title,
                                                     eval_history=eval_history))
        with open(results["files"]["metrics"], "w") as f:
            json.dump(results, f, indent=1)
        log.line("wrote " + ", ".join(p for p in results["files"].values() if p))
    log.close()
    return results
