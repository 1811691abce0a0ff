"""depthmetric.metrics: the standard metrics against an independent numpy implementation (random and real
NYU / KITTI depth), known values, crops and DepthMetrics (the fused kernel against its twin:
test_depth_metric_sums.py; boundary F1 and recall: test_boundary.py)."""
import math

import numpy as np
import pytest
import torch

import depthmetric as dm
from depthmetric.metrics import METRICS, DepthMetrics, compute, crop_window

from .registry import COMPILED, depth_pair, perturbed, real_nyu_depth

BACKENDS = ["reference"] + (["auto"] if COMPILED else [])


# ---------- independent numpy implementation (Monodepth2 / ZoeDepth evaluation, written out) ----------

def np_errors(gt, pred):
    thresh = np.maximum(gt / pred, pred / gt)
    err = np.log(pred) - np.log(gt)
    return {
        "AbsRel": np.mean(np.abs(gt - pred) / gt),
        "SqRel": np.mean((gt - pred) ** 2 / gt),
        "RMSE": np.sqrt(np.mean((gt - pred) ** 2)),
        "RMSE_log": np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2)),
        "log10": np.mean(np.abs(np.log10(gt) - np.log10(pred))),
        "SILog": np.sqrt(np.mean(err ** 2) - np.mean(err) ** 2) * 100,
        "delta1": np.mean(thresh < 1.25),
        "delta2": np.mean(thresh < 1.25 ** 2),
        "delta3": np.mean(thresh < 1.25 ** 3),
    }


def np_image(pred, gt, lo, hi, window, median_scaling=False, mask=None):
    """One H,W image; None when no pixel counts."""
    r0, r1, c0, c1 = window
    keep = np.zeros(gt.shape, bool)
    keep[r0:r1, c0:c1] = True
    with np.errstate(invalid="ignore"):
        keep &= np.isfinite(gt) & (gt > 0) & (gt > lo) & (gt < hi)  # strict, as Monodepth2's evaluation
    if mask is not None:
        keep &= mask
    p, g = pred[keep].astype(np.float64), gt[keep].astype(np.float64)
    if p.size == 0:
        return None
    if median_scaling:
        p = p * np.median(g) / np.median(p)
    p = np.clip(p, lo, hi)
    ok = p > 0
    return np_errors(g[ok], p[ok])


def check_against_numpy(result, pred, gt, lo, hi, window, median_scaling=False, mask=None, tol=1e-6):
    pred, gt = pred[:, 0].double().cpu().numpy(), gt[:, 0].double().cpu().numpy()
    mask = None if mask is None else mask[:, 0].cpu().numpy()
    expected = [np_image(pred[b], gt[b], lo, hi, window, median_scaling, None if mask is None else mask[b])
                for b in range(len(pred))]
    for name in METRICS:
        got = result["per_image"][name].cpu().numpy()
        want = np.array([0.0 if e is None else e[name] for e in expected])
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=name)
        images = [e[name] for e in expected if e is not None]
        np.testing.assert_allclose(float(result[name]), np.mean(images) if images else 0.0, rtol=tol, atol=tol)


CONFIGS = [
    dict(dataset="nyu"),
    dict(dataset="kitti"),
    dict(dataset=None),
    dict(dataset=None, min_depth=0.5, max_depth=6.0, crop="eigen"),
    dict(dataset="nyu", crop=None, median_scaling=True),
    dict(dataset="kitti", crop="eigen"),
]


def settings(cfg, H, W):
    lo, hi, crop = dm.metrics._settings(cfg.get("dataset"), cfg.get("min_depth"), cfg.get("max_depth"),
                                        cfg.get("crop", "auto"))
    return lo, hi, crop_window(crop, H, W, cfg.get("dataset"))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cfg", CONFIGS)
