"""The standard full data sets, read from their official layouts through the split files everyone uses.

- NYU Depth V2 as BTS / NeWCRFs / ZoeDepth lay it out (``sync/`` for training, ``official_splits/test/``
  for the 654 Eigen test images): split lines ``rgb_path depth_path focal``, depth a uint16 PNG in mm.
- KITTI Eigen split as BTS lays it out: split lines ``image_path depth_path focal`` with the image under
  the KITTI raw root and the depth under the annotated (``data_depth_annotated``) or projected-LiDAR
  depth root (uint16 PNG, metres * 256; a ``.npz`` with ``velodyne_depth`` also works). Lines whose depth
  is ``None`` (frames without ground truth) are skipped unless ``require_depth=False``.

Both yield the sample dicts described in :mod:`depthmetric.training.data`.
"""
from __future__ import annotations

import os
import re

import torch
from torch.utils.data import Dataset

from .augment import crop
from .readers import intrinsics, kitti_intrinsics, read_depth_png, read_image, read_kitti_lidar

__all__ = ["NYUDepthV2", "KITTIEigen", "read_split_file", "kb_crop", "NYU_K"]

# NYU Depth V2 Kinect colour intrinsics (the values BTS, ZoeDepth and Metric3D use).
NYU_K = (518.8579, 519.46961, 325.58245, 253.73617)


def read_split_file(path: str | os.PathLike) -> list[tuple[str, str | None, float]]:
    """Lines ``image depth focal`` -> ``(image, depth or None, focal)``; leading ``/`` are stripped (the
    BTS NYU train list has them), blank lines skipped."""
    entries = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3:
                raise ValueError(f"{path}:{number}: expected 'image_path depth_path focal', got {line.strip()!r}")
            image, depth, focal = parts
            depth = None if depth == "None" else depth.lstrip("/")
            entries.append((image.lstrip("/"), depth, float(focal)))
    return entries


class _SplitDataset(Dataset):
    def __init__(self, root, split_file, depth_root, require_depth, transform):
        self.root = os.fspath(root)
        self.depth_root = os.fspath(depth_root) if depth_root is not None else self.root
        entries = read_split_file(split_file)
        self.entries = [e for e in entries if e[1] is not None] if require_depth else entries
        self.transform = transform

    def __len__(self) -> int:
        return len(self.entries)

    def _finish(self, sample: dict) -> dict:
        return self.transform(sample) if self.transform is not None else sample


class NYUDepthV2(_SplitDataset):
    """NYU Depth V2 through a BTS-style split file (e.g. ``nyudepthv2_test_files_with_gt.txt``).

    ``root`` holds the RGB paths of the split file and ``depth_root`` (default ``root``) the depth paths.
    ``K`` uses the split file's focal for ``fx``, ``fy = focal * 519.46961 / 518.8579`` and the standard
    NYU principal point. Images are returned at full resolution (480x640); crop for evaluation with
    :mod:`depthmetric.metrics`.
    """

    def __init__(self, root, split_file, depth_root=None, depth_scale: float = 1000.0, transform=None):
        super().__init__(root, split_file, depth_root, True, transform)
        self.depth_scale = depth_scale

    def __getitem__(self, index: int) -> dict:
        image_path, depth_path, focal = self.entries[index]
        fx, fy, cx, cy = NYU_K
        return self._finish(
            {
                "image": read_image(os.path.join(self.root, image_path)),
                "depth": read_depth_png(os.path.join(self.depth_root, depth_path), self.depth_scale),
                "K": intrinsics(focal, focal * fy / fx, cx, cy),
            }
        )


_KITTI_FRAME = re.compile(r"^(?P<date>\d{4}_\d{2}_\d{2})/.*image_0(?P<cam>[0-3])/data/(?P<frame>\d+)\.(?P<ext>\w+)$")
KB_CROP = (352, 1216)  # the KITTI benchmark crop BTS and NeWCRFs train and test on


class KITTIEigen(_SplitDataset):
    """KITTI (Eigen split) through a BTS-style split file (e.g. ``eigen_test_files_with_gt.txt``).

    ``root`` is the KITTI raw root (``<date>/<drive>_sync/image_0X/data/*.png`` and
    ``<date>/calib_cam_to_cam.txt``, from which ``K`` is read: ``P_rect_0X``); ``depth_root`` holds the
    depth paths of the split file (``data_depth_annotated``). ``kb_crop=True`` crops every frame to the
    bottom-centre 352x1216 (the KITTI benchmark crop) so frames of different drives batch together, and
    shifts ``K`` accordingly. ``sources=(-1, 1)`` also loads those neighbouring frames of the drive as
    ``"sources"`` (for self-supervised training); a frame whose neighbour is missing raises.
    """

    def __init__(
        self,
        root,
        split_file,
        depth_root=None,
        kb_crop: bool = False,
        sources: tuple[int, ...] = (),
        require_depth: bool = True,
        transform=None,
    ):
        super().__init__(root, split_file, depth_root, require_depth, transform)
        self.kb_crop = kb_crop
        self.sources = tuple(int(s) for s in sources)
        self._calib: dict[tuple[str, int], torch.Tensor] = {}

    def _K(self, date: str, cam: int) -> torch.Tensor:
        if (date, cam) not in self._calib:
            path = os.path.join(self.root, date, "calib_cam_to_cam.txt")
            if not os.path.isfile(path):
                raise FileNotFoundError(f"KITTI calibration {path} not found (it comes with each raw date folder)")
            self._calib[(date, cam)] = kitti_intrinsics(path, cam)
        return self._calib[(date, cam)].clone()

    def __getitem__(self, index: int) -> dict:
        image_path, depth_path, _ = self.entries[index]
        match = _KITTI_FRAME.match(image_path)
        if match is None:
            raise ValueError(f"not a KITTI raw frame path: {image_path!r}")
        sample = {"image": read_image(os.path.join(self.root, image_path))}
        sample["K"] = self._K(match["date"], int(match["cam"]))
        if depth_path is not None:
            sample["depth"] = read_kitti_lidar(os.path.join(self.depth_root, depth_path))
        if self.sources:
            frame, width = int(match["frame"]), len(match["frame"])
            start = match.start("frame")
            paths = [f"{image_path[:start]}{frame + s:0{width}d}.{match['ext']}" for s in self.sources]
            sample["sources"] = torch.stack([read_image(os.path.join(self.root, p)) for p in paths])
        if self.kb_crop:
            sample = kb_crop(sample)
        return self._finish(sample)


def kb_crop(sample: dict) -> dict:
    """The KITTI benchmark crop: bottom 352 rows, centre 1216 columns; ``K``'s principal point follows."""
    height, width = sample["image"].shape[-2:]
    crop_h, crop_w = KB_CROP
    if height < crop_h or width < crop_w:
        raise ValueError(f"image {height}x{width} is smaller than the KITTI benchmark crop {crop_h}x{crop_w}")
    return crop(sample, height - crop_h, (width - crop_w) // 2, crop_h, crop_w)
