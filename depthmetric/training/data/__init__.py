"""Readers, the real samples (a distribution of their own), synthetic scenes and augmentations.

Sample dicts (what every Dataset here yields, and what the training loop consumes):

- supervised: ``{"image": 3,H,W float32 in [0,1], "depth": 1,H,W float32 metres (0 = invalid),
  "K": 3,3 float32}``;
- sequence (self-supervised): ``{"image": target 3,H,W, "sources": S,3,H,W (previous and next frames),
  "K": 3,3}`` plus, when known, ``"poses": S,4,4`` (target camera -> source camera, the ``T`` of
  :func:`depthmetric.warp`) and ``"depth"`` of the target.
"""
from .augment import ColorJitter, Compose, RandomCrop, RandomHorizontalFlip
from .datasets import KITTIEigen, NYUDepthV2, read_split_file
from .readers import (
    MalformedFileError,
    depth_tensor,
    intrinsics,
    kitti_intrinsics,
    quaternion_to_matrix,
    read_depth_png,
    read_image,
    read_kinect_depth,
    read_kinect_sequence,
    read_kitti_calib,
    read_kitti_lidar,
    read_middlebury,
    read_pfm,
    read_pgm,
    read_tum_poses,
)
from .samples import SAMPLES_DIR, SampleSet, SamplesNotInstalled, load_samples
from .synthetic import SyntheticScenes, render

__all__ = [
    "ColorJitter",
    "Compose",
    "KITTIEigen",
    "MalformedFileError",
    "NYUDepthV2",
    "RandomCrop",
    "RandomHorizontalFlip",
    "SAMPLES_DIR",
    "SampleSet",
    "SamplesNotInstalled",
    "SyntheticScenes",
    "depth_tensor",
    "intrinsics",
    "kitti_intrinsics",
    "load_samples",
    "quaternion_to_matrix",
    "read_depth_png",
    "read_image",
    "read_kinect_depth",
    "read_kinect_sequence",
    "read_kitti_calib",
    "read_kitti_lidar",
    "read_middlebury",
    "read_pfm",
    "read_pgm",
    "read_split_file",
    "read_tum_poses",
    "render",
]
