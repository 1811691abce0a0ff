"""Warping helpers (Monodepth2 BackprojectDepth / Project3D semantics) and edge-aware smoothness."""
import math

import pytest
import torch

import depthmetric as dm
from .registry import DEVICES

FX, FY, CX, CY = 100.0, 110.0, 50.0, 30.0
H, W = 61, 101  # so that pixel (x, y) normalises to (x / 50 - 1, y / 30 - 1)


def _K(dtype=torch.float64, device="cpu"):
    return torch.tensor([[FX, 0, CX], [0, FY, CY], [0, 0, 1]], dtype=dtype, device=device)


def _pose(rotation=None, translation=(0.0, 0.0, 0.0), dtype=torch.float64):
    T = torch.eye(4, dtype=dtype)
    if rotation is not None:
        T[:3, :3] = torch.as_tensor(rotation, dtype=dtype)
    T[:3, 3] = torch.as_tensor(translation, dtype=dtype)
    return T[None]


def _normalised(x, y):
    return ((x / (W - 1) - 0.5) * 2, (y / (H - 1) - 0.5) * 2)


def test_backproject_matches_hand_computation():
    depth = torch.full((1, 1, H, W), 2.0, dtype=torch.float64)
    points = dm.backproject(depth, torch.linalg.inv(_K()))
    assert points.shape == (1, 4, H * W)
    index = 40 * W + 60  # row 40, column 60
    expected = torch.tensor([(60 - CX) / FX * 2, (40 - CY) / FY * 2, 2.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(points[0, :, index], expected)


@pytest.mark.parametrize(
    "rotation, translation, pixel",
    [
        # +0.1 m along x at 2 m depth moves the point fx * 0.1 / 2 = 5 px to the right.
        (None, (0.1, 0.0, 0.0), (65.0, 40.0)),
        # Rotation by 90 degrees about the optical axis: (X, Y, Z) -> (-Y, X, Z).
        # X = 0.2, Y = 20/110 -> x = 50 - 100 * (20/110) / 2, y = 30 + 110 * 0.2 / 2.
        ([[0, -1, 0], [1, 0, 0], [0, 0, 1]], (0.0, 0.0, 0.0), (50 - 100 * (20 / 110) / 2, 30 + 110 * 0.1)),
        # Moving 1 m towards the point (Z 2 -> 1) doubles its offset from the principal point.
        (None, (0.0, 0.0, -1.0), (50 + 2 * 10, 30 + 2 * 10)),
    ],
)
def test_project_moves_a_point_as_computed_by_hand(rotation, translation, pixel):
    depth = torch.full((1, 1, H, W), 2.0, dtype=torch.float64)
    points = dm.backproject(depth, torch.linalg.inv(_K()))
    grid = dm.project(points, _K(), _pose(rotation, translation), H, W)
    assert grid.shape == (1, H, W, 2)
    # the target pixel (60, 40)
    expected = torch.tensor(_normalised(*pixel), dtype=torch.float64)
    torch.testing.assert_close(grid[0, 40, 60], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
# Exact up to Monodepth2's 1e-7 on z: pixels move by x * 1e-7 / depth, a few 1e-6 here.
@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-5), (torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
def test_identity_pose_warps_an_image_to_itself(device, dtype, atol):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 13, 17, generator=g).to(device, dtype)
    depth = (0.5 + 5 * torch.rand(2, 1, 13, 17, generator=g)).to(device)
    K = torch.tensor([[20.0, 0, 8.3], [0, 21.0, 6.1], [0, 0, 1]], device=device)
    warped = dm.warp(image, depth, torch.eye(4, device=device).expand(2, 4, 4), K)
    assert warped.dtype == dtype and warped.shape == image.shape
    torch.testing.assert_close(warped.double(), image.double(), atol=atol, rtol=0)


def test_translation_shifts_a_fronto_parallel_image_by_the_expected_pixels():
    g = torch.Generator().manual_seed(1)
    source = torch.rand(1, 3, H, W, generator=g, dtype=torch.float64)
    depth = torch.full((1, 1, H, W), 2.0, dtype=torch.float64)
    warped = dm.warp(source, depth, _pose(translation=(0.1, 0.0, 0.0)), _K())
    # target pixel x sees source pixel x + 5; the last 5 columns clamp to the border.
    torch.testing.assert_close(warped[..., : W - 5], source[..., 5:], atol=2e-5, rtol=0)  # 1e-7 on z
    torch.testing.assert_close(warped[..., W - 5 :], source[..., W - 1 :].expand(-1, -1, -1, 5), atol=2e-5, rtol=0)


def test_backproject_project_round_trip_and_matrix_forms():
    g = torch.Generator().manual_seed(2)
    depth = 1 + torch.rand(3, 1, 9, 11, generator=g, dtype=torch.float64)
    K3 = torch.tensor([[12.0, 0, 5.2], [0, 13.0, 4.1], [0, 0, 1]], dtype=torch.float64)
    K4 = torch.eye(4, dtype=torch.float64)
    K4[:3, :3] = K3
    identity = torch.eye(4, dtype=torch.float64).expand(3, 4, 4)
    points = dm.backproject(depth, torch.linalg.inv(K3))
    grid = dm.project(points, K3, identity, 9, 11)
    ys, xs = torch.meshgrid(torch.arange(9.0), torch.arange(11.0), indexing="ij")
    expected = torch.stack([xs / 10 * 2 - 1, ys / 8 * 2 - 1], -1).double().expand(3, -1, -1, -1)
    torch.testing.assert_close(grid, expected, atol=1e-6, rtol=0)
    # 3x3 / 4x4 / batched forms agree; B,4,H,W points need no height/width.
    torch.testing.assert_close(dm.backproject(depth, torch.linalg.inv(K4).expand(3, 4, 4)), points)
    torch.testing.assert_close(dm.project(points.view(3, 4, 9, 11), K4, identity), grid)
    # A random rigid motion and its inverse bring the points back.
    angle = 0.3
    R = [[math.cos(angle), 0, math.sin(angle)], [0, 1, 0], [-math.sin(angle), 0, math.cos(angle)]]
    T = _pose(R, (0.1, -0.2, 0.05))
    torch.testing.assert_close(torch.linalg.inv(T) @ (T @ points), points)


def test_warp_gradcheck():
    g = torch.Generator().manual_seed(3)
    image = torch.rand(1, 2, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    depth = (2 + torch.rand(1, 1, 5, 6, generator=g, dtype=torch.float64)).requires_grad_()
    K = torch.tensor([[4.0, 0, 2.6], [0, 4.5, 2.1], [0, 0, 1]], dtype=torch.float64)
    T = _pose(translation=(0.11, -0.07, 0.05))
    assert torch.autograd.gradcheck(lambda i, d: dm.warp(i, d, T, K), (image, depth))


def test_warping_bad_input():
    depth = torch.ones(2, 1, 4, 5)
    image = torch.rand(2, 3, 4, 5)
    K = torch.eye(3)
    T = torch.eye(4).expand(2, 4, 4)
    with pytest.raises(ValueError, match="inv_K"):
        dm.backproject(depth, torch.eye(2))
    with pytest.raises(ValueError, match="inv_K"):
        dm.backproject(depth, torch.eye(3).expand(3, 3, 3))
    with pytest.raises(TypeError, match="depth"):
        dm.backproject(depth.long(), K)
    with pytest.raises(ValueError, match="depth"):
        dm.backproject(torch.ones(2, 2, 4, 5), K)
    points = dm.backproject(depth, K)
    with pytest.raises(ValueError, match="height and width"):
        dm.project(points, K, T)
    with pytest.raises(ValueError, match="T"):
        dm.project(points, K, torch.eye(3), 4, 5)
    with pytest.raises(ValueError, match="points"):
        dm.project(points[:, :3], K, T, 4, 5)
    with pytest.raises(ValueError, match="columns"):
        dm.project(points, K, T, 5, 5)
    with pytest.raises(TypeError, match="image"):
        dm.warp((image * 255).to(torch.uint8), depth, T, K)
    with pytest.raises(ValueError, match="depth is 4x4"):
        dm.warp(image, depth[..., :4], T, K)
    with pytest.raises(ValueError, match="batch"):
        dm.warp(image, depth[:1], T, K)
    with pytest.raises(ValueError, match="depth is on meta"):
        dm.warp(image, depth.to("meta"), T, K)
    with pytest.raises(ValueError, match="K is on meta"):
        dm.warp(image, depth, T, K.to("meta"))


# --- edge-aware smoothness -------------------------------------------------------------------------------


def test_smoothness_hand_computed():
    disp = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64)
    # two identical channels: |dx I| is 1 on the top row and 0 below; |dy I| is 0.5 in both columns.
    plane = torch.tensor([[0.0, 1.0], [0.5, 0.5]], dtype=torch.float64)
    image = torch.stack([plane, plane])[None]
    # d* = d / 2.5 -> |dx d*| = 0.4 on both rows, |dy d*| = 0.8 in both columns.
    expected = (0.4 * math.exp(-1) + 0.4) / 2 + 0.8 * math.exp(-0.5)
    got = dm.edge_aware_smoothness(disp, image)
    assert got.dtype == torch.float64 and got.dim() == 0
    assert abs(got.item() - expected) < 1e-7  # the 1e-7 on the mean changes the 8th digit at most


def test_smoothness_is_per_image_scale_invariant_and_batched():
    g = torch.Generator().manual_seed(4)
    disp = 0.1 + torch.rand(3, 1, 7, 9, generator=g)
    image = torch.rand(3, 3, 7, 9, generator=g)
    scales = torch.tensor([0.5, 2.0, 7.0]).view(3, 1, 1, 1)
    torch.testing.assert_close(dm.edge_aware_smoothness(disp * scales, image), dm.edge_aware_smoothness(disp, image))
    per_image = torch.stack([dm.edge_aware_smoothness(disp[i : i + 1], image[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(dm.edge_aware_smoothness(disp[:, 0], image), per_image.mean())
    # 16-bit input is computed and returned in float32
    assert dm.edge_aware_smoothness(disp.half(), image.half()).dtype == torch.float32


def test_smoothness_gradcheck():
    g = torch.Generator().manual_seed(5)
    disp = (0.2 + torch.rand(2, 1, 4, 5, generator=g, dtype=torch.float64)).requires_grad_()
    image = torch.rand(2, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(dm.edge_aware_smoothness, (disp, image))


def test_smoothness_bad_input():
    disp = torch.rand(2, 1, 4, 5)
    image = torch.rand(2, 3, 4, 5)
    with pytest.raises(ValueError, match="disp"):
        dm.edge_aware_smoothness(torch.rand(2, 2, 4, 5), image)
    with pytest.raises(ValueError, match="disp is 4x4"):
        dm.edge_aware_smoothness(disp[..., :4], image)
    with pytest.raises(ValueError, match="batch"):
        dm.edge_aware_smoothness(disp[:1], image)
    with pytest.raises(ValueError, match="image"):
        dm.edge_aware_smoothness(disp, image[0])
    with pytest.raises(TypeError, match="disp"):
        dm.edge_aware_smoothness(disp.int(), image)
    with pytest.raises(ValueError, match="2x2"):
        dm.edge_aware_smoothness(disp[..., :1, :], image[..., :1, :])


def test_align_corners_false_reproduces_monodepth2s_half_pixel_offset():
    """An identity warp of a ramp image[., x] = x: with align_corners=True every pixel samples itself; with
    False (Monodepth2 on torch >= 1.3) pixel x samples x * W / (W - 1) - 0.5, clamped at the border.
    Worked by hand for W = 5: 0, 0.75, 2, 3.25, 4."""
    image = torch.arange(5.0, dtype=torch.float64).expand(1, 1, 3, 5).contiguous()
    depth = torch.ones(1, 1, 3, 5, dtype=torch.float64)
    K = torch.tensor([[4.0, 0, 2], [0, 4.0, 1], [0, 0, 1]], dtype=torch.float64)
    T = torch.eye(4, dtype=torch.float64)
    torch.testing.assert_close(dm.warp(image, depth, T, K), image)
    shifted = dm.warp(image, depth, T, K, align_corners=False)
    torch.testing.assert_close(shifted[0, 0, 1], torch.tensor([0.0, 0.75, 2.0, 3.25, 4.0], dtype=torch.float64))
    with pytest.raises(TypeError, match="align_corners"):
        dm.warp(image, depth, T, K, align_corners="yes")
