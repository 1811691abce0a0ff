"""Dice, softmax focal and their blend: against numpy loops, ignore_index, empty and all-ignored batches, one
class, ties, gradients, torch.compile, bad input named."""
import math

import numpy as np
import pytest
import torch

import depthmetric as dm
from depthmetric import (DiceLoss, FocalLoss, SegmentationDistillationLoss, dice_loss, focal_loss,
                         segmentation_distillation_loss)

from .registry import DEVICES, seg_labels


def inputs(B=2, C=4, H=5, W=6, seed=0, ignore=0.15, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    logits = (2 * torch.randn(B, C, H, W, generator=g, dtype=torch.float64)).to(device, dtype)
    return logits.requires_grad_(), seg_labels(B, C, H, W, seed + 1, ignore).to(device)


def np_softmax(z):  # z: C values
    e = np.exp(z - z.max())
    return e / e.sum()


def np_focal(logits, labels, gamma=2.0, ignore_index=255):
    """Loop over the pixels: -(1 - p_t)^gamma log p_t, averaged over the pixels not ignored; and the map."""
    B, C, H, W = logits.shape
    out = np.zeros((B, H, W))
    total, n = 0.0, 0
    for b in range(B):
        for i in range(H):
            for j in range(W):
                y = labels[b, i, j]
                if y == ignore_index:
                    continue
                p = np_softmax(logits[b, :, i, j])[y]
                out[b, i, j] = -((1 - p) ** gamma) * math.log(p)
                total += out[b, i, j]
                n += 1
    return (total / n if n else 0.0), out


def np_dice(logits, labels, smooth=0.0, eps=1e-7, ignore_index=255):
    """Loop: per class over the batch, 1 - (2 I + smooth) / max(S + smooth, eps), 0 for an absent class."""
    B, C, H, W = logits.shape
    inter, card, count = np.zeros(C), np.zeros(C), np.zeros(C)
    for b in range(B):
        for i in range(H):
            for j in range(W):
                y = labels[b, i, j]
                if y == ignore_index:
                    continue
                p = np_softmax(logits[b, :, i, j])
                for c in range(C):
                    onehot = 1.0 if y == c else 0.0
                    inter[c] += p[c] * onehot
                    card[c] += p[c] + onehot
                    count[c] += onehot
    per_class = np.array([1 - (2 * inter[c] + smooth) / max(card[c] + smooth, eps) if count[c] else 0.0
                          for c in range(C)])
    return per_class.mean(), per_class


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 3.0])
def test_focal_against_numpy(device, gamma):
    logits, labels = inputs(device=device)
    want, want_map = np_focal(logits.detach().cpu().numpy(), labels.cpu().numpy(), gamma)
    assert focal_loss(logits, labels, gamma=gamma).item() == pytest.approx(want, rel=1e-12)
    got_map = FocalLoss(gamma=gamma, reduction="none")(logits, labels)
    assert got_map.shape == labels.shape
    np.testing.assert_allclose(got_map.detach().cpu().numpy(), want_map, rtol=1e-12, atol=1e-15)


def test_focal_gamma_zero_is_cross_entropy():
    logits, labels = inputs()
    want = torch.nn.functional.cross_entropy(logits, labels, ignore_index=255)
    assert focal_loss(logits, labels, gamma=0.0).item() == pytest.approx(want.item(), rel=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_dice_against_numpy(device, smooth):
    logits, labels = inputs(C=5, device=device)
    labels[labels == 3] = 255  # class 3 absent: it adds 0 and still counts in the mean
    want, want_per_class = np_dice(logits.detach().cpu().numpy(), labels.cpu().numpy(), smooth)
    assert want_per_class[3] == 0
    assert dice_loss(logits, labels, smooth=smooth).item() == pytest.approx(want, rel=1e-12)
    got = DiceLoss(smooth=smooth, reduction="none")(logits, labels)
    np.testing.assert_allclose(got.detach().cpu().numpy(), want_per_class, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.8, 1.0])
