"""Checkpoints: one format (``depthmetric-checkpoint-1``), written by the training loop and read by one
loader that resume, ``evaluate`` and ``predict`` all use.

A checkpoint holds only tensors and plain types and is read with ``torch.load(weights_only=True)``: a file
someone shared cannot run code when loaded, and one carrying a pickled object is refused.
"""
from __future__ import annotations

import dataclasses
import os
import pickle

import torch

from .config import TrainConfig
from .tasks import build_task

__all__ = ["FORMAT", "save_checkpoint", "read_checkpoint", "saved_config", "load_checkpoint", "restore"]

FORMAT = "depthmetric-checkpoint-1"


def save_checkpoint(path: str, task, optimizer, step: int, config: TrainConfig, history: dict,
                    eval_history: list, metrics_before: dict | None, scheduler=None, scaler=None) -> None:
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
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)  # never leave a half-written checkpoint behind


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
