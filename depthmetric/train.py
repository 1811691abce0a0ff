"""Training and evaluation loops: supervised LTDepth (SILog + weight x multi-range contrastive) and
self-supervised DepthNet + PoseNet (min-reprojection + edge-aware smoothness over 4 scales).

Reproducibility: the model is initialised from ``torch.manual_seed(seed)``; every random choice of step ``k``
(the batch's samples, the augmentations, the contrastive loss's sample shifts, the reprojection tie-break
noise) comes from generators seeded with ``(seed, k)``, so a run resumed from a checkpoint at step ``k``
continues exactly as the uninterrupted run would, and a CPU run is repeatable
(``torch.use_deterministic_algorithms`` is on for CPU runs).

Each step splits the backward pass at the network outputs: the losses run on detached copies of the
outputs (depth and feature map, or disparities and poses), their backward gives the gradient at the outputs,
and that is then back-propagated through the network. The gradients are the same as one ``backward()``; the
split lets the loop time the losses alone (``loss_seconds`` in the results), which is what the
``--backend`` comparison is about.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from . import _ext
from .models import DepthNet, LTDepth, PoseNet

__all__ = ["TrainConfig", "train", "evaluate", "load_checkpoint", "build_task", "load_data", "predict_image",
           "SupervisedTask", "SelfSupervisedTask"]

TASKS = ("supervised", "self-supervised")
AMP = ("off", "bf16", "fp16")

# The main job's model: MobileNetV3-Large at half width, four stages of at most two blocks (~0.1 M parameters).
LT_SMALL = dict(width_mult=0.5, stages=4, blocks_per_stage=2, decoder_channels=64, features=16)
RESNET_SMALL = dict(width=16, blocks=(1, 1, 1, 1))


@dataclass
class TrainConfig:
    """Everything a run depends on; stored in its checkpoint and results JSON. ``None`` fields take a default
    that depends on the task or data (see :meth:`resolved`)."""

    task: str = "supervised"
    data: str | None = None  # nyu | kitti | synthetic | <path>; default nyu (supervised) / kitti (self-sup.)
    data_root: str | None = None
    train_split: str | None = None  # BTS-style split files, with data_root
    eval_split: str | None = None
    depth_root: str | None = None
    height: int | None = None  # training resolution; default 120x160 (nyu/synthetic), 96x320 (kitti)
    width: int | None = None
    steps: int = 300
    batch_size: int = 4
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 20
    schedule: str = "cosine"  # cosine | constant
    metric_loss: bool = True
    metric_weight: float = 1.0
    metric_preset: str | None = None  # default nyu-lt, kitti-lt for kitti
    backend: str = "auto"
    device: str = "cpu"
    amp: str = "off"
    compile: bool = False
    seed: int = 0
    deterministic: bool = True
    threads: int | None = None  # torch.set_num_threads; None keeps torch's default (one per core)
    eval_every: int = 100
    eval_images: int = 3  # images shown in the figure
    figure: bool = True
    augment: bool = True
    synthetic_size: int = 64
    model: dict = field(default_factory=dict)  # overrides of the model's constructor arguments
    out: str | None = None
    name: str | None = None
    progress: bool = True

    def resolved(self) -> "TrainConfig":
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        _ext.check_backend(self.backend)
        if self.amp not in AMP:
            raise ValueError(f"amp must be one of {AMP}, got {self.amp!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        for name in ("steps", "batch_size", "eval_every"):
            if getattr(self, name) < (0 if name == "steps" else 1):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        c = dataclasses.replace(self, model=dict(self.model))
        if c.data is None:
            c.data = "nyu" if c.task == "supervised" else "kitti"
        if c.height is None or c.width is None:
            default = (96, 320) if c.data == "kitti" else (96, 128) if c.task == "self-supervised" else (120, 160)
            c.height, c.width = c.height or default[0], c.width or default[1]
        if c.metric_preset is None:
            c.metric_preset = "kitti-lt" if c.data == "kitti" else "nyu-lt"
        return c


# ----------------------------------------------------------------------------------------------------- data

def _split_kind(split_file: str) -> str:
    """``kitti`` when the split file's first image is a KITTI raw frame path, else ``nyu``."""
    from .data.datasets import _KITTI_FRAME, read_split_file

    entries = read_split_file(split_file)
    return "kitti" if entries and _KITTI_FRAME.match(entries[0][0]) else "nyu"


