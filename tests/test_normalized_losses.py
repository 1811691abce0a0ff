"""The median-normalised losses (ssi_trimmed_loss, gradient_matching_loss, midas_loss / MiDaSLoss) and the
kernel-based trimmed_mae_loss with align=: values worked independently in numpy loops (MiDaS's paper, Video
Depth Anything's formulation written out here), ties, even/odd counts, empty and all-invalid images,
float32 vs float64, kernel vs twin gradients, gradcheck, compile, bad options."""
import math

import numpy as np
import pytest
import torch

import depthmetric as dm

from .registry import COMPILED, DEVICES, assert_close_scaled, backend_of, depth_pair, needs_ext

BACKENDS = ["reference", "cpu"] if COMPILED else ["reference"]


def lower_median(v):
    return np.sort(v)[(v.size - 1) // 2]


def np_normalize(x, m, over):
    """Per image: (x - med) / max(mean_valid |x - med|, 1e-6); med over the valid pixels or over every pixel
    with the invalid ones as zeros."""
    out = np.zeros_like(x)
    for b in range(x.shape[0]):
        med = lower_median(x[b][m[b]]) if over == "valid" and m[b].any() else (
            lower_median((x[b] * m[b]).ravel()) if over == "all" else 0.0)
        n = m[b].sum()
        s = max(np.abs(x[b] - med)[m[b]].sum() / max(n, 1), 1e-6)
        out[b] = (x[b] - med) / s
    return out


def np_ssitrim(p, t, m, trim, trim_over, pool):
    res = np.abs(p - t)
    if trim_over == "batch":  # the pooled residuals, int(len * (1 - trim)) kept, / (2 * sum M)
        r = np.sort(res[m])
        return r[: int(len(r) * (1.0 - trim))].sum() / (2 * m.sum())
    per, sums, counts = [], 0.0, 0
    for b in range(p.shape[0]):
        r = np.sort(res[b][m[b]])
        kept = r[: int(len(r) * (1.0 - trim))].sum()
        sums, counts = sums + kept, counts + len(r)
        if len(r):
            per.append(kept / (2 * len(r)))
    if pool == "batch":
        return sums / (2 * counts) if counts else 0.0
    return float(np.mean(per)) if per else 0.0


def np_gradient(p, t, m, scales, pool):
    total, per = 0.0, np.zeros(p.shape[0])
    has = np.zeros(p.shape[0], bool)
    for k in range(scales):
        s = 2 ** k
        d, mk = ((p - t) * m)[:, ::s, ::s], m[:, ::s, ::s].astype(float)
        image = np.zeros(p.shape[0])
        for b in range(p.shape[0]):
            H, W = d[b].shape
            for i in range(H):
                for j in range(W):
                    if j + 1 < W and mk[b, i, j] and mk[b, i, j + 1]:
                        image[b] += abs(d[b, i, j + 1] - d[b, i, j])
                    if i + 1 < H and mk[b, i, j] and mk[b, i + 1, j]:
                        image[b] += abs(d[b, i + 1, j] - d[b, i, j])
        M = mk.sum((1, 2))
        if pool == "batch":
            total += image.sum() / M.sum() if M.sum() else 0.0
        else:
            per += np.where(M > 0, image / np.maximum(M, 1), 0.0)
            has |= M > 0
    return total if pool == "batch" else (float(per[has].mean()) if has.any() else 0.0)


def pair(B=3, H=13, W=18, dtype=torch.float64, seed=0, ties=False):
    pred, gt = depth_pair(B, H, W, dtype=dtype, seed=seed)
    if ties:
        pred, gt = (pred * 4).round() / 4, (gt * 2).round() / 2
    return pred, gt


def np_inputs(pred, gt):
    m = (np.isfinite(gt.double().numpy()) & (gt.double().numpy() > 0))[:, 0]
    p = pred.double().numpy()[:, 0]
    t = np.where(m, gt.double().numpy()[:, 0], 0.0)
    return p, t, m


OPTIONS = [("valid", "image", "image"), ("all", "batch", "batch"), ("valid", "image", "batch")]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("median_over,trim_over,pool", OPTIONS)
@pytest.mark.parametrize("H,W", [(13, 18), (8, 9)])
def test_midas_losses_against_numpy(H, W, median_over, trim_over, pool, ties, dtype, backend):
    pred, gt = pair(H=H, W=W, dtype=dtype, ties=ties)
    p, t, m = np_inputs(pred, gt)
    pn, tn = np_normalize(p, m, median_over), np_normalize(t, m, median_over)
    opts = dict(median_over=median_over, pool=pool, backend=backend)
    want_data = np_ssitrim(pn, tn, m, 0.2, trim_over, pool)
    want_grad = np_gradient(pn, tn, m, 4, pool)
    data = dm.ssi_trimmed_loss(pred, gt, trim_over=trim_over, **opts)
    grad = dm.gradient_matching_loss(pred, gt, scales=4, **opts)
    total = dm.MiDaSLoss(trim_over=trim_over, **opts)(pred, gt)
    n = H * W * 3
    for got, want in [(data, want_data), (grad, want_grad), (total, want_data + 0.5 * want_grad)]:
        assert_close_scaled(got, torch.tensor(want, dtype=torch.float64), dtype, n, factor=50)


def test_video_depth_anything_formulation_written_out():
    """VDA's TrimmedProcrustesLoss as its code runs it, written out here: per image the median of
    mask * x over all H*W pixels (torch.median's lower middle), s = clamp(sum(mask |x - m|) / sum(mask), 1e-6),
    residuals of the whole batch's valid pixels sorted, int(len * 0.8) kept, sum / sum(mask) (its TrimmedMAELoss
    divides by M, not the MiDaS paper's 2M: halve=False); plus 0.5 x
    the gradient loss of 4 strided scales with MiDaS's batch-based reduction."""
    pred, gt = pair(B=4, H=16, W=20, ties=True, seed=3)
    gt[1, 0, :, :12] = 0.0  # one image mostly invalid
    p, t, m = np_inputs(pred, gt)
    norm = []
    for x in (p, t):
        out = np.empty_like(x)
        for b in range(x.shape[0]):
            if not m[b].any():  # VDA's median 0 and scale 1 for an image without valid pixels
                out[b] = x[b]
                continue
            flat = (m[b] * x[b]).ravel()
            med = np.sort(flat)[(flat.size - 1) // 2]
            s = max(np.sum(m[b] * np.abs(x[b] - med)) / m[b].sum(), 1e-6)
            out[b] = (x[b] - med) / s
        norm.append(out)
    res = np.sort(np.abs(norm[0] - norm[1])[m])
    data = res[: int(len(res) * (1 - 0.2))].sum() / m.sum()
    grad = 0.0
    for k in range(4):
        s = 2 ** k
        diff = (m * (norm[0] - norm[1]))[:, ::s, ::s]
        mk = m[:, ::s, ::s]
        gx = np.abs(diff[:, :, 1:] - diff[:, :, :-1]) * (mk[:, :, 1:] & mk[:, :, :-1])
        gy = np.abs(diff[:, 1:, :] - diff[:, :-1, :]) * (mk[:, 1:, :] & mk[:, :-1, :])
        grad += (gx.sum() + gy.sum()) / mk.sum()
    for backend in BACKENDS:
        loss = dm.MiDaSLoss(median_over="all", trim_over="batch", pool="batch", halve=False, backend=backend)(pred, gt)
        assert math.isclose(loss.item(), data + 0.5 * grad, rel_tol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_and_all_invalid_images_add_nothing(backend):
    pred, gt = pair(B=3, H=9, W=11)  # depth_pair's last image has no valid pixel
    for fn in (dm.ssi_trimmed_loss, dm.gradient_matching_loss, dm.midas_loss):
        full = fn(pred, gt, reduction="none" if fn is not dm.midas_loss else "mean", backend=backend)
        two = fn(pred[:2], gt[:2], reduction="none" if fn is not dm.midas_loss else "mean", backend=backend)
        if full.dim():
            assert full[-1] == 0
            torch.testing.assert_close(full[:2], two)
        else:
            torch.testing.assert_close(full, two)
    none = torch.zeros_like(gt)
    x = pred.clone().requires_grad_()
    loss = dm.midas_loss(x, none, backend=backend)
    assert loss.item() == 0
    assert (torch.autograd.grad(loss, x)[0] == 0).all()


def sort_based_trimmed_mae(pred, target, valid, trim):
    """The library's former trimmed MAE: every image sorted, the first n - floor(trim n) averaged."""
    err = torch.where(valid, (pred - target).abs(), math.inf).flatten(1)
    ordered, _ = err.sort(dim=1)
    n = valid.flatten(1).sum(1)
    keep = n - torch.floor(n.to(torch.float64) * trim).to(n.dtype)
    kept = torch.arange(ordered.shape[1]) < keep[:, None]
    return torch.where(kept, ordered, 0.0).sum(1) / keep.clamp(min=1).to(pred.dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("trim", [0.0, 0.2, 0.35])
def test_trimmed_mae_same_numbers_as_the_sort(trim, dtype, backend):
    pred, gt = pair(B=3, H=15, W=17, dtype=dtype, ties=True)
    valid = torch.isfinite(gt) & (gt > 0)
    got = dm.trimmed_mae_loss(pred, gt, trim=trim, reduction="none", backend=backend)
    want = sort_based_trimmed_mae(pred.double(), torch.where(valid, gt, 1).double(), valid, trim)
    assert_close_scaled(got, want, dtype, 15 * 17)


@pytest.mark.parametrize("backend", BACKENDS)
def test_trimmed_mae_align_against_numpy(backend):
    pred, gt = pair(B=2, H=11, W=14, ties=True, seed=5)
    p, t, m = np_inputs(pred, gt)
    for align in ("median_mad", "least_squares"):
        want = []
        for b in range(1):  # depth_pair's last image has no valid pixel (its loss: 0)
            x, y = p[b][m[b]], t[b][m[b]]
            if align == "median_mad":
                x = (x - lower_median(x)) / max(np.mean(np.abs(x - lower_median(x))), 1e-6)
                y = (y - lower_median(y)) / max(np.mean(np.abs(y - lower_median(y))), 1e-6)
            else:
                A = np.stack([x, np.ones_like(x)], 1)
                s, sh = np.linalg.lstsq(A, y, rcond=None)[0]
                x = s * x + sh
            r = np.sort(np.abs(x - y))
            want.append(r[: len(r) - math.floor(0.2 * len(r))].mean())
        got = dm.trimmed_mae_loss(pred, gt, align=align, reduction="none", backend=backend)
        torch.testing.assert_close(got, torch.tensor(want + [0.0], dtype=torch.float64), rtol=1e-9, atol=1e-12)
        module = dm.TrimmedMAELoss(align=align, reduction="none", backend=backend)
        torch.testing.assert_close(module(pred, gt), got)
    # The derivative loss sees only pred - target: the maps normalised here, lifted by 100 (a valid target).
    got = dm.multi_scale_derivative_loss(pred, gt, align="median_mad", reduction="none", backend=backend)
    lift = [torch.from_numpy(np_normalize(x, m, "valid") + 100.0)[:, None] for x in (p, t)]
    want = dm.multi_scale_derivative_loss(*lift, torch.from_numpy(m)[:, None], reduction="none")
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    module = dm.MultiScaleDerivativeLoss(align="median_mad", reduction="none", backend=backend)
    torch.testing.assert_close(module(pred, gt), got)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_kernel_and_twin_gradients_agree(device):
    pred, gt = pair(B=3, H=21, W=30)
    pred, gt = pred.to(device), gt.to(device)
    grads = []
    for backend in ("reference", backend_of(device)):
        x = pred.clone().requires_grad_()
        loss = dm.MiDaSLoss(backend=backend)(x, gt) + dm.trimmed_mae_loss(x, gt, align="median_mad", backend=backend)
        grads.append((loss.detach(), torch.autograd.grad(loss, x)[0]))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck(backend):
    pred, gt = pair(B=2, H=6, W=7)
    x = pred.clone().requires_grad_()
    for fn in (lambda v: dm.midas_loss(v, gt, scales=2, backend=backend),
               lambda v: dm.ssi_trimmed_loss(v, gt, median_over="all", trim_over="batch", pool="batch",
                                             backend=backend),
               lambda v: dm.trimmed_mae_loss(v, gt, align="median_mad", backend=backend)):
        assert torch.autograd.gradcheck(fn, (x,))


@needs_ext
def test_compile_fullgraph():
    torch._dynamo.reset()
    pred, gt = pair(B=2, H=12, W=14, dtype=torch.float32)
    loss_fn = dm.MiDaSLoss()
    x0, x1 = pred.clone().requires_grad_(), pred.clone().requires_grad_()
    compiled = torch.compile(lambda v: loss_fn(v, gt, None) + dm.trimmed_mae_loss(v, gt), fullgraph=True)(x1)
    eager = loss_fn(x0, gt) + dm.trimmed_mae_loss(x0, gt)
    compiled.backward()
    eager.backward()
    torch.testing.assert_close(compiled, eager)
    torch.testing.assert_close(x1.grad, x0.grad)


def test_bad_options():
    pred, gt = pair(B=1, H=5, W=5)
    with pytest.raises(ValueError, match="trim_over='batch' .* needs pool='batch'"):
        dm.ssi_trimmed_loss(pred, gt, trim_over="batch")
    with pytest.raises(ValueError, match="pool='batch' .* needs reduction='mean'"):
        dm.midas_loss(pred, gt, pool="batch", reduction="none")
    with pytest.raises(ValueError, match="median_over must be one of"):
        dm.MiDaSLoss(median_over="image")
    with pytest.raises(ValueError, match="align must be one of"):
        dm.trimmed_mae_loss(pred, gt, align="mean")
    with pytest.raises(ValueError, match="alpha must be"):
        dm.MiDaSLoss(alpha=-1.0)
    with pytest.raises(ValueError, match="scales must be"):
        dm.gradient_matching_loss(pred, gt, scales=0)
