"""The training application (installed with ``pip install ".[train]"``): config, data pipeline, tasks, the
loop (one process or torchrun), checkpoints, evaluation, figures and the command line. The library,
``depthmetric``, never imports it.

Example (a short training run; not run as a doctest)::

    from depthmetric.training import TrainConfig, train
    results = train(TrainConfig(steps=100))
"""
import importlib

# Where each public name lives. Loaded on first use, so that the command line (``depthmetric --help``,
# ``--version``) starts without the ``[train]`` extra's packages, which a command then names if missing.
_HOMES = {"TrainConfig": "config", "train": "loop", "evaluate": "evaluation", "format_metrics": "evaluation",
          "load_checkpoint": "checkpoint", "load_data": "pipeline", "predict_image": "evaluation",
          "build_task": "tasks", "SupervisedTask": "tasks", "SelfSupervisedTask": "tasks"}
__all__ = list(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)


def __dir__():
    return sorted(set(globals()) | set(__all__))
