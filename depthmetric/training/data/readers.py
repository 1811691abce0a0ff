"""Readers for the RGB-D formats the samples and the standard data sets use.

Every reader returns torch tensors in one convention: images ``float32 3,H,W`` in [0, 1]; depth
``float32 1,H,W`` in metres with 0 meaning invalid (NaN/Inf/negative inputs become 0); intrinsics
``float32 3,3``; camera poses ``float32 4,4``.

Files may come from anywhere: a truncated or malformed file is a :class:`MalformedFileError` (a
``ValueError``) naming the file and what it should have been, never a decoder's bare error or a silently
wrong depth (an 8-bit PNG read as 16-bit depth, a short pose line); a missing file stays a
``FileNotFoundError``. NPZ archives are read without pickle.
"""
from __future__ import annotations

import functools
import os
import re
import zipfile

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = [
    "MalformedFileError",
    "read_image",
    "read_depth_png",
    "read_pgm",
    "read_kinect_depth",
    "read_pfm",
    "read_kitti_calib",
    "kitti_intrinsics",
    "read_kitti_lidar",
    "read_middlebury",
    "read_tum_poses",
    "read_kinect_sequence",
    "intrinsics",
    "quaternion_to_matrix",
    "depth_tensor",
]

PathLike = str | os.PathLike


class MalformedFileError(ValueError):
    """A file that exists but does not hold what its reader expects."""


def _bad(path: PathLike, message: str) -> MalformedFileError:
    return MalformedFileError(f"{os.fspath(path)}: {message}")


_DECODER_ERRORS = (OSError, ValueError, KeyError, IndexError, EOFError, zipfile.BadZipFile, UnidentifiedImageError)


def _reads(what: str):
    """Decorate a reader of ``path`` so that any decoding failure becomes a MalformedFileError naming the file."""
    def wrap(reader):
        @functools.wraps(reader)
        def read(path, *args, **kwargs):
            try:
                return reader(path, *args, **kwargs)
            except (FileNotFoundError, IsADirectoryError, MalformedFileError):
                raise
            except _DECODER_ERRORS as error:
                raise _bad(path, f"not a valid {what} ({type(error).__name__}: {error})") from error
        return read
    return wrap


def intrinsics(fx: float, fy: float, cx: float, cy: float) -> torch.Tensor:
    """``3,3`` float32 pinhole matrix."""
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float32)


def depth_tensor(depth: np.ndarray) -> torch.Tensor:
    """``H,W`` metres -> ``1,H,W`` float32 with every non-finite or non-positive value set to 0 (invalid)."""
    depth = np.asarray(depth, dtype=np.float32)
    depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(depth))[None]


@_reads("image")
def read_image(path: PathLike) -> torch.Tensor:
    """An 8-bit colour (or grey, replicated) image as ``3,H,W`` float32 in [0, 1]."""
    with Image.open(path) as im:
        array = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


@_reads("16-bit PNG depth map")
def read_depth_png(path: PathLike, scale: float = 1000.0) -> torch.Tensor:
    """A 16-bit PNG depth map: metres = value / ``scale`` (NYU, TUM mm: 1000 / TUM: 5000, KITTI: 256)."""
    with Image.open(path) as im:
        array = np.asarray(im)
    # 8-bit values divided by a 16-bit scale would be a plausible-looking but wrong depth
    if array.ndim != 2 or array.dtype.kind not in "ui" or array.dtype.itemsize < 2:
        raise _bad(path, f"expected a single-channel 16-bit PNG depth map, got dtype {array.dtype} shape {array.shape}")
    return depth_tensor(array.astype(np.float32) / scale)


_PNM_TOKEN = re.compile(rb"(#[^\n]*\n)|(\s+)|(\S+)")


