"""Untrusted data files: every reader, given a truncated, malformed or wrong-kind file, raises a ValueError
(MalformedFileError) naming the file, never a decoder's bare error, a crash or a silently wrong depth; a
missing file stays a FileNotFoundError."""
import io

import numpy as np
import pytest
from PIL import Image

from depthmetric.training.data import readers
from depthmetric.training.data.readers import MalformedFileError


def png(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


DEPTH16 = png((np.arange(48 * 64, dtype=np.uint16) % 5000).reshape(48, 64))
RGB = png(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


PICKLED = npz(velodyne_depth=np.array([{"not": "an array"}], dtype=object))
PGM_GOOD = b"P5\n4 3\n65535\n" + np.arange(12, dtype=">u2").tobytes()
PFM_GOOD = b"Pf\n4 3\n-1.0\n" + np.ones(12, dtype="<f4").tobytes()
CALIB = "P_rect_02: " + " ".join(["1.0"] * 12) + "\n"

# (reader, file name, content, message the error must carry besides the file name)
CASES = {
    "depth png truncated": (readers.read_depth_png, "d.png", DEPTH16[: len(DEPTH16) // 2], "16-bit PNG"),
    "depth png garbage": (readers.read_depth_png, "d.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "16-bit PNG"),
    "depth png 8-bit": (readers.read_depth_png, "d.png", png(np.full((8, 8), 200, np.uint8)), "16-bit"),
    "depth png colour": (readers.read_depth_png, "d.png", RGB, "single-channel"),
    "depth png empty": (readers.read_depth_png, "d.png", b"", "16-bit PNG"),
    "image truncated": (readers.read_image, "i.png", RGB[: len(RGB) // 2], "image"),
    "image not an image": (readers.read_image, "i.jpg", b"hello", "image"),
    "pgm magic": (readers.read_pgm, "d.pgm", b"P2\n4 3\n255\n" + bytes(12), "magic"),
    "pgm header": (readers.read_pgm, "d.pgm", b"P5\n4", "truncated PGM header"),
    "pgm width": (readers.read_pgm, "d.pgm", b"P5\nfour 3\n255\n" + bytes(12), "binary PGM"),
    "pgm maxval": (readers.read_pgm, "d.pgm", b"P5\n4 3\n0\n" + bytes(12), "maxval 0"),
    "pgm short": (readers.read_pgm, "d.pgm", PGM_GOOD[:-5], "shorter"),
    "pfm magic": (readers.read_pfm, "d.pfm", b"P6\n4 3\n-1.0\n", "magic"),
    "pfm dims": (readers.read_pfm, "d.pfm", b"Pf\n4\n-1.0\n", "PFM image"),
    "pfm scale": (readers.read_pfm, "d.pfm", b"Pf\n4 3\n0\n" + bytes(48), "scale 0"),
    "pfm short": (readers.read_pfm, "d.pfm", PFM_GOOD[:-8], "PFM image"),
    "npz garbage": (readers.read_kitti_lidar, "d.npz", b"PK\x03\x04garbage", "NPZ"),
    "npz truncated": (readers.read_kitti_lidar, "d.npz", npz(velodyne_depth=np.ones((4, 5)))[:60], "NPZ"),
    "npz key": (readers.read_kitti_lidar, "d.npz", npz(depth=np.ones((4, 5))), "velodyne_depth"),
    "npz pickle": (readers.read_kitti_lidar, "d.npz", PICKLED, "NPZ"),
    "npz 3-d": (readers.read_kitti_lidar, "d.npz", npz(velodyne_depth=np.ones((2, 4, 5))), "2-d"),
    "calib short matrix": (readers.kitti_intrinsics, "calib.txt", "P_rect_02: 1 2 3\n", "12 finite numbers"),
    "calib missing": (readers.kitti_intrinsics, "calib.txt", "P_rect_00: " + " ".join(["1"] * 12), "P_rect_02"),
    "calib binary": (readers.kitti_intrinsics, "calib.txt", b"\xff\xfe\x00P_rect", "calibration"),
    "poses short line": (readers.read_tum_poses, "pose.txt", "1 2 3 0 0 0 1\n1 2 3 0 0\n", "line 2"),
    "poses words": (readers.read_tum_poses, "pose.txt", "x y z 0 0 0 1\n", "pose file"),
    "poses zero quaternion": (readers.read_tum_poses, "pose.txt", "1 2 3 0 0 0 0\n", "non-zero quaternion"),
}


@pytest.mark.parametrize("case", CASES)
def test_malformed_file_is_named(tmp_path, case):
    reader, name, content, message = CASES[case]
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(MalformedFileError, match=message) as error:
        reader(path)
    assert str(path) in str(error.value)


def test_middlebury_calibration_without_a_key_is_named(tmp_path):
    (tmp_path / "calib.txt").write_text("cam0=[1 0 2; 0 1 2; 0 0 1]\nbaseline=100\n")
    with pytest.raises(MalformedFileError, match="calib.txt"):
        readers.read_middlebury(tmp_path)


def test_good_files_still_read_and_missing_ones_stay_missing(tmp_path):
    for name, content in (("d.png", DEPTH16), ("d.pgm", PGM_GOOD), ("d.pfm", PFM_GOOD), ("c.txt", CALIB)):
        (tmp_path / name).write_bytes(content.encode() if isinstance(content, str) else content)
    assert readers.read_depth_png(tmp_path / "d.png").shape == (1, 48, 64)
    assert readers.read_pgm(tmp_path / "d.pgm").shape == (3, 4)
    assert readers.read_pfm(tmp_path / "d.pfm").shape == (3, 4)
    assert readers.kitti_intrinsics(tmp_path / "c.txt").shape == (3, 3)
    with pytest.raises(FileNotFoundError):
        readers.read_depth_png(tmp_path / "absent.png")
    assert issubclass(MalformedFileError, ValueError)  # for callers that catch those
