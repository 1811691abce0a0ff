"""Real data: the true depth and relative pose of a Kinect sequence explain a neighbour frame better than a
slightly wrong pose does (slambook2 ch5 RGB-D frames with their camera-to-world poses)."""
import functools
import math

import pytest
import torch
import torch.nn.functional as F

import depthmetric as dm
from depthmetric.training.data import read_kinect_sequence

from .registry import needs_ext

BACKENDS = ["reference", pytest.param("auto", marks=needs_ext)]
FACTOR = 4  # 640x480 -> 160x120 keeps the test fast
TARGET, SOURCES = 3, (2, 4)  # frames 4 <- 3, 5: the pairs with the most overlap (60-70% of pixels)


@pytest.fixture
def kinect(shared_data):
    folder = shared_data / "slambook2_rgbd_ch5"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return _load(str(folder))


@functools.lru_cache(maxsize=1)
def _load(folder):
    seq = read_kinect_sequence(folder)
    images = F.avg_pool2d(seq["images"], FACTOR)
    # Depth by point sampling (averaging would mix valid with invalid and foreground with background) at
    # the pixel nearest the centre of each 4x4 block; K for the block-averaged image: u' = (u + 0.5)/4 - 0.5.
    depths = seq["depths"][:, :, FACTOR // 2 :: FACTOR, FACTOR // 2 :: FACTOR]
    K = seq["K"].clone()
    K[:2, :2] /= FACTOR
    K[:2, 2] = (K[:2, 2] + 0.5) / FACTOR - 0.5
    return images, depths, seq["poses"].double(), K


def _perturb(T):
    """A pose error a pose network could well make: 2 degrees of yaw and 5 cm sideways."""
    a = math.radians(2.0)
    E = torch.tensor(
        [[math.cos(a), 0, math.sin(a), 0.05], [0, 1, 0, 0], [-math.sin(a), 0, math.cos(a), 0], [0, 0, 0, 1]],
        dtype=T.dtype,
    )
    return E @ T


def test_kinect_depth_is_decoded_big_endian(kinect):
    _, depths, _, _ = kinect
    valid = depths[depths > 0]
    assert valid.numel() > 0.5 * depths.numel()
    assert 0.5 < valid.median().item() < 5.0  # little-endian decoding would give tens of metres of noise


@pytest.mark.parametrize("backend", BACKENDS)
def test_true_pose_beats_perturbed_pose(kinect, backend):
    images, depths, poses, K = kinect
    target, depth = images[TARGET : TARGET + 1], depths[TARGET : TARGET + 1]
    valid = depth > 0
    sources = [images[s : s + 1] for s in SOURCES]
    true_T = [(torch.linalg.inv(poses[s]) @ poses[TARGET]).float()[None] for s in SOURCES]
    warped = {
        "true": [dm.warp(src, depth, T, K) for src, T in zip(sources, true_T)],
        "perturbed": [dm.warp(src, depth, _perturb(T), K) for src, T in zip(sources, true_T)],
    }
    # per source: the photometric error over valid-depth pixels
    for s in range(len(SOURCES)):
        err = {k: dm.photometric_error(target, w[s], backend=backend)[valid].mean().item() for k, w in warped.items()}
        assert err["true"] < 0.75 * err["perturbed"], err
    # min-reprojection with auto-masking over both sources
    loss_fn = dm.ReprojectionLoss(alpha=0.85, automask=True, backend=backend)
    result = {}
    for k, w in warped.items():
        loss, automask, winner = loss_fn(
            w, target, sources, generator=torch.Generator().manual_seed(0), return_mask=True
        )
        assert automask.shape == valid.shape and winner.shape == valid.shape
        result[k] = (loss.item(), automask[valid].float().mean().item())
    assert result["true"][0] < 0.85 * result["perturbed"][0], result
    assert result["true"][1] > 1.2 * result["perturbed"][1], result  # more pixels won by a warped frame
