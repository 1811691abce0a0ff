"""Depth Pro's boundary F1 and recall: hand-worked values, a naive numpy oracle written from the definition
(loops over pixels, thresholds and directions), real NYU ground truth with its holes, and bad input."""
import numpy as np
import pytest
import torch

import depthmetric as dm
from depthmetric.boundary import DEPTH_PRO_THRESHOLDS, boundary_f1, boundary_recall

from .registry import perturbed, real_nyu_depth

DIRECTIONS = ("left", "top", "right", "bottom")


def np_contours(inv, t, counted):
    """Per direction, the set of pairs ``((i, j), (k, l))`` with ``inv[i, j] / inv[k, l] > t`` where (i, j) is
    the left/top/right/bottom pixel of the pair and both pixels are counted."""
    H, W = inv.shape
    out = {d: set() for d in DIRECTIONS}
    for i in range(H):
        for j in range(W):
            for d, (di, dj) in zip(DIRECTIONS, ((0, 1), (1, 0), (0, -1), (-1, 0))):
                k, l = i + di, j + dj
                if 0 <= k < H and 0 <= l < W and counted[i, j] and counted[k, l]:
                    with np.errstate(divide="ignore", invalid="ignore"):
                        if inv[i, j] / inv[k, l] > t:
                            out[d].add(((i, j), (k, l)))
    return out


def np_weighted(scores, ts):
    ts = np.asarray(ts, dtype=np.float64)
    return float(np.sum(np.asarray(scores) * ts / ts.sum()))


def np_f1(pred, gt, ts, holes="edges", mask=None):
    counted = np.ones(gt.shape, bool) if mask is None else mask.copy()
    if holes == "ignore":
        counted &= np.isfinite(gt) & (np.nan_to_num(gt) > 0) & (pred > 0)
    inv_p, inv_g = 1 / np.maximum(pred, 1e-6), 1 / np.where(np.isnan(gt), np.nan, np.maximum(gt, 1e-6))
    scores = []
    for t in ts:
        cp, cg = np_contours(inv_p, t, counted), np_contours(inv_g, t, counted)
        p = np.mean([len(cp[d] & cg[d]) / max(len(cp[d]), 1) for d in DIRECTIONS])
        r = np.mean([len(cp[d] & cg[d]) / max(len(cg[d]), 1) for d in DIRECTIONS])
        scores.append(0.0 if p + r == 0 else 2 * p * r / (p + r))
    return np_weighted(scores, ts)


def np_thinned(contours, ratio_of, horizontal):
    """Of each run of contours at consecutive pairs of a row (``horizontal``) or a column, keep the one of the
    largest ratio (the first of equal ones)."""
    def place(pair):  # (line, position along it) of the pair
        (i, j), (k, l) = pair
        return (i, min(j, l)) if horizontal else (j, min(i, k))

    kept, run = set(), []
    for pair in sorted(contours, key=place) + [None]:
        if run and (pair is None or place(pair) != (place(run[-1])[0], place(run[-1])[1] + 1)):
            kept.add(max(run, key=lambda q: (ratio_of(q), -run.index(q))))
            run = []
        if pair is not None:
            run.append(pair)
    return kept


def np_recall(pred, fg, ts):
    inv = 1 / np.maximum(pred, 1e-6)
    every = np.ones(fg.shape, bool)
    edges = np_contours(np.where(fg, 2.0, 1.0), 1.5, every)  # foreground next to background
    scores = []
    for t in ts:
        cp = np_contours(inv, t, every)
        ratio_of = lambda q: inv[q[0]] / inv[q[1]]  # noqa: E731
        scores.append(np.mean([len(np_thinned(cp[d], ratio_of, d in ("left", "right")) & edges[d]) / max(len(edges[d]), 1)
                               for d in DIRECTIONS]))
    return np_weighted(scores, ts)