@_reads("binary PGM")
def read_pgm(path: PathLike) -> np.ndarray:
    """A binary PGM (``P5``) as a numpy array; 16-bit files are big-endian, as the Netpbm format says.

    (OpenCV writes 16-bit PGM big-endian too; reading such a file as little-endian gives values that
    look like noise, which is the mistake this reader exists to avoid.)
    """
    with open(path, "rb") as f:
        data = f.read()
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4:
        match = _PNM_TOKEN.match(data, pos)
        if match is None:
            raise _bad(path, "truncated PGM header")
        pos = match.end()
        if match.group(3):
            fields.append(match.group(3))
    if fields[0] != b"P5":
        raise _bad(path, f"not a binary PGM (magic {fields[0]!r})")
    width, height, maxval = (int(v) for v in fields[1:])
    if width < 1 or height < 1 or not 0 < maxval < 65536:
        raise _bad(path, f"PGM header gives {width}x{height}, maxval {maxval}")
    if not data[pos : pos + 1].isspace():
        raise _bad(path, "malformed PGM header")
    pos += 1  # exactly one whitespace byte ends the header
    dtype = np.dtype(">u2") if maxval > 255 else np.dtype("u1")
    count = width * height
    if len(data) - pos < count * dtype.itemsize:
        raise _bad(path, f"PGM data shorter than {width}x{height}")
    return np.frombuffer(data, dtype=dtype, count=count, offset=pos).reshape(height, width).astype(np.uint16)


def read_kinect_depth(path: PathLike, scale: float = 1000.0) -> torch.Tensor:
    """16-bit PGM Kinect depth (millimetres by default, 0 = invalid) as ``1,H,W`` metres."""
    return depth_tensor(read_pgm(path).astype(np.float32) / scale)


@_reads("PFM image")
def read_pfm(path: PathLike) -> np.ndarray:
    """A PFM image (Middlebury disparities) as a float32 ``H,W`` (or ``H,W,3``) array, top row first."""
    with open(path, "rb") as f:
        header = f.readline().strip()
        if header not in (b"Pf", b"PF"):
            raise _bad(path, f"not a PFM file (magic {header!r})")
        dims = f.readline().split()
        width, height = int(dims[0]), int(dims[1])
        scale = float(f.readline().strip())
        if width < 1 or height < 1 or scale == 0 or not np.isfinite(scale):
            raise _bad(path, f"PFM header gives {width}x{height}, scale {scale}")
        dtype = np.dtype("<f4") if scale < 0 else np.dtype(">f4")
        channels = 3 if header == b"PF" else 1
        array = np.frombuffer(f.read(), dtype=dtype, count=width * height * channels)
    shape = (height, width, channels) if channels == 3 else (height, width)
    return np.flipud(array.reshape(shape)).astype(np.float32)  # PFM stores the bottom row first


@_reads("KITTI calibration file")
def read_kitti_calib(path: PathLike) -> dict[str, np.ndarray]:
    """A KITTI ``calib_*.txt`` as ``{key: float64 array}``; non-numeric entries (calib_time) are skipped."""
    out = {}
    with open(path) as f:
        for line in f:
            key, sep, value = line.partition(":")
            if not sep:
                continue
            try:
                out[key.strip()] = np.array([float(v) for v in value.split()], dtype=np.float64)
            except ValueError:
                continue
    return out


def kitti_intrinsics(calib_cam_to_cam: PathLike, camera: int = 2) -> torch.Tensor:
    """K of the rectified camera ``camera`` (0-3): ``P_rect_0X[:3, :3]`` of ``calib_cam_to_cam.txt``."""
    calib = read_kitti_calib(calib_cam_to_cam)
    key = f"P_rect_{camera:02d}"
    if key not in calib:
        raise _bad(calib_cam_to_cam, f"no {key}")
    if calib[key].size != 12 or not np.isfinite(calib[key]).all():
        raise _bad(calib_cam_to_cam, f"{key} must be 12 finite numbers (a 3x4 matrix), got {calib[key].size}")
    return torch.from_numpy(calib[key].reshape(3, 4)[:, :3].astype(np.float32).copy())


def read_kitti_lidar(path: PathLike, key: str = "velodyne_depth") -> torch.Tensor:
    """Projected LiDAR depth: a ``.npz`` (packnet-sfm layout, float metres under ``key``) or a KITTI
    annotated/projected depth PNG (uint16, metres * 256)."""
    if os.fspath(path).endswith(".npz"):
        return _read_depth_npz(path, key)
    return read_depth_png(path, scale=256.0)