def test_random_against_numpy(cfg, backend):
    pred, gt = depth_pair(H=96, W=128)
    lo, hi, window = settings(cfg, 96, 128)
    result = compute(pred, gt, backend=backend, **cfg)
    check_against_numpy(result, pred, gt, lo, hi, window, cfg.get("median_scaling", False))
    assert result["valid_pixels"][-1] == 0 and result["valid_pixels"][0] > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_mask_and_bhw_input(backend):
    pred, gt = depth_pair(invalid=False)
    mask = torch.rand(gt.shape, generator=torch.Generator().manual_seed(3)) < 0.5
    result = compute(pred[:, 0], gt[:, 0], mask=mask[:, 0], backend=backend)
    check_against_numpy(result, pred, gt, 0.0, math.inf, (0, 40, 0, 56), mask=mask)


def _kitti(shared_data):
    files = sorted((shared_data / "kitti_tiny_packnet").glob("**/proj_depth/velodyne/image_02/*.npz"))[:3]
    assert files
    return torch.stack([torch.from_numpy(np.load(f)["velodyne_depth"].astype(np.float64)) for f in files])[:, None]


@pytest.mark.parametrize("backend", BACKENDS)
def test_real_nyu_against_numpy(shared_data, backend):
    gt = real_nyu_depth(shared_data)
    assert gt.shape[-2:] == (480, 640)
    pred = perturbed(gt, 1)
    result = compute(pred, gt, dataset="nyu", backend=backend)
    check_against_numpy(result, pred, gt, 1e-3, 10.0, (45, 471, 41, 601))
    assert 0.05 < float(result["AbsRel"]) < 0.3


@pytest.mark.parametrize("backend", BACKENDS)
def test_real_kitti_against_numpy(shared_data, backend):
    gt = _kitti(shared_data)
    pred = perturbed(gt, 2)
    for cfg in (dict(dataset="kitti"), dict(dataset="kitti", median_scaling=True)):
        result = compute(pred * 0.7, gt, backend=backend, **cfg)
        check_against_numpy(result, pred * 0.7, gt, 1e-3, 80.0, crop_window("garg", *gt.shape[-2:]),
                            cfg.get("median_scaling", False))


@pytest.mark.parametrize("backend", BACKENDS)
def test_known_values(backend):
    gt = torch.rand(2, 1, 30, 40, dtype=torch.float64) * 6 + 0.5  # 1.3 * gt stays below NYU's 10 m
    same = compute(gt, gt, dataset="nyu", crop=None, backend=backend)
    assert float(same["AbsRel"]) == 0 and float(same["delta1"]) == 1 and float(same["RMSE"]) == 0
    assert float(same["SILog"]) == 0
    scaled = compute(1.3 * gt, gt, dataset="nyu", crop=None, backend=backend)
    assert float(scaled["delta1"]) == 0 and float(scaled["delta2"]) == 1
    assert float(scaled["AbsRel"]) == pytest.approx(0.3, abs=1e-12)
    assert float(scaled["SILog"]) == pytest.approx(0.0, abs=1e-5)  # a global scale has no SILog error
    rescaled = compute(1.3 * gt, gt, crop=None, median_scaling=True, backend=backend)
    assert float(rescaled["AbsRel"]) == pytest.approx(0.0, abs=1e-12)