def blocky_depth(B, H, W, seed):
    """Piecewise-constant scenes with noise: plenty of occluding contours at many ratios."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.rand(B, 1, H // 4 + 1, W // 4 + 1, generator=g, dtype=torch.float64) * 4 + 1
    depth = blocks.repeat_interleave(4, -2).repeat_interleave(4, -1)[..., :H, :W]
    return depth * (1 + 0.02 * torch.rand(B, 1, H, W, generator=g, dtype=torch.float64))


def test_default_thresholds_are_depth_pros_linspace():
    assert DEPTH_PRO_THRESHOLDS == tuple(np.linspace(1.05, 1.25, 10).tolist())


def row(*values):
    return torch.tensor(values, dtype=torch.float64).view(1, 1, 1, -1)


def test_f1_hand_worked():
    # One row [1, 1, 2]: one "left" contour (inverse 1 over 0.5). A perfect prediction finds it: P = R = 1/4
    # (the other three directions have none and count 0, as in Depth Pro), so F1 = 1/4 at every threshold.
    assert boundary_f1(row(1, 1, 2), row(1, 1, 2)).item() == pytest.approx(0.25, abs=1e-15)
    # A hole between two 1 m pixels is a contour both ways (inverse 1e6): a prediction closer in the middle
    # finds both (P = R = 2/4); one farther in the middle finds the opposite ones; ignoring holes, no pair counts.
    assert boundary_f1(row(1, 0.5, 1), row(1, 0, 1)).item() == pytest.approx(0.5, abs=1e-15)
    assert boundary_f1(row(1, 5, 1), row(1, 0, 1)).item() == 0.0
    assert boundary_f1(row(1, 0.5, 1), row(1, 0, 1), holes="ignore").item() == 0.0


def test_recall_hand_worked():
    # Foreground [F, F, T, T]: one "right" mask contour, between pixels 1 and 2. Inverse depth [1, 2, 5, 5]
    # rises over pairs 0 and 1 (ratios 2 and 2.5): suppression keeps pair 1, which hits (recall 1/4).
    pred = 1 / row(1, 2, 5, 5)
    fg = torch.tensor([False, False, True, True]).view(1, 1, 1, 4)
    assert boundary_recall(pred, fg).item() == pytest.approx(0.25, abs=1e-15)
    # Foreground [F, T, T, T]: the mask contour is pair 0, which suppression removed: recall 0.
    assert boundary_recall(pred, torch.tensor([False, True, True, True]).view(1, 1, 1, 4)).item() == 0.0
    # An alpha matte is thresholded at alpha_threshold.
    alpha = torch.tensor([0.0, 0.05, 0.6, 1.0], dtype=torch.float64).view(1, 1, 1, 4)
    assert boundary_recall(pred, alpha).item() == pytest.approx(0.25, abs=1e-15)
    assert boundary_recall(pred, alpha, alpha_threshold=0.01).item() == 0.0


@pytest.mark.parametrize("holes", ["edges", "ignore"])
@pytest.mark.parametrize("ts", [DEPTH_PRO_THRESHOLDS, (1.25, 1.05, 1.125)])
def test_f1_against_numpy(holes, ts):
    gt = blocky_depth(3, 13, 17, 0)
    pred = gt * torch.exp(0.1 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(1), dtype=gt.dtype))
    gt[0, 0, 3:6, 4:9] = 0.0
    gt[1, 0, 0, 0] = float("nan")
    pred[2, 0, 5, 5] = 0.0
    mask = torch.rand(gt.shape, generator=torch.Generator().manual_seed(2)) < 0.9
    got = boundary_f1(pred, gt, thresholds=ts, mask=mask, holes=holes)
    want = [np_f1(pred[b, 0].numpy(), gt[b, 0].numpy(), ts, holes, mask[b, 0].numpy()) for b in range(3)]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)
    assert 0.2 < float(got.mean()) < 1


def test_recall_against_numpy():
    fg = blocky_depth(2, 12, 15, 4) > 3
    # a blurred step: contours spread over runs of pairs, of which suppression keeps one, not always on the edge
    sharp = torch.where(fg, 1.0, 3.0)
    step = 0.3 * sharp + 0.7 * torch.nn.functional.avg_pool2d(sharp, 3, 1, 1, count_include_pad=False)
    pred = step * torch.exp(0.1 * torch.randn(fg.shape, generator=torch.Generator().manual_seed(5),
                                               dtype=torch.float64))
    got = boundary_recall(pred, fg)
    want = [np_recall(pred[b, 0].numpy(), fg[b, 0].numpy(), DEPTH_PRO_THRESHOLDS) for b in range(2)]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)
    assert 0.1 < float(got.mean()) < 1


def test_f1_on_real_nyu_counts_its_holes(shared_data):
    gt = real_nyu_depth(shared_data)[:1, :, ::8, ::8].contiguous()  # 60x80: the naive oracle is a Python loop
    pred = perturbed(gt, 0)
    assert (gt == 0).any()
    got = boundary_f1(pred, gt)
    np.testing.assert_allclose(got.numpy(), [np_f1(pred[0, 0].numpy(), gt[0, 0].numpy(), DEPTH_PRO_THRESHOLDS)],
                               rtol=1e-12, atol=1e-12)
    assert got.item() > boundary_f1(pred, gt, holes="ignore").item()  # holes are edges a prediction can hit


def test_known_values():
    gt = blocky_depth(2, 16, 16, 3)
    assert torch.allclose(boundary_f1(gt, gt), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(boundary_f1(gt * 3.7, gt), torch.ones(2, dtype=torch.float64))  # scale-invariant
    flat = torch.full_like(gt, 2.0)
    assert torch.equal(boundary_f1(flat, gt), torch.zeros(2, dtype=torch.float64))  # no predicted contour
    assert torch.equal(boundary_f1(flat, flat), torch.zeros(2, dtype=torch.float64))  # no contour at all
    assert boundary_f1(gt[:, 0].float(), gt[:, 0].float()).shape == (2,)
    assert torch.allclose(boundary_recall(gt, gt > 3), boundary_recall(gt * 2, gt > 3))


D = torch.rand(2, 1, 8, 8) + 1
BAD = [
    (lambda: boundary_f1(D, D, thresholds=[]), ValueError, "thresholds"),
    (lambda: boundary_f1(D, D, thresholds=[5, 10]), ValueError, "not percentages"),
    (lambda: boundary_f1(D, D, thresholds=5), TypeError, "thresholds"),
    (lambda: boundary_f1(D, D[..., :5]), ValueError, "pred"),
    (lambda: boundary_f1(D, D, holes="fill"), ValueError, "holes"),
    (lambda: boundary_f1(D * float("nan"), D), ValueError, "pred"),
    (lambda: boundary_recall(D, D[..., :5] > 1), ValueError, "gt_mask"),
    (lambda: boundary_recall(D, (D > 1).long()), TypeError, "gt_mask"),
    (lambda: boundary_recall(D, D * float("nan")), ValueError, "gt_mask contains NaN"),
    (lambda: boundary_recall(D, D, alpha_threshold="0.1"), TypeError, "alpha_threshold"),
    (lambda: boundary_recall(D, D, thresholds=[0.9]), ValueError, "thresholds"),
]


@pytest.mark.parametrize("call,error,name", BAD, ids=[b[2] for b in BAD])
def test_bad_input(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_exported_from_metrics():
    assert dm.metrics.boundary_f1 is boundary_f1 and dm.metrics.boundary_recall is boundary_recall
