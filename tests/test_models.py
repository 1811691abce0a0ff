"""Reference models: forward shapes, output ranges, gradients, pose geometry, bad input."""
import math

import pytest
import torch

from depthmetric.training.models import (
    DepthNet,
    LTDepth,
    PoseNet,
    build_model,
    disp_to_depth,
    rot_from_axisangle,
    transformation_from_parameters,
)

TINY_LT = dict(width_mult=0.35, stages=3, blocks_per_stage=1, decoder_channels=16, features=8)
TINY_RESNET = dict(width=8, blocks=(1, 1, 1, 1))


@pytest.mark.parametrize("size", [(32, 48), (37, 50), (64, 64)])
@pytest.mark.parametrize("output", ["sigmoid", "softplus"])
def test_ltdepth_shapes_and_range(size, output):
    torch.manual_seed(0)
    model = LTDepth(**TINY_LT, min_depth=0.5, max_depth=4.0, output=output)
    x = torch.rand(2, 3, *size)
    depth, feats = model(x, return_features=True)
    assert depth.shape == (2, 1, *size)
    assert feats.shape == (2, 8, *size)
    assert torch.equal(model(x), depth)
    assert depth.min() >= 0.5
    if output == "sigmoid":
        assert depth.max() <= 4.0
    (depth.mean() + feats.square().mean()).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("stages", [1, 2, 5])
def test_ltdepth_stages(stages):
    model = LTDepth(width_mult=0.25, stages=stages, blocks_per_stage=1, decoder_channels=16, features=8)
    assert len(model.encoder) == stages and len(model.decoder) == stages - 1
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_ltdepth_full_mobilenetv3_layout():
    model = LTDepth()
    blocks = sum(len(stage) for stage in model.encoder)
    assert blocks == 15  # MobileNetV3-Large's 15 bneck blocks
    assert model.encoder[-1][-1].block[-1][0].out_channels == 160
    assert any(isinstance(m, torch.nn.Hardswish) for m in model.modules())


def test_build_model_roundtrip():
    model = LTDepth(**TINY_LT)
    clone = build_model("lt", **model.config)
    clone.load_state_dict(model.state_dict())
    model.eval(), clone.eval()
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(model(x), clone(x))
    with pytest.raises(ValueError, match="unknown model"):
        build_model("vit")


def test_depthnet_four_scales():
    torch.manual_seed(0)
    model = DepthNet(**TINY_RESNET, decoder_width=4)
    disps = model(torch.rand(2, 3, 64, 96))
    assert [tuple(d.shape) for d in disps] == [(2, 1, 64 // 2**s, 96 // 2**s) for s in range(4)]
    assert all(((d > 0) & (d < 1)).all() for d in disps)
    depth = model.depth(disps[0])
    assert depth.min() >= 0.1 and depth.max() <= 100


def test_disp_to_depth_endpoints():
    scaled, depth = disp_to_depth(torch.tensor([0.0, 1.0]), 0.1, 100.0)
    torch.testing.assert_close(scaled, torch.tensor([0.01, 10.0]))
    torch.testing.assert_close(depth, torch.tensor([100.0, 0.1]))


def test_posenet_outputs_and_matrix():
    torch.manual_seed(0)
    model = PoseNet(**TINY_RESNET, hidden=16)
    a, b = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    axisangle, translation = model(a, b)
    assert axisangle.shape == (2, 3) and translation.shape == (2, 3)
    assert axisangle.abs().max() < 0.1  # scaled by 0.01 as Monodepth2
    M = model.matrix(a, b)
    assert M.shape == (2, 4, 4)
    torch.testing.assert_close(M[:, 3], torch.tensor([[0.0, 0, 0, 1]] * 2))


def test_rotation_matches_rodrigues():
    aa = torch.tensor([[0.0, 0.0, math.pi / 2], [0.3, -0.2, 0.1]], dtype=torch.float64)
    R = rot_from_axisangle(aa)[:, :3, :3]
    torch.testing.assert_close(R[0], torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64))
    K = torch.tensor([[0, -0.1, -0.2], [0.1, 0, -0.3], [0.2, 0.3, 0]], dtype=torch.float64)  # skew of aa[1]
    torch.testing.assert_close(R[1], torch.linalg.matrix_exp(K))
    # zero rotation: identity, finite gradient
    zero = torch.zeros(1, 3, requires_grad=True)
    R0 = rot_from_axisangle(zero)
    torch.testing.assert_close(R0[0], torch.eye(4))
    R0.sum().backward()
    assert torch.isfinite(zero.grad).all()


def test_transformation_semantics_and_inverse():
    torch.manual_seed(1)
    aa, t = 0.3 * torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    M = transformation_from_parameters(aa, t)
    R = rot_from_axisangle(aa)
    torch.testing.assert_close(M[:, :3, :3], R[:, :3, :3])  # rotate, then translate: M = T(t) R
    torch.testing.assert_close(M[:, :3, 3], t)
    inv = transformation_from_parameters(aa, t, invert=True)
    # the 1e-7 in the axis normalisation (Monodepth2) leaves R orthonormal to ~1e-7 only
    torch.testing.assert_close(M @ inv, torch.eye(4, dtype=torch.float64).expand(4, 4, 4), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: LTDepth(stages=0), "stages"),
        (lambda: LTDepth(output="relu"), "output"),
        (lambda: LTDepth(min_depth=5, max_depth=1), "min_depth"),
        (lambda: LTDepth(width_mult=0), "width_mult"),
    ],
)
def test_bad_config(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_input_shapes():
    with pytest.raises(ValueError, match="x must be"):
        LTDepth(**TINY_LT)(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="divisible by 32"):
        DepthNet(**TINY_RESNET)(torch.rand(1, 3, 60, 64))
    with pytest.raises(ValueError, match="target and source"):
        PoseNet(**TINY_RESNET)(torch.rand(1, 3, 64, 64), torch.rand(2, 3, 64, 64))