def test_crop_windows():
    assert crop_window("eigen", 480, 640) == (45, 471, 41, 601)
    assert crop_window("eigen", 240, 320) == (22, 235, 20, 300)  # proportional, floored
    assert crop_window("garg", 375, 1242) == (153, 371, 44, 1197)  # Monodepth2's int(0.40810811 * H) ...
    assert crop_window("eigen", 375, 1242, "kitti") == (124, 342, 44, 1197)
    assert crop_window(None, 7, 9) == (0, 7, 0, 9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_crop_is_applied(backend):
    gt = torch.full((1, 1, 480, 640), 2.0, dtype=torch.float64)
    pred = gt.clone()
    pred[..., :45, :] = 9.0  # wrong only outside the Eigen window
    pred[..., 471:, :] = 9.0
    pred[..., :, :41] = 9.0
    pred[..., :, 601:] = 9.0
    inside = compute(pred, gt, dataset="nyu", backend=backend)
    assert int(inside["valid_pixels"]) == 426 * 560 and float(inside["AbsRel"]) == 0
    whole = compute(pred, gt, dataset="nyu", crop=None, backend=backend)
    assert int(whole["valid_pixels"]) == 480 * 640 and float(whole["AbsRel"]) > 0


def test_interpolates_prediction_like_zoedepth():
    pred, gt = depth_pair(B=2, H=40, W=56, invalid=False)
    small = pred[..., ::2, ::2]
    resized = torch.nn.functional.interpolate(small, size=(40, 56), mode="bilinear", align_corners=True)
    a = compute(small, gt, backend="reference")
    b = compute(resized, gt, backend="reference")
    assert torch.equal(a["per_image"]["RMSE"], b["per_image"]["RMSE"])
    with pytest.raises(ValueError, match="pred"):
        compute(small, gt, interpolate=False, backend="reference")


def test_depth_metrics_streams_per_image_means():
    pred, gt = depth_pair(B=4)
    stream = DepthMetrics(dataset="nyu", crop=None, backend="reference")
    stream.update(pred[:3], gt[:3])
    stream.update(pred[3:], gt[3:])  # the last image has no valid pixel: it is not counted
    got = stream.compute()
    whole = compute(pred, gt, dataset="nyu", crop=None, backend="reference")
    assert got["images"] == 3
    for name in METRICS:
        assert got[name] == pytest.approx(float(whole[name]), rel=1e-12)
    stream.reset()
    assert stream.compute()["images"] == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_depth_range_is_strict_unless_closed(backend):
    """Monodepth2, BTS and ZoeDepth count min_depth < gt < max_depth: NYU depth capped at exactly 10 m, or
    at 1e-3, is left out. Worked by hand: open counts gt 0.5 alone (AbsRel |0.6 - 0.5| / 0.5 = 0.2); closed
    also counts gt 1e-3 (pred 0.002: AbsRel 1) and gt 10 (pred 10: AbsRel 0), mean (1 + 0.2 + 0) / 3 = 0.4."""
    gt = torch.tensor([1e-3, 0.5, 10.0, 11.0], dtype=torch.float64).view(1, 1, 1, 4)
    pred = torch.tensor([0.002, 0.6, 10.0, 9.0], dtype=torch.float64).view(1, 1, 1, 4)
    strict = compute(pred, gt, dataset="nyu", crop=None, backend=backend)
    assert strict["valid_pixels"].tolist() == [1] and float(strict["AbsRel"]) == pytest.approx(0.2)
    closed = compute(pred, gt, dataset="nyu", crop=None, bounds="closed", backend=backend)
    assert closed["valid_pixels"].tolist() == [3] and float(closed["AbsRel"]) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="bounds"):
        compute(pred, gt, bounds="inclusive", backend=backend)


# ---------- bad input ----------

@pytest.mark.parametrize("call, exc, name", [
    (lambda p, g: compute(p.long(), g, backend="reference"), TypeError, "pred"),
    (lambda p, g: compute(p, g[:1], backend="reference"), ValueError, "gt"),
    (lambda p, g: compute(p, g.expand(-1, 2, -1, -1), backend="reference"), ValueError, "gt"),
    (lambda p, g: compute(p, g, dataset="cityscapes"), ValueError, "dataset"),
    (lambda p, g: compute(p, g, crop="middle"), ValueError, "crop"),
    (lambda p, g: compute(p, g, min_depth=5, max_depth=1), ValueError, "min_depth"),
    (lambda p, g: compute(p, g, mask=(g > 1).float(), backend="reference"), TypeError, "mask"),
    (lambda p, g: compute(p, g, mask=(g > 1)[..., :4], backend="reference"), ValueError, "mask"),
    (lambda p, g: compute(p * float("nan"), g, backend="reference"), ValueError, "pred"),
    (lambda p, g: compute(p, g, backend="tpu"), ValueError, "backend"),
    (lambda p, g: DepthMetrics(dataset="sun"), ValueError, "dataset"),
])
def test_bad_input(call, exc, name):
    pred, gt = depth_pair(B=2, H=8, W=10, invalid=False)
    with pytest.raises(exc, match=name):
        call(pred, gt)
