"""The training application (installed with ``pip install ".[train]"``): config, data pipeline, tasks, the
loop (one process or torchrun), checkpoints, evaluation, figures and the command line. The library,
``depthmetric``, never imports it.

>>> from depthmetric.training import TrainConfig, train
>>> results = train(TrainConfig(steps=100))
"""
from .checkpoint import load_checkpoint
from .config import TrainConfig
from .evaluation import evaluate, format_metrics, predict_image
from .loop import train
from .pipeline import load_data
from .tasks import SelfSupervisedTask, SupervisedTask, build_task

__all__ = ["TrainConfig", "train", "evaluate", "format_metrics", "load_checkpoint", "load_data", "predict_image",
           "build_task", "SupervisedTask", "SelfSupervisedTask"]