@_reads("NPZ depth archive")
def _read_depth_npz(path: PathLike, key: str) -> torch.Tensor:
    with np.load(path, allow_pickle=False) as archive:
        if key not in archive.files:
            raise _bad(path, f"no array {key!r} (it has {archive.files})")
        depth = archive[key]
    if depth.ndim != 2 or depth.dtype.kind not in "fiu":
        raise _bad(path, f"{key} must be a 2-d numeric depth map, got dtype {depth.dtype} shape {depth.shape}")
    return depth_tensor(depth)


def read_middlebury(folder: PathLike, view: int = 0) -> dict[str, torch.Tensor]:
    """A Middlebury 2014 scene folder (``im0.png``, ``disp0GT.pfm``, ``calib.txt``) as image, depth, K.

    depth (m) = baseline (mm) * f / (disparity + doffs) / 1000; infinite disparity is invalid.
    """
    cam, baseline, doffs = _read_middlebury_calib(os.path.join(folder, "calib.txt"), view)
    disparity = read_pfm(os.path.join(folder, f"disp{view}GT.pfm"))
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = baseline * cam[0, 0] / (disparity + doffs) / 1000.0
    return {
        "image": read_image(os.path.join(folder, f"im{view}.png")),
        "depth": depth_tensor(depth),
        "K": torch.from_numpy(cam.astype(np.float32)),
    }


@_reads("Middlebury calib.txt")
def _read_middlebury_calib(path: PathLike, view: int) -> tuple[np.ndarray, float, float]:
    """``cam<view>`` (3x3), ``baseline`` (mm) and ``doffs`` of a Middlebury 2014 ``calib.txt``."""
    calib = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.strip().partition("=")
            calib[key] = value
    cam = np.array([float(v) for v in re.split(r"[\s;]+", calib[f"cam{view}"].strip("[]")) if v]).reshape(3, 3)
    return cam, float(calib["baseline"]), float(calib["doffs"])


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrices ``N,3,3`` from unit quaternions ``N,4`` ordered ``qx qy qz qw`` (normalised here)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


@_reads("pose file")
def read_tum_poses(path: PathLike) -> torch.Tensor:
    """Poses as lines ``tx ty tz qx qy qz qw`` (an optional leading timestamp column is dropped; ``#``
    comments skipped) -> ``N,4,4`` float32 camera-to-world matrices."""
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if line and not line.startswith("#"):
                values = [float(v) for v in line.split()]
                if len(values) not in (7, 8) or not np.isfinite(values).all() or not any(values[-4:]):
                    raise _bad(path, f"line {number}: expected [timestamp] tx ty tz qx qy qz qw (a non-zero quaternion), "
                                     f"got {line!r}")
                rows.append(values[-7:])
    values = np.array(rows, dtype=np.float64).reshape(-1, 7)
    poses = np.tile(np.eye(4), (len(values), 1, 1))
    poses[:, :3, :3] = quaternion_to_matrix(values[:, 3:])
    poses[:, :3, 3] = values[:, :3]
    return torch.from_numpy(poses.astype(np.float32))


# slambook2 ch5 (and TUM fr1-style) Kinect intrinsics, as the data README gives them.
KINECT_K = (518.0, 519.0, 325.5, 253.5)


def read_kinect_sequence(folder: PathLike, depth_scale: float = 1000.0) -> dict[str, torch.Tensor]:
    """The slambook2 ``ch5/rgbd`` layout: ``color/<i>.png``, ``depth/<i>.pgm`` (16-bit big-endian, mm),
    ``pose.txt`` (camera-to-world ``tx ty tz qx qy qz qw`` per frame, frames numbered from 1).

    Returns ``images N,3,H,W``, ``depths N,1,H,W`` (m), ``poses N,4,4`` camera-to-world and ``K``.
    """
    poses = read_tum_poses(os.path.join(folder, "pose.txt"))
    n = poses.shape[0]
    images = torch.stack([read_image(os.path.join(folder, "color", f"{i}.png")) for i in range(1, n + 1)])
    depths = torch.stack(
        [read_kinect_depth(os.path.join(folder, "depth", f"{i}.pgm"), depth_scale) for i in range(1, n + 1)]
    )
    return {"images": images, "depths": depths, "poses": poses, "K": intrinsics(*KINECT_K)}
