"""Reference models: forward shapes, output ranges, gradients, pose geometry, bad input."""
import math

import pytest
import torch

import torch.nn.functional as F

from depthmetric.training.models import (
    MODELS,
    DepthNet,
    LTDepth,
    PoseNet,
    SelfQueryLayer,
    SQLDepthNet,
    ZoeLTDepth,
    build_model,
    disp_to_depth,
    rot_from_axisangle,
    transformation_from_parameters,
)

TINY_LT = dict(width_mult=0.35, stages=3, blocks_per_stage=1, decoder_channels=16, features=8)
TINY_RESNET = dict(width=8, blocks=(1, 1, 1, 1))
TINY_ZOE = dict(TINY_LT, n_bins=8, bin_embedding_dim=8)
TINY_SQL = dict(TINY_RESNET, embedding_dim=8, patch_size=8, queries=4, bins=8, heads=2, layers=1, feedforward=16)


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


@pytest.mark.parametrize("name, config", [("ltdepth", TINY_LT), ("zoe", TINY_ZOE), ("depthnet", TINY_RESNET),
                                          ("sql", TINY_SQL)])
def test_build_model_roundtrip(name, config):
    torch.manual_seed(0)
    model = MODELS[name](**config)
    clone = build_model(name, **model.config)
    clone.load_state_dict(model.state_dict())
    model.eval(), clone.eval()
    x = torch.rand(1, 3, 64, 64)
    out, again = model(x), clone(x)
    for a, b in zip(out if isinstance(out, list) else [out], again if isinstance(again, list) else [again]):
        assert torch.equal(a, b)
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


def _zoe_head_by_hand(head, bottleneck, blocks, last):
    """ZoeDepth's head written out with its own formulas (materialised attractor differences, LogBinomial's
    softmax over B,K,H,W, explicit upsampling of the centres): what MetricBinsHead must equal."""
    up = lambda x, size: F.interpolate(x, size=size, mode="bilinear", align_corners=True)  # noqa: E731
    x = head.bottleneck_conv(bottleneck)
    centers, embedding = head.seed_bins(x), head.seed_projector(x)
    for projector, layer, block in zip(head.projectors, head.attractors, blocks):
        e = projector(block)
        a = layer.net(e + up(embedding, e.shape[-2:]))
        c = up(centers, a.shape[-2:])
        dx = a.unsqueeze(2) - c.unsqueeze(1)
        centers = c + (dx / (1 + 300 * dx.pow(2))).mean(1)  # inv, mean, alpha 300, gamma 2
        embedding = e
    pt = head.conditional(torch.cat([last, up(embedding, last.shape[-2:])], 1)) + 1e-4
    p = (pt[:, 0] / (pt[:, 0] + pt[:, 1])).unsqueeze(1)
    t = ((head.max_temp - head.min_temp) * pt[:, 2] / (pt[:, 2] + pt[:, 3]) + head.min_temp).unsqueeze(1)
    K = centers.shape[1]
    k = torch.arange(K, dtype=p.dtype).view(1, -1, 1, 1)
    n1, k1 = K - 1 + 1e-7, k + 1e-7
    log_binom = n1 * math.log(n1) - k1 * torch.log(k1) - (n1 - k1) * torch.log(n1 - k1 + 1e-7)
    y = log_binom + k * p.clamp(1e-4, 1).log() + (K - 1 - k) * (1 - p).clamp(1e-4, 1).log()
    probs = torch.softmax(y / t, 1)
    return (probs * up(centers, probs.shape[-2:])).sum(1, keepdim=True)


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_zoe_head_is_zoedepths_wiring(backend):
    torch.manual_seed(0)
    model = ZoeLTDepth(**TINY_ZOE, backend=backend).double().eval()
    x = torch.rand(2, 3, 48, 64, dtype=torch.float64)
    maps = model.trunk.decode(x)
    last = torch.cat([maps["features"], maps["prediction"]], 1)
    want = _zoe_head_by_hand(model.head, maps["bottleneck"], maps["blocks"], last)
    depth, feats = model(x, return_features=True)
    torch.testing.assert_close(depth, want, rtol=1e-10, atol=0)
    assert feats.shape == (2, TINY_ZOE["features"], 48, 64)
    depth, probs = model(x, return_probs=True)
    assert probs.shape == (2, TINY_ZOE["n_bins"], 48, 64) and not probs.requires_grad
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 48, 64, dtype=torch.float64))


def test_zoe_attractors_follow_the_decoder_stages():
    assert [a.net[-2].out_channels for a in ZoeLTDepth(**TINY_ZOE).head.attractors] == [4, 1]
    assert [a.net[-2].out_channels for a in ZoeLTDepth(width_mult=0.25, stages=5).head.attractors] == [16, 8, 4, 1]