def _split_dataset(kind: str, root: str, split_file: str, depth_root: str | None, sequence: bool):
    from .data import KITTIEigen, NYUDepthV2

    if kind == "kitti":
        return KITTIEigen(root, split_file, depth_root=depth_root, kb_crop=True, sources=(-1, 1) if sequence else ())
    if sequence:
        raise ValueError("NYU Depth V2 has no frame sequences here; self-supervised training needs --data kitti")
    return NYUDepthV2(root, split_file, depth_root=depth_root)


def load_data(config: TrainConfig):
    """``(train_set, eval_set, eval_dataset_name)`` for ``config.data``; ``eval_dataset_name`` (``"nyu"``,
    ``"kitti"`` or None) picks the metric preset (depth range and crop).

    * ``nyu`` / ``kitti`` without ``data_root``: the samples shipped in the package (3 NYU pairs; 5 KITTI
      frames, or their 3 middle frames with both neighbours for self-supervised training). They are so few
      that the same images serve for training and evaluation: the main job shows the losses fitting
      real data, not generalisation.
    * ``nyu`` / ``kitti`` with ``data_root``: the full data set in its official layout read through BTS-style
      split files ``train_split`` and ``eval_split`` (``depth_root`` for the depth maps when elsewhere).
    * ``synthetic``: procedural rooms (exact depth and poses), ``synthetic_size`` for training and 8 others
      for evaluation.
    * a folder with a ``split.txt`` (laid out like the shipped samples), or a split file: its images serve for
      training and evaluation; NYU or KITTI is told from the paths.
    """
    from . import data

    kind, sequence = config.data, config.task == "self-supervised"
    if kind == "synthetic":
        sources = 2 if sequence else 0
        make = data.SyntheticScenes
        return (make(config.synthetic_size, height=config.height, width=config.width, sources=sources,
                     seed=config.seed),
                make(8, height=config.height, width=config.width, sources=sources, seed=config.seed + 10_000), None)
    if kind in ("nyu", "kitti") and config.data_root is None:
        samples = data.load_samples(kind, sequence=sequence)
        return samples, data.load_samples(kind) if sequence else samples, kind
    if kind in ("nyu", "kitti"):
        if not config.eval_split:
            raise ValueError(f"--data {kind} --data-root needs --eval-split (and --train-split to train): BTS-style "
                             "split files")
        train_set = (_split_dataset(kind, config.data_root, config.train_split, config.depth_root, sequence)
                     if config.train_split else None)
        return train_set, _split_dataset(kind, config.data_root, config.eval_split, config.depth_root, False), kind
    split = os.path.join(kind, "split.txt") if os.path.isdir(kind) else kind
    if not os.path.isfile(split):
        raise ValueError(f"--data must be nyu, kitti, synthetic, a folder with split.txt or a split file; got {kind!r}")
    root, split_kind = os.path.dirname(os.path.abspath(split)), _split_kind(split)
    train_set = _split_dataset(split_kind, root, split, config.depth_root, sequence)
    eval_set = _split_dataset(split_kind, root, split, config.depth_root, False) if sequence else train_set
    return train_set, eval_set, split_kind


class _Frames(torch.utils.data.Dataset):
    """A data set's samples resized to the training frame (cached in memory when small)."""

    def __init__(self, dataset, height: int, width: int, cache_limit: int = 2048):
        self.dataset, self.height, self.width = dataset, height, width
        self.cache: dict[int, dict] | None = {} if len(dataset) <= cache_limit else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        sample = _resize_sample(self.dataset[index], self.height, self.width)
        if self.cache is not None:
            self.cache[index] = sample
        return sample


def _resize_sample(sample: dict, height: int, width: int) -> dict:
    """Resize images (bilinear, antialiased), depth (nearest: never mixes valid with invalid) and scale K."""
    out = dict(sample)
    h, w = sample["image"].shape[-2:]
    if (h, w) == (height, width):
        return out
    out["image"] = F.interpolate(sample["image"][None], size=(height, width), mode="bilinear", align_corners=False,
                                 antialias=True)[0]
    if "sources" in sample:
        out["sources"] = F.interpolate(sample["sources"], size=(height, width), mode="bilinear",
                                       align_corners=False, antialias=True)
    if "depth" in sample:
        out["depth"] = F.interpolate(sample["depth"][None], size=(height, width), mode="nearest")[0]
    if "K" in sample:
        K = sample["K"].clone()  # pixel centres at integers: x' = (x + 0.5) * s - 0.5
        for row, s in ((0, width / w), (1, height / h)):
            K[row, row] *= s
            K[row, 2] = (K[row, 2] + 0.5) * s - 0.5
        out["K"] = K
    return out