def test_distillation_blend(alpha):
    logits, labels = inputs()
    l, y = logits.detach().numpy(), labels.numpy()
    want = alpha * np_dice(l, y)[0] + (1 - alpha) * np_focal(l, y, 3.0)[0]
    got = SegmentationDistillationLoss(alpha=alpha, gamma=3.0)(logits, labels)
    assert got.item() == pytest.approx(want, rel=1e-12)
    assert segmentation_distillation_loss(logits, labels, alpha=alpha, gamma=3.0).item() == got.item()


def test_defaults_are_the_fields():
    seg = SegmentationDistillationLoss()
    assert (seg.options["alpha"], seg.options["gamma"], seg.options["ignore_index"]) == (0.5, 2.0, 255)
    assert (DiceLoss().options["smooth"], DiceLoss().options["eps"]) == (0.0, 1e-7)  # segmentation_models_pytorch's


@pytest.mark.parametrize("fn", [dice_loss, focal_loss, segmentation_distillation_loss])
@pytest.mark.parametrize("case", ["all ignored", "empty batch", "empty image"])
def test_nothing_to_score_gives_zero_with_zero_gradient(fn, case):
    logits, labels = inputs()
    if case == "all ignored":
        labels = torch.full_like(labels, 255)
    elif case == "empty batch":
        logits, labels = logits.detach()[:0].requires_grad_(), labels[:0]
    else:
        logits, labels = logits.detach()[..., :0].requires_grad_(), labels[..., :0]
    loss = fn(logits, labels)
    loss.backward()
    assert loss.item() == 0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_ignored_pixels_get_no_gradient_and_other_ignore_indices():
    logits, labels = inputs()
    segmentation_distillation_loss(logits, labels).backward()
    ignored = (labels == 255).unsqueeze(1).expand_as(logits)
    assert torch.equal(logits.grad[ignored], torch.zeros_like(logits.grad[ignored]))
    assert (logits.grad[~ignored] != 0).all()
    moved = torch.where(labels == 255, -1, labels)  # the same pixels under ignore_index=-1
    for fn in (dice_loss, focal_loss):
        assert fn(logits, moved, ignore_index=-1).item() == fn(logits, labels).item()
    # ignore_index=None scores every pixel; 255 is then an invalid label
    clean = torch.where(labels == 255, 0, labels)
    assert focal_loss(logits, clean, ignore_index=None).item() == pytest.approx(
        np_focal(logits.detach().numpy(), clean.numpy(), ignore_index=None)[0], rel=1e-12)
    with pytest.raises(ValueError, match="labels must be class indices"):
        focal_loss(logits, labels, ignore_index=None)


def test_one_class():
    """One class: the softmax is 1 everywhere, so a perfect Dice and focal loss 0, with zero gradient."""
    logits, labels = inputs(C=1)
    for fn in (dice_loss, focal_loss):
        logits.grad = None
        loss = fn(logits, labels)
        loss.backward()
        assert loss.item() == 0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_ties():
    """Equal logits: every class has p = 1/C. Focal: -(1 - 1/C)^gamma log(1/C) per pixel. Dice per present
    class c with n_c pixels of N: 1 - 2 (n_c / C) / (N / C + n_c)."""
    C, N = 4, 2 * 3 * 5
    logits = torch.zeros(2, C, 3, 5, dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 2, 2, 2] * 5).reshape(2, 3, 5)
    want = -((1 - 1 / C) ** 2) * math.log(1 / C)
    assert focal_loss(logits, labels).item() == pytest.approx(want, rel=1e-14)
    counts = [5, 10, 15, 0]
    per_class = [1 - 2 * (n / C) / (N / C + n) if n else 0.0 for n in counts]
    got = dice_loss(logits, labels, reduction="none")
    np.testing.assert_allclose(got.numpy(), per_class, rtol=1e-14)


