"""The configuration of a run: :class:`TrainConfig`, its defaults that depend on the task and data, and
config files (``--config run.yaml`` or ``.json``) that set any field by name."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

from .. import _checks, _ext

__all__ = ["TrainConfig", "TASKS", "ARCHS", "AMP", "DTYPES", "LOGGERS", "SCHEDULES", "load_config_file",
           "write_config_file", "MissingLabels"]

TASKS = ("supervised", "self-supervised")
# The depth network each task can train (keys of models.MODELS), its default first.
ARCHS = {"supervised": ("ltdepth", "zoe"), "self-supervised": ("depthnet", "sql")}
AMP = ("off", "bf16", "fp16")
DTYPES = ("float32", "float64")
LOGGERS = ("stdout", "tensorboard")
SCHEDULES = ("cosine", "constant")
SEG_WEIGHT = 0.1  # seed 003's lambda_dis, the weight of the segmentation loss


class MissingLabels(ValueError):
    """``seg_weight > 0`` on a data set without segmentation labels; the command line prints it as one line."""


@dataclass
class TrainConfig:
    """Everything a run depends on; stored in its checkpoint and results JSON. ``None`` fields take a default
    that depends on the task or data (see :meth:`resolved`)."""

    task: str = "supervised"
    arch: str | None = None  # one of ARCHS[task]; default its first (ltdepth / depthnet)
    data: str | None = None  # nyu | kitti | synthetic | <path>; default nyu (supervised) / kitti (self-sup.)
    data_root: str | None = None
    train_split: str | None = None  # BTS-style split files, with data_root
    eval_split: str | None = None
    depth_root: str | None = None
    height: int | None = None  # training resolution; default 96x320 on kitti, else 96x128 self-sup., 120x160
    width: int | None = None
    steps: int = 300
    batch_size: int = 4  # per process (rank); the global batch is world_size times it
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 20
    schedule: str = "cosine"  # one of SCHEDULES
    metric_loss: bool = True
    metric_weight: float = 1.0
    metric_preset: str | None = None  # default nyu-lt, kitti-lt for kitti
    metric_across: int = 4  # across-image samples of the contrastive loss (the paper's N = 10 + 4)
    # weight of the segmentation distillation (--arch zoe: a U-Net head on the decoder, alpha Dice + (1 - alpha)
    # Focal against the data's labels, training only); None: seed 003's lambda_dis = 0.1 where the data has
    # labels (synthetic) and the arch is zoe, else 0 (off)
    seg_weight: float | None = None
    backend: str = "auto"
    device: str = "cpu"
    dtype: str = "float32"  # float64: model, data and losses in double precision
    amp: str = "off"
    compile: bool = False
    seed: int = 0
    init_ulps: int = 0  # move every initial weight this many ulps (nextafter): how a run amplifies rounding
    deterministic: bool = True
    threads: int | None = None  # torch.set_num_threads; None keeps torch's default (one per core)
    workers: int = 0  # DataLoader worker processes
    eval_every: int = 100
    save_every: int = 0  # also checkpoint every N steps, evaluation or not (0: at evaluations and the end only)
    keep: int = 1  # the newest checkpoints kept as checkpoint-stepNNNNNN.pt (1: checkpoint.pt alone)
    eval_images: int = 3  # images shown in the figure
    figure: bool = True
    augment: bool = True
    freeze_bn: bool = False  # BatchNorm layers keep their running statistics (no batch statistics, no updates)
    synthetic_size: int = 64
    model: dict = field(default_factory=dict)  # overrides of the model's constructor arguments
    out: str | None = None
    name: str | None = None
    log: str = "stdout"  # stdout | tensorboard (which also prints)
    progress: bool = True
    world_size: int = 1  # set by the run from torchrun's environment, recorded in the run folder

    def resolved(self) -> "TrainConfig":
        _checks.choice("task", self.task, TASKS)
        _ext.check_backend(self.backend)
        for name, allowed in (("amp", AMP), ("dtype", DTYPES), ("log", LOGGERS), ("schedule", SCHEDULES)):
            _checks.choice(name, getattr(self, name), allowed)
        if self.amp != "off" and self.dtype == "float64":
            raise ValueError("--amp autocasts float32 networks; it does not go with --dtype float64")
        for name in ("steps", "batch_size", "eval_every", "workers", "metric_across", "save_every", "keep"):
            if getattr(self, name) < (1 if name in ("batch_size", "eval_every", "keep") else 0):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        c = dataclasses.replace(self, model=dict(self.model))
        c.arch = c.arch or ARCHS[c.task][0]
        _checks.choice(f"arch (task {c.task})", c.arch, ARCHS[c.task])
        if c.data is None:
            c.data = "nyu" if c.task == "supervised" else "kitti"
        if c.height is None or c.width is None:
            default = (96, 320) if c.data == "kitti" else (96, 128) if c.task == "self-supervised" else (120, 160)
            c.height, c.width = c.height or default[0], c.width or default[1]
        if c.metric_preset is None:
            c.metric_preset = "kitti-lt" if c.data == "kitti" else "nyu-lt"
        if c.seg_weight is None:
            c.seg_weight = SEG_WEIGHT if c.arch == "zoe" and c.data == "synthetic" else 0.0
        if not (isinstance(c.seg_weight, (int, float)) and not isinstance(c.seg_weight, bool)
                and 0 <= c.seg_weight < float("inf")):
            raise ValueError(f"seg_weight must be a finite number >= 0, got {c.seg_weight!r}")
        if c.seg_weight > 0 and c.arch != "zoe":
            raise ValueError(f"--seg-weight {c.seg_weight}: segmentation distillation needs --arch zoe (the "
                             f"segmentation head reads ZoeLTDepth's decoder), got --arch {c.arch}")
        return c


def load_config_file(path: str) -> dict:
    """The fields a ``.json`` or ``.yaml``/``.yml`` file sets (a mapping of TrainConfig field names; dashes
    are accepted for underscores, as on the command line)."""
    with open(path) as f:
        if path.endswith((".yaml", ".yml")):
            import yaml

            values = yaml.safe_load(f) or {}
        elif path.endswith(".json"):
            values = json.load(f)
        else:
            raise ValueError(f"--config must be a .json, .yaml or .yml file, got {path!r}")
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of option names to values, got {type(values).__name__}")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k.replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(values) - fields - {"resume"})
    if unknown:
        raise ValueError(f"{path}: unknown options {unknown}; known: {sorted(fields)}")
    return values


def write_config_file(config: TrainConfig, folder: str) -> str:
    """The resolved config as ``config.json`` in the run folder (next to ``metrics.json``)."""
    path = os.path.join(folder, "config.json")
    with open(path, "w") as f:
        json.dump(dataclasses.asdict(config), f, indent=1)
    return path
