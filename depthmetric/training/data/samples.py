"""The small real RGB-D samples: 3 NYU Depth V2 pairs, 5 consecutive KITTI raw frames with projected LiDAR and
2 TUM RGB-D pairs. They are third-party data under their own (non-commercial) terms, so they are not part of
depthmetric but a distribution of their own, ``depthmetric-samples`` (import ``depthmetric_samples``), built from
the repository's ``samples/`` folder, whose README gives their provenance and terms.

The samples are laid out like the full data sets and read by the same readers (:class:`NYUDepthV2`,
:class:`KITTIEigen`) through the split files next to them, so what works on the sample works on the
full data.
"""
from __future__ import annotations

from torch.utils.data import Dataset

from ... import _checks
from .datasets import KITTIEigen, NYUDepthV2

__all__ = ["SAMPLES_DIR", "SampleSet", "SamplesNotInstalled", "load_samples"]

try:
    from depthmetric_samples import DATA_DIR as SAMPLES_DIR
except ImportError:
    SAMPLES_DIR = None
KINDS = ("nyu", "kitti", "tum")


class SamplesNotInstalled(FileNotFoundError):
    """The samples' distribution is not installed; the message says what to install, in one line."""


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
    """The installed samples as a Dataset of sample dicts (see :mod:`depthmetric.training.data`).

    ``kind="nyu"``: 3 supervised samples, 480x640, Kinect depth (holes are 0). ``kind="tum"``: 2 TUM RGB-D
    samples, 480x640, another Kinect in other rooms (the NYU runs' held-out set). ``kind="kitti"``:
    5 supervised samples, 375x1242, LiDAR depth (about 4% of pixels valid); with ``sequence=True`` the
    3 middle frames as sequence samples whose ``sources`` are the previous and next frame (no poses; the
    depth is the target's LiDAR). NYU has no sequence in the sample. ``transform(sample)`` is applied per
    item (e.g. an augmentation bound to a generator).
    """
    _checks.choice("kind", kind, KINDS)
    if SAMPLES_DIR is None:
        raise SamplesNotInstalled(
            "the real RGB-D samples are not installed: `pip install ./samples` in a depthmetric checkout "
            "(the distribution depthmetric-samples; non-commercial terms), or pass --data-root with your own "
            "data set (or --data synthetic)"
        )
    root = SAMPLES_DIR / kind
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