def _collate(samples: list[dict]) -> dict:
    keys = set.intersection(*(set(s) for s in samples))
    return {k: torch.stack([torch.as_tensor(s[k]) for s in samples]) for k in keys
            if isinstance(samples[0][k], torch.Tensor)}


def _step_generator(seed: int, step: int, stream: int, device="cpu") -> torch.Generator:
    """The generator of one random stream (data order, augmentation, loss) at one step."""
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + step) * 8 + stream)


def _batch_indices(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Indices of step ``step``: consecutive slices of per-epoch permutations (seeded by epoch), wrapping."""
    out, position = [], step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(position, n)
        perm = torch.randperm(n, generator=_step_generator(seed, epoch, 0)).tolist()
        take = perm[offset:offset + batch_size - len(out)]
        out += take
        position += len(take)
    return out


def crop_size(config: TrainConfig) -> tuple[int, int]:
    """The training crop: supervised runs train on random crops of 7/8 of the frame (multiples of 8, as BTS
    crops 416x544 from 480x640) and evaluate on the whole frame; self-supervised runs use the whole frame
    (Monodepth2), which DepthNet needs divisible by 32."""
    if config.task == "self-supervised" or not config.augment:
        return config.height, config.width
    return max(8, config.height * 7 // 64 * 8), max(8, config.width * 7 // 64 * 8)


def _augmentation(config: TrainConfig):
    from .data import ColorJitter, Compose, RandomCrop, RandomHorizontalFlip

    steps = [RandomHorizontalFlip(), ColorJitter(p=0.5)]
    h, w = crop_size(config)
    if (h, w) != (config.height, config.width):
        steps.insert(0, RandomCrop(h, w))
    return Compose(steps)


def _training_batch(frames, config: TrainConfig, step: int, augmentation=None) -> dict:
    generator = _step_generator(config.seed, step, 1)
    samples = []
    for i in _batch_indices(len(frames), config.batch_size, step, config.seed):
        sample = frames[i]
        samples.append(augmentation(sample, generator) if augmentation is not None else sample)
    return _collate(samples)


# ----------------------------------------------------------------------------------------------------- tasks

def _to(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


class SupervisedTask:
    """LTDepth trained with ``SILogLoss`` + ``metric_weight * MultiRangeContrastiveLoss`` on its feature map."""

    name = "supervised"

    def __init__(self, config: TrainConfig, max_depth: float):
        from . import MultiRangeContrastiveLoss, SILogLoss

        self.config = config
        self.model = LTDepth(**{**LT_SMALL, "max_depth": max_depth, **config.model})
        self.depth_loss = SILogLoss(backend=config.backend)
        self.metric_loss = (MultiRangeContrastiveLoss.preset(config.metric_preset, backend=config.backend)
                            if config.metric_loss else None)

    def modules(self) -> dict:
        return {"model": self.model}

    def forward(self, batch: dict, net=None) -> dict:
        depth, feats = (self.model if net is None else net)(batch["image"], return_features=True)
        return {"depth": depth, "features": feats} if self.metric_loss is not None else {"depth": depth}

    def criterion(self, outputs: dict, batch: dict, generator) -> tuple[torch.Tensor, dict]:
        silog = self.depth_loss(outputs["depth"].float(), batch["depth"])
        parts = {"silog": silog}
        total = silog
        if self.metric_loss is not None:
            contrastive = self.metric_loss(outputs["features"], batch["depth"], generator=generator)
            parts["contrastive"] = contrastive
            total = total + self.config.metric_weight * contrastive
        return total, parts

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


class SelfSupervisedTask:
    """DepthNet + PoseNet trained with min-reprojection (auto-masked) + edge-aware smoothness over 4 scales
    (Monodepth2: each scale's disparity upsampled to the input resolution for the reprojection, smoothness at
    the scale's own resolution weighted ``1e-3 / 2^scale``, the sum averaged over the scales)."""

    name = "self-supervised"
    smoothness_weight = 1e-3

    def __init__(self, config: TrainConfig, max_depth: float):
        from . import ReprojectionLoss

        self.config = config
        self.depth_net = DepthNet(**{**RESNET_SMALL, "decoder_width": 8, "max_depth": max_depth, **config.model})
        self.pose_net = PoseNet(**RESNET_SMALL, hidden=64)
        self.reprojection = ReprojectionLoss(backend=config.backend)

    @property
    def model(self):
        return self.depth_net

    def modules(self) -> dict:
        return {"model": self.depth_net, "pose": self.pose_net}

    def forward(self, batch: dict, net=None) -> dict:
        disps = (self.depth_net if net is None else net)(batch["image"])
        poses = [self.pose_net.matrix(batch["image"], batch["sources"][:, s]) for s in range(batch["sources"].shape[1])]
        return {**{f"disp{s}": d for s, d in enumerate(disps)}, "poses": torch.stack(poses, 1)}

    def criterion(self, outputs: dict, batch: dict, generator) -> tuple[torch.Tensor, dict]:
        from . import edge_aware_smoothness, warp

        target, sources, K = batch["image"], batch["sources"], batch["K"]
        size = target.shape[-2:]
        source_list = list(sources.unbind(1))
        reprojection = smoothness = 0.0
        for scale in range(DepthNet.scales):
            disp = outputs[f"disp{scale}"].float()
            full = F.interpolate(disp, size=size, mode="bilinear", align_corners=False)
            depth = self.depth_net.depth(full)
            warped = [warp(src, depth, outputs["poses"][:, s], K) for s, src in enumerate(source_list)]
            reprojection = reprojection + self.reprojection(target, warped, source_list, generator=generator)
            color = F.interpolate(target, size=disp.shape[-2:], mode="area") if scale else target
            smoothness = smoothness + self.smoothness_weight / 2 ** scale * edge_aware_smoothness(disp, color)
        reprojection, smoothness = reprojection / DepthNet.scales, smoothness / DepthNet.scales
        return reprojection + smoothness, {"reprojection": reprojection, "smoothness": smoothness}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.depth_net.depth(self.depth_net(images)[0])


def build_task(config: TrainConfig, max_depth: float | None = None):
    config = config.resolved()
    if max_depth is None:
        max_depth = {"kitti": 80.0}.get(config.data, 10.0) if config.task == "supervised" else 100.0
    return (SupervisedTask if config.task == "supervised" else SelfSupervisedTask)(config, max_depth)


# ----------------------------------------------------------------------------------------------------- eval

def _eval_input(sample: dict, config: TrainConfig) -> torch.Tensor:
    image = sample["image"][None]
    if image.shape[-2:] != (config.height, config.width):
        image = F.interpolate(image, size=(config.height, config.width), mode="bilinear", align_corners=False,
                              antialias=True)
    return image


@torch.no_grad()
def evaluate(task, dataset, config: TrainConfig, eval_dataset: str | None, device, limit: int | None = None,
             keep: int = 0) -> tuple[dict, list[dict]]:
    """Metrics of ``task``'s model over ``dataset`` (per-image means; median scaling for self-supervised
    models), predicting at the training resolution and comparing at the ground truth's. Returns the metrics
    and the first ``keep`` (image, gt, pred) rows for the figure."""
    from .metrics import DepthMetrics

    for module in task.modules().values():
        module.eval()
    metrics = DepthMetrics(dataset=eval_dataset, median_scaling=task.name == "self-supervised",
                           max_depth=None if eval_dataset else task.model.max_depth, backend=config.backend)
    rows = []
    n = len(dataset) if limit is None else min(limit, len(dataset))
    for i in range(n):
        sample = dataset[i]
        if "depth" not in sample:
            continue
        pred = task.predict(_eval_input(sample, config).to(device)).float()
        pred = F.interpolate(pred, size=sample["depth"].shape[-2:], mode="bilinear", align_corners=True)
        result = metrics.update(pred, sample["depth"][None].to(device))
        if len(rows) < keep:
            scale = 1.0
            if task.name == "self-supervised":  # show the median-scaled prediction the metrics see
                valid = sample["depth"] > 0
                scale = float(sample["depth"][valid].median() / pred.cpu()[0][valid].median()) if valid.any() else 1.0
            rows.append({"image": sample["image"], "gt": sample["depth"][0], "pred": pred[0, 0].cpu() * scale,
                         "label": f"#{i}  AbsRel {float(result['AbsRel']):.3f}"})
    for module in task.modules().values():
        module.train()
    return metrics.compute(), rows


# ----------------------------------------------------------------------------------------------------- checkpoints

def _save_checkpoint(path: str, task, optimizer, scaler, step: int, config: TrainConfig, history: dict,
                     eval_history: list, extra: dict) -> None:
    state = {
        "format": "depthmetric-checkpoint-1",
        "task": task.name,
        "step": step,
        "config": dataclasses.asdict(config),
        "models": {name: {"config": m.config, "state": m.state_dict()} for name, m in task.modules().items()},
        "max_depth": task.model.max_depth,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "history": history,
        "eval_history": eval_history,
        **extra,
    }
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)  # never leave a half-written checkpoint behind


def load_checkpoint(path: str, **overrides):
    """``(task, config, state)`` from a checkpoint written by :func:`train`, the models on ``config.device``;
    ``overrides`` replace config fields (e.g. ``backend``, ``device``, ``data``)."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("format") != "depthmetric-checkpoint-1":
        raise ValueError(f"{path} is not a depthmetric checkpoint")
    config = TrainConfig(**{**state["config"], **overrides})
    config.model = {**state["config"]["model"], **state["models"]["model"]["config"]}
    task = build_task(config, max_depth=state["max_depth"])
    for name, module in task.modules().items():
        if name in state["models"]:
            module.load_state_dict(state["models"][name]["state"])
        module.to(config.device)
    return task, config.resolved(), state


# ----------------------------------------------------------------------------------------------------- loop

def _lr_factor(config: TrainConfig, step: int) -> float:
    warm = min(1.0, (step + 1) / config.warmup) if config.warmup > 0 else 1.0
    if config.schedule == "constant" or config.steps <= config.warmup:
        return warm
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0))))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _default_out(config: TrainConfig) -> str:
    return os.path.join("runs", config.name or time.strftime("%Y%m%d-%H%M%S"))


def _log(config: TrainConfig, message: str) -> None:
    if config.progress:
        print(message, file=sys.stderr if message.startswith("warning") else sys.stdout, flush=True)


def format_metrics(metrics: dict) -> str:
    keys = ("AbsRel", "SqRel", "RMSE", "RMSE_log", "log10", "SILog", "delta1", "delta2", "delta3")
    return "  ".join(f"{k} {metrics[k]:.4f}" for k in keys if k in metrics)


def train(config: TrainConfig, resume: str | None = None, datasets=None) -> dict:
    """Run (or resume) a training job; returns the results dict also written to ``<out>/metrics.json``.

    ``datasets`` = ``(train_set, eval_set, eval_dataset_name)`` replaces :func:`load_data` (tests use it).
    Writes ``<out>/checkpoint.pt`` (at each evaluation and at the end), ``<out>/figure.png`` and
    ``<out>/metrics.json``.
    """
    # The run sets process-wide switches (deterministic algorithms, thread count); the caller gets its own back.
    deterministic = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    threads = torch.get_num_threads()
    try:
        return _train(config, resume, datasets)
    finally:
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        torch.set_num_threads(threads)


def _train(config: TrainConfig, resume: str | None, datasets) -> dict:
    from tqdm.auto import tqdm

    from . import visualize

    start_state = None
    if resume is not None:
        start_state = torch.load(resume, map_location="cpu", weights_only=False)
        saved = TrainConfig(**start_state["config"])
        # A resumed run keeps what defines the model and the random streams; the rest may change.
        config = dataclasses.replace(config, task=saved.task, seed=saved.seed, model=saved.model,
                                     data=saved.data if config.data is None else config.data,
                                     out=config.out or os.path.dirname(os.path.abspath(resume)))
    config = config.resolved()
    device = torch.device(config.device)
    if config.amp == "fp16" and device.type != "cuda":
        raise ValueError("--amp fp16 needs a CUDA device (use bf16 on CPU)")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    if config.deterministic and device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    out = config.out or _default_out(config)
    os.makedirs(out, exist_ok=True)
    config = dataclasses.replace(config, out=out)

    train_set, eval_set, eval_dataset = datasets if datasets is not None else load_data(config)
    if train_set is None:
        raise ValueError("training on --data-root needs --train-split")
    frames = _Frames(train_set, config.height, config.width)
    augmentation = _augmentation(config) if config.augment else None
    task = build_task(config, max_depth=start_state["max_depth"] if start_state else None)
    for module in task.modules().values():
        module.to(device).train()
    params = [p for m in task.modules().values() for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None
    net = torch.compile(task.model) if config.compile else task.model

    history: dict = {"step": [], "loss": [], "lr": []}
    eval_history: list = []
    step = 0
    metrics_before = None
    if start_state is not None:
        for name, module in task.modules().items():
            module.load_state_dict(start_state["models"][name]["state"])
        optimizer.load_state_dict(start_state["optimizer"])
        if scaler is not None and start_state.get("scaler"):
            scaler.load_state_dict(start_state["scaler"])
        step, history, eval_history = start_state["step"], start_state["history"], start_state["eval_history"]
        metrics_before = start_state.get("metrics_before")
        _log(config, f"resumed from {resume} at step {step}")

    _log(config, f"depthmetric train: task={config.task} data={config.data} ({len(train_set)} train / "
                 f"{len(eval_set)} eval images) {config.height}x{config.width} batch={config.batch_size} "
                 f"steps={config.steps} backend={config.backend} device={device} amp={config.amp} -> {out}")
    if metrics_before is None:
        metrics_before, _ = evaluate(task, eval_set, config, eval_dataset, device)
        eval_history.append({"step": step, **metrics_before})
        _log(config, f"before training: {format_metrics(metrics_before)}")

    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
    loss_seconds, steps_done = 0.0, 0
    t_start = time.perf_counter()
    bar = tqdm(total=config.steps, initial=step, disable=not config.progress, dynamic_ncols=True, unit="step")
    while step < config.steps:
        batch = _to(_training_batch(frames, config, step, augmentation), device)
        lr = config.lr * _lr_factor(config, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            outputs = task.forward(batch, net)
        # Split backward: losses on detached outputs (timed), then the network's backward from their gradients.
        detached = {k: v.detach().requires_grad_() for k, v in outputs.items()}
        t_loss = time.perf_counter()
        loss, parts = task.criterion(detached, batch, _step_generator(config.seed, step, 2, device))
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
        step += 1
        steps_done += 1
        history["step"].append(step)
        history["loss"].append(float(loss.detach()))
        history["lr"].append(lr)
        for k, v in parts.items():
            history.setdefault(k, []).append(float(v.detach()))
        bar.set_postfix(loss=f"{history['loss'][-1]:.4f}", **{k: f"{history[k][-1]:.3f}" for k in parts})
        bar.update(1)
        if step % config.eval_every == 0 or step == config.steps:
            metrics, _ = evaluate(task, eval_set, config, eval_dataset, device)
            eval_history.append({"step": step, **metrics})
            bar.write(f"step {step}: {format_metrics(metrics)}") if config.progress else None
            _save_checkpoint(os.path.join(out, "checkpoint.pt"), task, optimizer, scaler, step, config, history,
                             eval_history, {"metrics_before": metrics_before})
    bar.close()
    train_seconds = time.perf_counter() - t_start

    metrics_after, rows = evaluate(task, eval_set, config, eval_dataset, device, keep=config.eval_images)
    if not eval_history or eval_history[-1]["step"] != step:
        eval_history.append({"step": step, **metrics_after})
    _save_checkpoint(os.path.join(out, "checkpoint.pt"), task, optimizer, scaler, step, config, history,
                     eval_history, {"metrics_before": metrics_before})
    _log(config, f"after {step} steps:  {format_metrics(metrics_after)}")

    title = (f"{config.task} {type(task.model).__name__} on {config.data}, {step} steps, backend={config.backend}: "
             f"AbsRel {metrics_before.get('AbsRel', float('nan')):.3f} -> {metrics_after.get('AbsRel', float('nan')):.3f}")
    curves = {k: v for k, v in history.items() if k != "lr"}
    figure = os.path.join(out, "figure.png") if config.figure else None
    if figure:
        visualize.training_figure(rows, curves, figure, title=title, eval_history=eval_history)
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
        },
        "files": {"checkpoint": os.path.join(out, "checkpoint.pt"), "figure": figure,
                  "metrics": os.path.join(out, "metrics.json")},
    }
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(results, f, indent=1)
    _log(config, "wrote " + ", ".join(p for p in results["files"].values() if p))
    return results


# ----------------------------------------------------------------------------------------------------- predict

@torch.no_grad()
def predict_image(task, config: TrainConfig, image: torch.Tensor) -> torch.Tensor:
    """Depth (``H,W`` metres, at the image's own size) of a ``3,H,W`` image in [0, 1] (self-supervised models
    give depth up to an unknown scale)."""
    device = next(task.model.parameters()).device
    for module in task.modules().values():
        module.eval()
    pred = task.predict(_eval_input({"image": image}, config).to(device)).float()
    return F.interpolate(pred, size=image.shape[-2:], mode="bilinear", align_corners=True)[0, 0].cpu()

