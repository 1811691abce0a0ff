"""The data of a run: which data sets ``--data`` names, and the training batches, served by
``torch.utils.data.DataLoader`` over a ``DistributedSampler`` (one rank or many).

Reproducibility: the sampler's order of epoch ``e`` comes from ``(seed, e)`` and the augmentation of item
``i`` in epoch ``e`` from its own generator seeded with ``(seed, e, i)``, so every rank, worker count and
resumed run sees the same images with the same augmentations. With ``W`` ranks of batch ``b``, step ``k``'s
batches together are the images one process with batch ``W b`` takes at step ``k`` (``DistributedSampler``
interleaves one permutation).
"""
from __future__ import annotations

import math
import os

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from . import data
from .config import TrainConfig

__all__ = ["load_data", "Frames", "TrainingSet", "training_batches", "crop_size"]


def _split_kind(split_file: str) -> str:
    """``kitti`` when the split file's first image is a KITTI raw frame path, else ``nyu``."""
    from .data.datasets import _KITTI_FRAME

    entries = data.read_split_file(split_file)
    return "kitti" if entries and _KITTI_FRAME.match(entries[0][0]) else "nyu"


def _split_dataset(kind: str, root: str, split_file: str, depth_root: str | None, sequence: bool):
    if kind == "kitti":
        return data.KITTIEigen(root, split_file, depth_root=depth_root, kb_crop=True,
                               sources=(-1, 1) if sequence else ())
    if sequence:
        raise ValueError("NYU Depth V2 has no frame sequences here; self-supervised training needs --data kitti")
    return data.NYUDepthV2(root, split_file, depth_root=depth_root)


def load_data(config: TrainConfig):
    """``(train_set, eval_set, eval_dataset_name)`` for ``config.data``; ``eval_dataset_name`` (``"nyu"``,
    ``"kitti"`` or None) picks the metric preset (depth range and crop).

    * ``nyu`` / ``kitti`` without ``data_root``: the samples of ``depthmetric-samples``. ``nyu`` trains on
      its 3 NYU pairs and evaluates on its 2 TUM RGB-D pairs (held out: another Kinect, other rooms);
      ``kitti`` has no frames that may be held out (5 KITTI frames, or their 3 middle frames with both
      neighbours for self-supervised training), so they serve for training and evaluation alike.
    * ``nyu`` / ``kitti`` with ``data_root``: the full data set in its official layout read through BTS-style
      split files ``train_split`` and ``eval_split`` (``depth_root`` for the depth maps when elsewhere).
    * ``synthetic``: procedural rooms (exact depth and poses), ``synthetic_size`` for training and 8 others
      for evaluation.
    * a folder with a ``split.txt`` (laid out like the samples), or a split file: its images serve for
      training and evaluation; NYU or KITTI is told from the paths.
    """
    kind, sequence = config.data, config.task == "self-supervised"
    if kind == "synthetic":
        sources = 2 if sequence else 0
        size = dict(height=config.height, width=config.width, sources=sources)
        return (data.SyntheticScenes(config.synthetic_size, seed=config.seed, **size),
                data.SyntheticScenes(8, seed=config.seed + 10_000, **size), None)
    if kind == "nyu" and config.data_root is None:
        return data.load_samples("nyu", sequence=sequence), data.load_samples("tum"), "nyu"
    if kind == "kitti" and config.data_root is None:
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


class Frames(Dataset):
    """A data set's samples resized to the training frame (cached in memory when small)."""

    def __init__(self, dataset, height: int, width: int, cache_limit: int = 2048):
        self.dataset, self.height, self.width = dataset, height, width
        self.cache: dict[int, dict] | None = {} if len(dataset) <= cache_limit else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        sample = data.augment.resize(self.dataset[index], self.height, self.width)
        if self.cache is not None:
            self.cache[index] = sample
        return sample


def crop_size(config: TrainConfig) -> tuple[int, int]:
    """The training crop: supervised runs train on random crops of 7/8 of the frame (multiples of 8, as BTS
    crops 416x544 from 480x640) and evaluate on the whole frame; self-supervised runs use the whole frame
    (Monodepth2), which DepthNet needs divisible by 32."""
    if config.task == "self-supervised" or not config.augment:
        return config.height, config.width
    return max(8, config.height * 7 // 64 * 8), max(8, config.width * 7 // 64 * 8)


def _augmentation(config: TrainConfig):
    if not config.augment:
        return None
    steps = [data.RandomHorizontalFlip(), data.ColorJitter(p=0.5)]
    h, w = crop_size(config)
    if (h, w) != (config.height, config.width):
        steps.insert(0, data.RandomCrop(h, w))
    return data.Compose(steps)


def generator(seed: int, *stream: int) -> torch.Generator:
    """A CPU generator for one random stream, e.g. ``(epoch, item)`` of the augmentation."""
    value = seed
    for part in stream:
        value = value * 1_000_003 + part
    return torch.Generator().manual_seed(value % (2**63))


class TrainingSet(Dataset):
    """The training frames, repeated so that one epoch fills at least one global batch (tiny data sets such as
    the samples), each item augmented by its own ``(seed, epoch, item)`` generator."""

    def __init__(self, frames: Frames, config: TrainConfig, global_batch: int):
        self.frames, self.seed, self.augmentation = frames, config.seed, _augmentation(config)
        self.repeats = max(1, math.ceil(global_batch / len(frames)))
        self.dtype = getattr(torch, config.dtype)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.frames) * self.repeats

    def __getitem__(self, index: int) -> dict:
        sample = self.frames[index % len(self.frames)]
        if self.augmentation is not None:
            sample = self.augmentation(sample, generator(self.seed, 1, self.epoch, index))
        return {k: v.to(self.dtype) if v.is_floating_point() else v for k, v in sample.items()
                if isinstance(v, torch.Tensor)}


def training_batches(train_set, config: TrainConfig, rank: int, world_size: int, start_step: int = 0):
    """``(step, batch)`` from ``start_step`` to ``config.steps``: this rank's batches of ``config.batch_size``
    through a DataLoader (``config.workers`` workers) over a ``DistributedSampler``, epoch after epoch; a run
    resumed at step ``k`` skips the first ``k`` batches without loading them."""
    dataset = TrainingSet(Frames(train_set, config.height, config.width), config, config.batch_size * world_size)
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=config.seed,
                                 drop_last=False)
    per_epoch = len(sampler) // config.batch_size
    step = start_step
    while step < config.steps:
        epoch, skip = divmod(step, per_epoch)
        sampler.set_epoch(epoch)
        dataset.epoch = epoch  # before the loader's iterator copies the data set into its workers
        indices = list(sampler)
        batches = [indices[i * config.batch_size:(i + 1) * config.batch_size] for i in range(skip, per_epoch)]
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=config.workers,
                            generator=generator(config.seed, 2, epoch))
        for batch in loader:
            yield step, batch
            step += 1
            if step >= config.steps:
                return
