"""Checkpoints: one format (``depthmetric-checkpoint-1``), written by the training loop and read by one
loader that resume, ``evaluate`` and ``predict`` all use.

A checkpoint holds only tensors and plain types and is read with ``torch.load(weights_only=True)``: a file
someone shared cannot run code when loaded, and one carrying a pickled object is refused.

Files: ``<out>/checkpoint.pt`` is always the newest (what ``--resume`` takes). With ``--keep K > 1`` each
checkpoint is written as ``<out>/checkpoint-stepNNNNNN.pt`` (the step, zero-padded to 6 digits),
``checkpoint.pt`` is a hard link to the newest of them, and only the K newest are kept. Every file is written
to ``<name>.tmp`` and renamed into place, so a run killed while writing leaves the previous checkpoint whole.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import re

import torch

from .config import TrainConfig
from .tasks import build_task

__all__ = ["FORMAT", "save_checkpoint", "step_path", "read_checkpoint", "saved_config", "load_checkpoint", "restore"]

FORMAT = "depthmetric-checkpoint-1"


def step_path(path: str, step: int) -> str:
    """The name a kept checkpoint of ``step`` has beside ``path``: ``checkpoint.pt`` -> ``checkpoint-step000120.pt``."""
    root, ext = os.path.splitext(path)
    return f"{root}-step{step:06d}{ext}"


def _replace(path: str, write) -> None:
    """``write(tmp)`` then rename ``tmp`` to ``path`` (atomic: ``path`` is the old file or the new one, never
    half of one); an error names ``path`` and leaves the old file as it was."""
    tmp = path + ".tmp"
    try:
        if os.path.isfile(tmp):  # left by a run killed while writing
            os.remove(tmp)
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as error:  # torch.save reports an unwritable file as a RuntimeError
        if os.path.isfile(tmp):
            os.remove(tmp)
        raise OSError(f"could not write the checkpoint {path} (the previous one, if any, is intact): "
                      f"{error}") from error


def _prune(path: str, keep: int) -> None:
    """Remove all but the ``keep`` newest ``step_path`` files beside ``path``."""
    folder, root = os.path.split(os.path.splitext(path)[0])
    pattern = re.compile(re.escape(root) + r"-step(\d+)" + re.escape(os.path.splitext(path)[1]) + "$")
    kept = sorted((int(m.group(1)), name) for name in os.listdir(folder or ".") if (m := pattern.match(name)))
    for _, name in kept[:max(0, len(kept) - keep)]:
        os.remove(os.path.join(folder, name))


def save_checkpoint(path: str, task, optimizer, step: int, config: TrainConfig, history: dict,
                    eval_history: list, metrics_before: dict | None, scheduler=None, scaler=None,
                    keep: int = 1) -> None:
    """Write the run's state at ``step`` to ``path``; with ``keep > 1`` also keep it as ``step_path`` and
    remove all but the ``keep`` newest of those (see the module's docstring)."""
    state = {
        "format": FORMAT,
        "task": task.name,
        "step": step,
        "config": dataclasses.asdict(config),
        "models": {name: {"config": dict(m.config), "state": m.state_dict()} for name, m in task.modules().items()},
        "max_depth": float(task.model.max_depth),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "history": history,
        "eval_history": eval_history,
        "metrics_before": metrics_before,
    }
    if keep > 1:
        kept = step_path(path, step)
        _replace(kept, lambda tmp: torch.save(state, tmp))
        _replace(path, lambda tmp: os.link(kept, tmp))  # one file, two names: no second copy on disk
    else:
        _replace(path, lambda tmp: torch.save(state, tmp))
    _prune(path, keep if keep > 1 else 0)


def read_checkpoint(path: str) -> dict:
    """The checkpoint's state dict, checked: tensors and plain types only, in this format."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(f"{path} holds more than tensors and plain values (a pickled object: refused, "
                         f"loading it could run code): {str(error).splitlines()[0]}") from None
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(f"{path} is not a readable checkpoint: {error}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a depthmetric checkpoint (format {FORMAT})")
    return state


def saved_config(state: dict, **overrides) -> TrainConfig:
    """The run's TrainConfig as the checkpoint stored it (fields this version does not know are dropped), with
    ``overrides`` replacing fields."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{**{k: v for k, v in state["config"].items() if k in fields}, **overrides})


def restore(state: dict, **overrides):
    """``(task, config)`` rebuilt from a checkpoint's state, its networks loaded; ``overrides`` replace config
    fields (e.g. ``backend``, ``device``, ``data``)."""
    config = saved_config(state, **overrides)
    config.model = {**state["config"].get("model", {}), **state["models"]["model"]["config"]}
    if "blocks" in config.model:
        config.model["blocks"] = tuple(config.model["blocks"])
    if not config.model.get("seg_classes"):  # a model saved without a segmentation head is rebuilt without one
        config.seg_weight = 0.0
    task = build_task(config, max_depth=state["max_depth"], distributed=overrides.get("world_size", 1) > 1)
    for name, module in task.modules().items():
        module.load_state_dict(state["models"][name]["state"])
        module.to(config.device)
    return task, config.resolved()


def load_checkpoint(path: str, **overrides):
    """``(task, config, state)`` from a checkpoint written by training, the networks on ``config.device``."""
    state = read_checkpoint(path)
    task, config = restore(state, **overrides)
    return task, config, state
