"""The small real RGB-D sample shipped inside the package (``depthmetric/training/data/samples/``, see its README
for provenance and terms): 3 NYU Depth V2 pairs and 5 consecutive KITTI raw frames with projected LiDAR.

The samples are laid out like the full data sets and read by the same readers (:class:`NYUDepthV2`,
:class:`KITTIEigen`) through the split files next to them, so what works on the sample works on the
full data.
"""
from __future__ import annotations

import pathlib

from torch.utils.data import Dataset

from ... import _checks
from .datasets import KITTIEigen, NYUDepthV2

__all__ = ["SAMPLES_DIR", "SampleSet", "load_samples"]

SAMPLES_DIR = pathlib.Path(__file__).resolve().parent / "samples"
KINDS = ("nyu", "kitti", "tum")


class SampleSet(Dataset):
    """A materialised list of sample dicts (small data held in memory; optional per-item transform)."""

    def __init__(self, samples: list[dict], transform=None):
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = dict(self.samples[index])
        return self.transform(sample) if self.transform is not None else sample


def load_samples(kind: str = "nyu", sequence: bool = False, transform=None) -> Dataset:
    """The embedded sample as a Dataset of sample dicts (see :mod:`depthmetric.training.data`).

    ``kind="nyu"``: 3 supervised samples, 480x640, Kinect depth (holes are 0). ``kind="tum"``: 2 TUM RGB-D
    samples, 480x640, another Kinect in other rooms (the NYU runs' held-out set). ``kind="kitti"``:
    5 supervised samples, 375x1242, LiDAR depth (about 4% of pixels valid); with ``sequence=True`` the
    3 middle frames as sequence samples whose ``sources`` are the previous and next frame (no poses; the
    depth is the target's LiDAR). NYU has no sequence in the sample. ``transform(sample)`` is applied per
    item (e.g. an augmentation bound to a generator).
    """
    _checks.choice("kind", kind, KINDS)
    root = SAMPLES_DIR / kind
    if not root.is_dir():
        raise FileNotFoundError(f"the embedded samples are missing from {root}; reinstall depthmetric")
    if kind == "nyu":
        if sequence:
            raise ValueError("the NYU sample has no frame sequence; use kind='kitti' for sequence=True")
        data = NYUDepthV2(root, root / "split.txt")
    elif kind == "tum":
        if sequence:
            raise ValueError("the TUM sample has no frame sequence; use kind='kitti' for sequence=True")
        data = NYUDepthV2(root, root / "split.txt", depth_scale=5000.0)  # TUM depth: metres x 5000
    elif sequence:
        data = KITTIEigen(root, root / "sequence_split.txt", sources=(-1, 1))
    else:
        data = KITTIEigen(root, root / "split.txt")
    return SampleSet([data[i] for i in range(len(data))], transform=transform)