def test_confident_correct_prediction_is_near_zero():
    labels = seg_labels(2, 3, 4, 4, ignore=0.0)
    logits = 40.0 * torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).double()
    assert focal_loss(logits, labels).item() < 1e-30
    assert dice_loss(logits, labels).item() < 1e-15


@pytest.mark.parametrize("fn", [dice_loss, focal_loss, segmentation_distillation_loss])
def test_gradcheck(fn):
    logits, labels = inputs(B=2, C=3, H=3, W=4)
    assert torch.autograd.gradcheck(lambda x: fn(x, labels), (logits,))


def test_focal_reduction_none_gradcheck_and_non_integer_gamma():
    logits, labels = inputs(B=1, C=3, H=3, W=3)
    assert torch.autograd.gradcheck(lambda x: focal_loss(x, labels, gamma=1.5, reduction="none"), (logits,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_logits_accumulate_in_float32(dtype):
    logits, labels = inputs(C=5, H=8, W=9)
    low = logits.detach().to(dtype)
    for fn in (dice_loss, focal_loss):
        got = fn(low, labels)
        want = fn(low.double(), labels)
        assert got.dtype == torch.float32
        assert got.item() == pytest.approx(want.item(), rel=1e-5)


@pytest.mark.parametrize("label_dtype", [torch.uint8, torch.int32])
def test_label_dtypes(label_dtype):
    logits, labels = inputs()
    assert focal_loss(logits, labels.to(label_dtype)).item() == focal_loss(logits, labels).item()


def test_compile_fullgraph():
    """Inductor traces the whole loss (the label check is skipped inside the graph) and agrees with eager,
    gradient included."""
    torch._dynamo.reset()
    logits, labels = inputs(dtype=torch.float32)
    compiled_in = logits.detach().clone().requires_grad_()
    loss = torch.compile(lambda x, y: segmentation_distillation_loss(x, y, alpha=0.3), fullgraph=True)(
        compiled_in, labels)
    loss.backward()
    eager = segmentation_distillation_loss(logits, labels, alpha=0.3)
    eager.backward()
    torch.testing.assert_close(loss, eager, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(compiled_in.grad, logits.grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("call, exc, name", [
    (lambda l, y: focal_loss(l.long(), y), TypeError, "logits"),
    (lambda l, y: focal_loss(l[:, :, 0], y), ValueError, "logits"),
    (lambda l, y: focal_loss(l, y.double()), TypeError, "labels"),
    (lambda l, y: focal_loss(l, y.bool()), TypeError, "labels"),
    (lambda l, y: focal_loss(l, y[:1]), ValueError, "labels"),
    (lambda l, y: focal_loss(l, y.unsqueeze(1)), ValueError, "labels"),
    (lambda l, y: dice_loss(l, torch.where(y == 255, 7, y)), ValueError, "labels"),
    (lambda l, y: dice_loss(l, torch.where(y == 255, -3, y)), ValueError, "labels"),
    (lambda l, y: focal_loss(l.detach() * float("nan"), y), ValueError, "logits"),
    (lambda l, y: focal_loss(l, y, gamma=-1.0), ValueError, "gamma"),
    (lambda l, y: focal_loss(l, y, ignore_index=True), TypeError, "ignore_index"),
    (lambda l, y: dice_loss(l, y, smooth=float("inf")), ValueError, "smooth"),
    (lambda l, y: dice_loss(l, y, reduction="max"), ValueError, "reduction"),
    (lambda l, y: SegmentationDistillationLoss(alpha=1.5), ValueError, "alpha"),
    (lambda l, y: FocalLoss(backend="gpu"), ValueError, "backend"),
    (lambda l, y: dice_loss(l, y, backend="cuda"), ValueError, "backend"),
])
def test_bad_input(call, exc, name):
    logits, labels = inputs()
    with pytest.raises(exc, match=name):
        call(logits, labels)


def test_exported():
    for name in ("dice_loss", "focal_loss", "segmentation_distillation_loss", "DiceLoss", "FocalLoss",
                 "SegmentationDistillationLoss"):
        assert name in dm.__all__