def test_self_query_summary_is_the_energy_softmax_over_pixels():
    """SQLdepth's summary: softmax of the energies over the pixels, then the weighted mean of the pixel
    embeddings, which scaled_dot_product_attention with scale 1 computes."""
    torch.manual_seed(0)
    layer = SelfQueryLayer(6, embedding_dim=8, patch_size=4, queries=3, bins=5, heads=2, layers=1, feedforward=16,
                           backend="reference").double().eval()  # no dropout: the queries recomputed below
    captured = {}
    layer.bin_regressor.register_forward_hook(lambda m, i, o: captured.update(summaries=i[0]))
    x = torch.rand(2, 6, 16, 12, dtype=torch.float64)
    depth = layer(x)
    queries = layer.transformer(layer.patch_embedding(x).flatten(2).transpose(1, 2) + layer.positions[:12])[:, :3]
    pixels = layer.pixel_embedding(x).flatten(2)  # B,E,hw
    energy = queries @ pixels  # B,Q,hw
    summaries = torch.softmax(energy, 2) @ pixels.transpose(1, 2)
    torch.testing.assert_close(captured["summaries"].view(2, 3, 8), summaries)
    centers = layer.centers(summaries)
    assert (centers.diff(dim=1) > 0).all() and (centers > layer.min_depth).all() and (centers < layer.max_depth).all()
    probs = torch.softmax(layer.to_logits(energy.view(2, 3, 16, 12)), 1)
    torch.testing.assert_close(depth, (probs * centers[..., None, None]).sum(1, keepdim=True))


def test_sqldepthnet_one_scale_of_depth():
    torch.manual_seed(0)
    model = SQLDepthNet(**TINY_SQL, min_depth=0.1, max_depth=20.0)
    (depth,) = model(torch.rand(2, 3, 64, 96))
    assert depth.shape == (2, 1, 32, 48) and model.scales == 1
    assert (depth > 0.1).all() and (depth < 20.0).all()
    depth.mean().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if not n.startswith("query_layer.positions"))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ZoeLTDepth(**{**TINY_ZOE, "stages": 1}), "stages >= 2"),
        (lambda: ZoeLTDepth(**TINY_ZOE, n_attractors=[4]), "one count per decoder block"),
        (lambda: ZoeLTDepth(**TINY_ZOE, attractor_kind="linear"), "attractor_kind"),
        (lambda: ZoeLTDepth(**TINY_ZOE, min_temp=5, max_temp=1), "min_temp"),
        (lambda: SQLDepthNet(**TINY_SQL, min_depth=0), "min_depth"),
    ],
)
def test_bad_bin_head_config(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_self_query_layer_needs_enough_patches():
    with pytest.raises(ValueError, match="gives 4 patches of 8; the self-query layer needs between queries=5"):
        SQLDepthNet(**{**TINY_SQL, "queries": 5})(torch.rand(2, 3, 32, 32))  # 16x16 features, 8x8 patches


def test_zoe_segmentation_head_is_a_training_only_unet_on_the_decoder():
    """seg_classes > 0 adds a U-Net decoder (one up-block per decoder stage plus one onto the full-resolution
    features) whose logits come last with return_segmentation=True; depth is the same with or without it, the
    plain forward never runs it, and seg_classes=0 builds none."""
    from depthmetric.training.models import SegmentationHead, ZoeLTDepth

    torch.manual_seed(0)
    with_head = ZoeLTDepth(**TINY_ZOE, seg_classes=5, backend="reference")
    torch.manual_seed(0)
    without = ZoeLTDepth(**TINY_ZOE, backend="reference")
    assert without.seg_head is None and "seg_classes" not in without.config
    assert isinstance(with_head.seg_head, SegmentationHead) and with_head.config["seg_classes"] == 5
    assert len(with_head.seg_head.ups) == len(with_head.trunk.decoder) + 1
    x = torch.rand(2, 3, 40, 56)
    depth, feats, logits = with_head(x, return_features=True, return_segmentation=True)
    assert logits.shape == (2, 5, 40, 56) and feats.shape[-2:] == (40, 56)
    without.load_state_dict({k: v for k, v in with_head.state_dict().items() if not k.startswith("seg_head.")})
    torch.testing.assert_close(without(x), depth, rtol=0, atol=0)
    calls = []
    with_head.seg_head.register_forward_hook(lambda *a: calls.append(1))
    with_head(x)
    assert not calls
    logits.sum().backward()  # the segmentation loss reaches the shared encoder-decoder
    assert with_head.trunk.stem[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="seg_classes"):
        without(x, return_segmentation=True)
