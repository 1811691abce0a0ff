"""Metric3D v2's hierarchical depth normalisation loss (HDN, SPEC section 7): Metric3D's ``HDNRandomLoss``
(``training/mono/model/losses/HDNL_random.py``) and, with ``mad_over="image"``, the normalisation of its
``HDSNRandomLoss`` (``HDSNL_random.py``), on the fused ``order_statistics`` op.

Both maps are normalised per *region* by their median and mean absolute deviation there, and the L1 distance
of the normalised maps is summed over every region. A region is a set of valid pixels of one image: a
ground-truth depth interval ``[lo, hi)``, a box, or one id of a label map.

The medians (and the MADs of ``mad_over="region"``) are selections of the ``order_statistics`` kernel (or of
its twin, ``backend="reference"``), never sorts of masked copies. The per-region L1 sums need a pass over each
region's pixels with that region's statistics; the compiled path (``backend="auto"``) keeps nothing of size
``B x R x H x W`` for its backward (it recomputes the pass there) and synchronises nothing with the host:

- on the CPU (outside ``torch.compile``), where reading a tensor costs no synchronisation, each depth-range
  (label) region is a contiguous run of its image's valid pixels sorted by depth (label), which the op reads
  as a one-row box of the sorted maps, and each box its crop, so the op and the pass read each region's own
  pixels only (``HOST_INDEX``);
- elsewhere (CUDA, ``torch.compile``, meta tensors) it tests every pixel's membership, a chunk of regions
  of at most ``CHUNK`` elements at a time.

``backend="reference"`` runs the plain formula (the twin's statistics, a differentiable graph per chunk of
regions), which supports ``torch.func`` transforms and forward-mode AD.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from . import _autograd, _checks, _ext, distributed, order_statistics
from ._supervised import checked_pair, resized_prediction

__all__ = ["hdn_loss", "HDNLoss", "draw_hdn_regions"]

MAD_OVER = ("region", "image")
EPS = 1e-6  # Metric3D's self.eps: added to the MAD, to the region count (HDN) and to the total count
COUNT_EPS = {"region": 1e-6, "image": 1e-10}  # HDNRandomLoss's n + 1e-6, HDSNRandomLoss's n + 1e-10
CHUNK = 1 << 21  # elements of the pixels x regions block one step of the region pass holds


# ---------------------------------------------------------------------------------------------------------
# Regions: every kind given contributes its own regions, in the order depth ranges, boxes, labels.

class _Regions:
    """The regions of a call: per kind its range of region indices and its descriptors, and the raw
    ``order_statistics`` op's arguments for all of them at once."""

    kinds: list[tuple[str, int, int]]
    lo: torch.Tensor | None
    hi: torch.Tensor | None
    boxes: torch.Tensor | None
    labels: torch.Tensor | None
    ids: torch.Tensor | None

    def __init__(self, t: torch.Tensor, depth_ranges: torch.Tensor | None, boxes: torch.Tensor | None,
                 labels: torch.Tensor | None, num_labels: int | None) -> None:
        B, H, W = t.shape
        dev = t.device
        self.kinds = []  # (kind, start, stop)
        self.lo = self.hi = self.boxes = self.labels = self.ids = None
        full_box = torch.tensor([0, H, 0, W], dtype=torch.int64, device=dev)
        everything = torch.tensor([-math.inf, math.inf], dtype=torch.float64, device=dev)
        op_boxes: list[torch.Tensor] = []
        op_ranges: list[torch.Tensor] = []
        op_ids: list[torch.Tensor] = []
        R = 0
        if depth_ranges is None and boxes is None and labels is None:  # the whole image, one region
            boxes = full_box.expand(B, 1, 4)
        if depth_ranges is not None:
            ranges = order_statistics._descriptor("depth_ranges", depth_ranges, B, 2, torch.float64, dev)
            r = ranges.shape[1]
            # [lo, hi) in float64, as the kernel compares; in the map's dtype: the least value >= each bound
            self.lo, self.hi = _ceil_to(ranges[..., 0], t.dtype), _ceil_to(ranges[..., 1], t.dtype)
            self.kinds.append(("range", R, R + r))
            op_boxes.append(full_box.expand(B, r, 4))
            op_ranges.append(ranges)
            op_ids.append(torch.full((B, r), -1, dtype=torch.int64, device=dev))
            R += r
        if boxes is not None:
            self.boxes = order_statistics._descriptor("boxes", boxes, B, 4, torch.int64, dev)
            r = self.boxes.shape[1]
            self.kinds.append(("box", R, R + r))
            op_boxes.append(self.boxes)
            op_ranges.append(everything.expand(B, r, 2))
            op_ids.append(torch.full((B, r), -1, dtype=torch.int64, device=dev))
            R += r
        if labels is not None:
            labels = order_statistics._like("labels", labels, t)
            if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
                raise TypeError(f"labels must be an integer label map, got {labels.dtype}")
            self.labels = labels.to(torch.int64)
            if num_labels is None:  # one host synchronisation; pass num_labels to avoid it
                num_labels = int(self.labels.max()) + 1 if self.labels.numel() else 0
                num_labels = max(num_labels, 0)
            r = num_labels
            self.ids = torch.arange(r, dtype=torch.int64, device=dev)
            self.kinds.append(("label", R, R + r))
            op_boxes.append(full_box.expand(B, r, 4))
            op_ranges.append(everything.expand(B, r, 2))
            op_ids.append(self.ids.expand(B, r))
            R += r
        self.R = R
        self.op_boxes = torch.cat(op_boxes, 1).contiguous()
        self.op_ranges = torch.cat(op_ranges, 1).contiguous()
        self.op_ids = torch.cat(op_ids, 1).contiguous()
        self.op_labels = self.labels if self.labels is not None else torch.zeros(
            (), dtype=torch.int64, device=dev).expand(B, H, W)

    def chunks(self, valid: torch.Tensor, t: torch.Tensor, b: int) -> Iterator[tuple[int, int, torch.Tensor]]:
        """``(start, stop, member)`` over image ``b``'s regions: ``member`` the ``k,H,W`` bool map of regions
        ``start:stop`` (valid pixels only), at most ``CHUNK`` elements."""
        H, W = valid.shape[1:]
        step = max(1, CHUNK // max(1, H * W))
        for kind, first, last in self.kinds:
            for s in range(first, last, step):
                e = min(s + step, last)
                if kind == "range":
                    assert self.lo is not None and self.hi is not None
                    lo, hi = self.lo[b, s - first:e - first], self.hi[b, s - first:e - first]
                    member = (t[b] >= lo[:, None, None]) & (t[b] < hi[:, None, None])
                elif kind == "box":
                    assert self.boxes is not None
                    y0, y1, x0, x1 = self.boxes[b, s - first:e - first].unbind(-1)
                    rows = torch.arange(H, device=valid.device)
                    cols = torch.arange(W, device=valid.device)
                    inside_rows = (rows >= y0[:, None]) & (rows < y1[:, None])
                    inside_cols = (cols >= x0[:, None]) & (cols < x1[:, None])
                    member = inside_rows[:, :, None] & inside_cols[:, None, :]
                else:
                    assert self.labels is not None and self.ids is not None
                    member = self.labels[b] == self.ids[s - first:e - first, None, None]
                yield s, e, member & valid[b]


def _ceil_to(bound: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The least value of ``dtype`` that is ``>= bound`` (float64): ``x >= bound`` and ``x < bound`` give the
    same answers for every ``x`` of ``dtype`` with it as with the float64 bound."""
    if dtype == torch.float64:
        return bound
    near = bound.to(dtype)
    return torch.where(near.double() < bound, torch.nextafter(near, near.new_tensor(math.inf)), near)


# ---------------------------------------------------------------------------------------------------------
# The per-region L1 sums.

def _col(x: torch.Tensor) -> torch.Tensor:
    return x[:, None, None]


def _plain_terms(p: torch.Tensor, t: torch.Tensor, valid: torch.Tensor, regions: _Regions, mp: torch.Tensor,
                 mt: torch.Tensor, st: torch.Tensor, sp: torch.Tensor, n: torch.Tensor, mad_over: str) -> torch.Tensor:
    """``B,R``: each region's ``sum |norm(t) - norm(p)|``, as a plain autograd graph (the reference path and
    the double backward of the compiled path). ``mad_over="region"`` computes the prediction's MAD here
    (``sp`` unused); ``"image"`` takes ``sp`` (differentiable) as given."""
    B = p.shape[0]
    out: list[torch.Tensor] = []
    for b in range(B):
        for s, e, member in regions.chunks(valid, t, b):
            pc = p[b] - _col(mp[b, s:e])
            if mad_over == "region":
                spread = torch.where(member, pc.abs(), 0.0).sum((1, 2)) / (n[b, s:e] + COUNT_EPS["region"])
            else:
                spread = sp[b, s:e]
            d = (t[b] - _col(mt[b, s:e])) / _col(st[b, s:e] + EPS) - pc / _col(spread + EPS)
            out.append(torch.where(member, d.abs(), 0.0).sum((1, 2)))
    if not out:
        return p.new_zeros(B, regions.R) + 0 * p.sum()
    return torch.cat(out).reshape(B, regions.R)


HOST_INDEX = True  # the compiled path on the CPU reads the regions on the host (runs and crops); False: dense


class _HostIndex:
    """The regions read on the host, where that costs no synchronisation (the CPU, outside torch.compile):
    a depth-range (label) region is a run of its image's valid pixels sorted by depth (label), a box is its
    crop, so each region's pass touches its own pixels only."""

    runs: dict[str, tuple[torch.Tensor, list[list[list[int]]]]]  # kind: (order, per image [start, stop] per run)
    crops: list[list[list[int]]] | None  # per image [y0, y1, x0, x1] per box
    sorted: dict[str, tuple[torch.Tensor, torch.Tensor]]  # kind: (prediction, target) in the run order
    bounds: dict[str, tuple[torch.Tensor, torch.Tensor]]  # kind: (start, stop), B,R int64

    def __init__(self, regions: _Regions, p: torch.Tensor, t: torch.Tensor, valid: torch.Tensor) -> None:
        B, H, W = t.shape
        self.runs, self.crops, self.sorted, self.bounds = {}, None, {}, {}
        for kind, first, last in regions.kinds:
            if kind == "box":
                assert regions.boxes is not None
                y0, y1, x0, x1 = (regions.boxes[..., k].clamp(0, size) for k, size in enumerate((H, H, W, W)))
                self.crops = torch.stack([y0, torch.maximum(y0, y1), x0, torch.maximum(x0, x1)], -1).tolist()
                continue
            if kind == "range":
                assert regions.lo is not None and regions.hi is not None
                ordered, order = torch.where(valid, t, math.inf).reshape(B, H * W).sort(dim=1)
                lo, hi = regions.lo.contiguous(), regions.hi.contiguous()
                empty = lo.isnan() | hi.isnan()
            else:
                assert regions.labels is not None and regions.ids is not None
                ordered, order = torch.where(valid, regions.labels, -1).reshape(B, H * W).sort(dim=1)
                lo = regions.ids.expand(B, last - first).contiguous()
                hi, empty = lo + 1, torch.zeros(lo.shape, dtype=torch.bool, device=lo.device)
            start, stop = torch.searchsorted(ordered, lo), torch.searchsorted(ordered, hi)
            stop = torch.where(empty, start, torch.maximum(start, stop))
            self.runs[kind] = (order, torch.stack([start, stop], -1).tolist())
            self.bounds[kind] = (start, stop)
            # both maps in the run order, kept for the forward and the backward: 2 x B x H x W per kind
            self.sorted[kind] = (p.detach().reshape(B, H * W).gather(1, order), t.reshape(B, H * W).gather(1, order))

    def statistics(self, regions: _Regions, p: torch.Tensor, t: torch.Tensor, valid: torch.Tensor,
                   backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The op's ``(stats, counts)`` of the prediction and the target's ``stats``, ``B,R``: for the runs on
        the sorted maps laid out as ``B,1,H*W`` images (a run is a one-row box there), for the boxes on the
        maps, so the op reads each region's own pixels only."""
        B, H, W = t.shape
        dev = t.device
        out_p: list[tuple[torch.Tensor, torch.Tensor]] = []
        out_t: list[tuple[torch.Tensor, torch.Tensor]] = []
        for kind, first, last in regions.kinds:
            if kind == "box":
                assert regions.boxes is not None
                values_p, values_t, ok, boxes = p.detach(), t, valid, regions.boxes
            else:
                (values_p, values_t), (start, stop) = self.sorted[kind], self.bounds[kind]
                values_p, values_t = values_p.view(B, 1, H * W), values_t.view(B, 1, H * W)
                ok = torch.ones((), dtype=torch.bool, device=dev).expand(B, 1, H * W)
                boxes = torch.stack([torch.zeros_like(start), torch.ones_like(start), start, stop], -1)
            shape = (B, last - first)
            args = (ok, values_t, torch.zeros((), dtype=torch.int64, device=dev).expand(values_t.shape),
                    boxes.contiguous(), regions.op_ranges.new_tensor([-math.inf, math.inf]).expand(*shape, 2).contiguous(),
                    torch.full(shape, -1, dtype=torch.int64, device=dev), 1.0, 0, True, backend)
            out_p.append(order_statistics.order_statistics(values_p, *args))
            out_t.append(order_statistics.order_statistics(values_t, *args))
        return (torch.cat([o[0] for o in out_p], 1), torch.cat([o[0] for o in out_t], 1),
                torch.cat([o[1] for o in out_p], 1))

    def views(self, regions: _Regions, p: torch.Tensor, t: torch.Tensor, valid: torch.Tensor,
              b: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor | None, tuple[Any, ...]]]:
        """``(r, P, T, M, where)`` for each of image ``b``'s regions: its pixels of both maps (a run of the
        sorted maps, or a crop), the crop's validity (None for a run) and where its gradient goes
        (``(kind, start, stop)`` of a run, or the crop's slices)."""
        for kind, first, last in regions.kinds:
            for r in range(first, last):
                if kind == "box":
                    assert self.crops is not None
                    y0, y1, x0, x1 = self.crops[b][r - first]
                    crop = (b, slice(y0, y1), slice(x0, x1))
                    yield r, p[crop], t[crop], valid[crop], crop
                else:
                    i, j = self.runs[kind][1][b][r - first]
                    ps, ts = self.sorted[kind]
                    yield r, ps[b, i:j], ts[b, i:j], None, (kind, b, slice(i, j))

    def forward(self, regions: _Regions, p: torch.Tensor, t: torch.Tensor, valid: torch.Tensor, mp: torch.Tensor,
                mt: torch.Tensor, a: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``L, Q`` (``B,R``) region by region, with the statistics as numbers read on the host."""
        L, Q = [[0.0] * regions.R for _ in range(p.shape[0])], [[0.0] * regions.R for _ in range(p.shape[0])]
        mp_, mt_, a_, c_ = (x.tolist() for x in (mp, mt, a, c))
        for b in range(p.shape[0]):
            for r, P, T, M, _ in self.views(regions, p, t, valid, b):
                if P.numel() == 0:
                    continue
                s, u, pc = _host_residual(P, T, M, mp_[b][r], mt_[b][r], a_[b][r], c_[b][r])
                dot = torch.dot if M is None else _flat_dot  # a run is 1-d and contiguous, a crop is neither
                L[b][r] = c_[b][r] * float(dot(s, u))
                Q[b][r] = float(dot(s, pc))
        return p.new_tensor(L).reshape(p.shape[0], regions.R), p.new_tensor(Q).reshape(p.shape[0], regions.R)

    def backward(self, regions: _Regions, p: torch.Tensor, t: torch.Tensor, valid: torch.Tensor, mp: torch.Tensor,
                 mt: torch.Tensor, a: torch.Tensor, c: torch.Tensor, direct: torch.Tensor,
                 through_mad: torch.Tensor | None) -> torch.Tensor:
        """The gradient of ``sum_r direct_r L_r`` plus, when ``through_mad`` is given, of the region MADs'
        ``sum_r through_mad_r sum_{i in r} |p_i - m_r|``."""
        B = p.shape[0]
        grad = torch.zeros_like(p)
        sorted_grads = {kind: p.new_zeros(B, order.shape[1]) for kind, (order, _) in self.runs.items()}
        mp_, mt_, a_, c_, direct_ = (x.tolist() for x in (mp, mt, a, c, direct))
        mad_ = None if through_mad is None else through_mad.tolist()
        for b in range(B):
            for r, P, T, M, where in self.views(regions, p, t, valid, b):
                if P.numel() == 0:
                    continue
                s, _, pc = _host_residual(P, T, M, mp_[b][r], mt_[b][r], a_[b][r], c_[b][r])
                g = s.mul_(direct_[b][r] * a_[b][r])
                if mad_ is not None:
                    g.add_(pc.sign_().mul_(M) if M is not None else pc.sign_(), alpha=mad_[b][r])
                target = sorted_grads[where[0]][where[1:]] if isinstance(where[0], str) else grad[where]
                target += g
        for kind, (order, _) in self.runs.items():
            grad.view(B, order.shape[1]).scatter_add_(1, order, sorted_grads[kind])
        return grad


def _flat_dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x * y).sum()


def _host_residual(P: torch.Tensor, T: torch.Tensor, M: torch.Tensor | None, mp: float, mt: float, a: float,
                   c: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``sign(d)`` (0 outside ``M``), ``d / c`` and ``P - m_p`` of one region, ``d = (T - m_t) c - (P - m_p) a``
    (the centred maps first, so that a pixel at both medians gives exactly 0, as the plain formula)."""
    pc = P - mp
    u = (T - mt).add_(pc, alpha=-a / c)
    if M is not None:
        u.mul_(M)
    return u.sign(), u, pc


def _dense_pieces(regions: _Regions, p: torch.Tensor, t: torch.Tensor, valid: torch.Tensor, b: int,
                  grad: torch.Tensor | None = None
                  ) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]]:
    """``(start, stop, P, T, M, target)`` for chunks of image ``b``'s regions: the maps ``P``, ``T`` broadcast
    against the ``k`` regions ``start:stop`` (here the whole image, ``1,H,W``), their membership ``M``
    (``k,H,W``; None: every element) and the gradient's view the chunk adds to."""
    for s, e, member in regions.chunks(valid, t, b):
        yield s, e, p[b][None], t[b][None], member, None if grad is None else grad[b]


class _RegionTerms(torch.autograd.Function):
    """The per-region L1 sums of the compiled path: the same values as :func:`_plain_terms`, one chunk of
    regions at a time in the forward and again in the backward (nothing per region and pixel is kept)."""

    @staticmethod
    def forward(ctx: Any, p: torch.Tensor, sp: torch.Tensor, t: torch.Tensor, valid: torch.Tensor,
                regions: _Regions, host: _HostIndex | None, mp: torch.Tensor, mt: torch.Tensor, st: torch.Tensor,
                n: torch.Tensor, mad_over: str) -> torch.Tensor:
        B = p.shape[0]
        a, c = 1.0 / (sp + EPS), 1.0 / (st + EPS)
        L, Q = p.new_zeros(B, regions.R), p.new_zeros(B, regions.R)
        if host:
            L, Q = host.forward(regions, p, t, valid, mp, mt, a, c)
        for b in range(0 if host else B):
            for s, e, P, T, M, _ in _dense_pieces(regions, p, t, valid, b):
                pc, d = _residual(P, T, b, s, e, mp, mt, a, c)
                if M is not None:
                    d = torch.where(M, d, 0.0)
                dims = tuple(range(1, d.dim()))
                L[b, s:e] = d.abs().sum(dims)
                Q[b, s:e] = (d.sign() * pc).sum(dims)  # sum sign(d) (p - m_p): dL/da = -Q
        ctx.regions, ctx.mad_over, ctx.host = regions, mad_over, host
        ctx.save_for_backward(p, sp, t, valid, mp, mt, st, n, a, c, Q)
        return L

    @staticmethod
    def backward(ctx: Any, gL: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        p, sp, t, valid, mp, mt, st, n, a, c, Q = ctx.saved_tensors
        regions, mad_over, host = ctx.regions, ctx.mad_over, ctx.host
        rest = (None,) * 9
        if torch.is_grad_enabled():  # create_graph=True: the plain formula's gradient, differentiable again
            # the image MADs recomputed from p_: the whole gradient goes to p, none to sp
            def plain(p_: torch.Tensor) -> torch.Tensor:
                sp_ = _image_abs_dev(p_, valid, mp) / (n + COUNT_EPS["image"]) if mad_over == "image" else sp
                return _plain_terms(p_, t, valid, regions, mp, mt, st, sp_, n, mad_over)
            gp, = _autograd.reference_vjp(plain, (p,), gL, (True,))
            return (gp, None, *rest)
        gsp = gL * a * a * Q  # dL/dsp = a^2 Q
        grad: torch.Tensor | None = None
        if ctx.needs_input_grad[0]:
            B = p.shape[0]
            direct = -gL * a
            through_mad = gsp / (n + COUNT_EPS["region"])  # the region MAD's gradient, sign(p - m_p) / (n + eps)
            if host:
                return (host.backward(regions, p, t, valid, mp, mt, a, c, -gL,
                                      through_mad if mad_over == "region" else None),
                        gsp if mad_over == "image" and ctx.needs_input_grad[1] else None, *rest)
            grad = torch.zeros_like(p)
            for b in range(B):
                for s, e, P, T, M, target in _dense_pieces(regions, p, t, valid, b, grad):
                    pc, d = _residual(P, T, b, s, e, mp, mt, a, c)
                    g = d.sign_().mul_(_at(direct, b, s, e, d.dim()))
                    if mad_over == "region":
                        g.addcmul_(pc.sign_(), _at(through_mad, b, s, e, d.dim()))
                    if M is not None:
                        g = torch.where(M, g, 0.0)
                    assert target is not None
                    target += g.sum(0)
        return (grad, gsp if mad_over == "image" and ctx.needs_input_grad[1] else None, *rest)


def _at(x: torch.Tensor, b: int, s: int, e: int, dim: int) -> torch.Tensor:
    """``x[b, s:e]`` shaped ``k,1,...,1`` to broadcast against ``dim``-d pieces."""
    return x[b, s:e].view(-1, *([1] * (dim - 1)))


def _residual(P: torch.Tensor, T: torch.Tensor, b: int, s: int, e: int, mp: torch.Tensor, mt: torch.Tensor,
              a: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``P - m_p`` and ``d = (T - m_t) c - (P - m_p) a`` for image ``b``'s regions ``s:e`` (``k,...``)."""
    dim = max(P.dim(), 2)
    pc = P - _at(mp, b, s, e, dim)
    d = (T - _at(mt, b, s, e, dim)).mul_(_at(c, b, s, e, dim))
    return pc, d.addcmul_(pc, _at(a, b, s, e, dim), value=-1)


def _image_abs_dev(x: torch.Tensor, valid: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``B,R``: ``sum over the valid pixels of the image of |x - m_r|`` for each region's ``m_r`` (no
    gradient through ``m``), from each image's sorted values and their prefix sums (float64)."""
    B, H, W = x.shape
    flat = torch.where(valid, x, math.inf).reshape(B, H * W).double()
    ordered = flat.sort(dim=1).values
    prefix = torch.cat([ordered.new_zeros(B, 1), torch.where(ordered.isfinite(), ordered, 0.0).cumsum(1)], 1)
    m = m.detach().double().contiguous()
    below = torch.searchsorted(ordered.detach(), m)  # values < m
    upto = torch.searchsorted(ordered.detach(), m, right=True)  # values <= m (the ties add |x - m| = 0)
    count = valid.reshape(B, H * W).sum(1, keepdim=True)
    total = prefix.gather(1, count)
    lower = m * below - prefix.gather(1, below)
    upper = total - prefix.gather(1, upto) - m * (count - upto)
    return (lower + upper).to(x.dtype)


# ---------------------------------------------------------------------------------------------------------
# The loss.

def _check_options(mad_over: str, reduction: str, normalize: str,
                   process_group: distributed.ProcessGroup | None) -> None:
    _checks.choice("mad_over", mad_over, MAD_OVER)
    _checks.choice("reduction", reduction, _checks.REDUCTIONS)
    distributed.check_normalize(normalize, process_group)


def hdn_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, *,
             depth_ranges: torch.Tensor | None = None, boxes: torch.Tensor | None = None,
             labels: torch.Tensor | None = None, num_labels: int | None = None, mad_over: str = "region",
             reduction: str = "mean", interpolate: bool = True, normalize: str = "local",
             process_group: distributed.ProcessGroup | None = None, backend: str = "auto") -> torch.Tensor:
    r"""Metric3D v2's hierarchical depth normalisation loss: ``HDNRandomLoss`` given the same depth intervals
    (``mad_over="region"``), the normalisation of ``HDSNRandomLoss`` with ``mad_over="image"``.

    ``pred``, ``target``: ``B,1,H,W`` (``B,H,W`` accepted) depth maps; a pixel is valid where the target is
    finite and ``> 0``, the prediction finite and ``mask`` (bool, optional) True. NaN/Inf in ``pred`` raise;
    a prediction of another size is resized to the target's (bilinear, ``align_corners=True``) when
    ``interpolate``. The regions (each the valid pixels of one image that it selects; every kind given
    contributes its own regions, all summed):

    - ``depth_ranges``: ``B,R,2`` floating, ``[lo, hi)`` of the ground truth in metres (compared in float64;
      ``-inf``/``inf`` leave a side open; a NaN bound selects nothing), Metric3D's depth intervals;
    - ``boxes``: ``B,R,4`` integer ``y0, y1, x0, x1`` (the pixels ``y0 <= y < y1``, ``x0 <= x < x1``; clipped
      to the image), ``HDSNRandomLoss``'s random crops;
    - ``labels``: ``B,H,W`` (or ``B,1,H,W``) integer map, one region per id ``0 .. num_labels - 1``
      (negative ids belong to no region; ``num_labels`` defaults to ``labels.max() + 1``, read on the host:
      pass it to avoid that synchronisation, e.g. under ``torch.compile``), ``HDSNRandomLoss``'s semantic
      masks (select and renumber its ids, e.g. those of more than 500 pixels, before the call);
    - none of them: one region per image, its valid pixels.

    Metric3D concatenates its interval, crop and semantic masks into one list of regions, each with its own
    statistics, and sums over all of them: so here depth ranges and boxes given together are ``R1 + R2``
    regions, not their ``R1 x R2`` intersections (``region_median`` intersects the kinds it is given; this
    loss calls the op once over the concatenated regions instead).

    For a region :math:`r` of :math:`n_r` pixels and each map :math:`x` (prediction and target), with
    :math:`m_r(x)` the median (the lower middle element, torch's convention and ``nanmedian``'s):

    .. math::

       s_r(x) = \frac{\sum_{i \in S} |x_i - m_r(x)|}{n_r + \epsilon_n}, \qquad
       \hat x_i = \frac{x_i - m_r(x)}{s_r(x) + 10^{-6}}, \qquad
       L = \frac{\sum_r \sum_{i \in r} |\hat t_i - \hat p_i|}{\sum_r n_r + 10^{-6}}

    ``mad_over="region"``: :math:`S = r`, :math:`\epsilon_n = 10^{-6}` (``HDNRandomLoss.ssi_mae``);
    ``mad_over="image"``: :math:`S` = every valid pixel of the region's image, :math:`\epsilon_n = 10^{-10}`
    (``HDSNRandomLoss.ssi_mae``, whose deviations are not masked). Metric3D also sums the invalid pixels'
    raw values there; here invalid pixels never count (SPEC), so the two agree on images without invalid
    pixels. An empty region adds nothing (its terms and its count are 0).

    Gradients reach ``pred`` alone: the prediction's median carries none (Metric3D detaches it), its MAD
    carries one (Metric3D's ``pred_diff`` is computed from the undetached prediction); the target is data.

    ``reduction``: ``"mean"`` is Metric3D's ratio above over the batch's regions (``normalize="global"``: the
    sums and counts of the global batch under ``torch.distributed``, SPEC section 5); ``"none"`` the ``B``
    per-image values, each image's own ratio (its regions' sums over its count ``+ 1e-6``); ``"sum"`` their
    sum. Returned in float32 (float64 for float64 inputs). ``backend``: ``"auto"`` the compiled
    ``order_statistics`` kernel for the medians and MADs and a recomputing region pass; ``"reference"`` the
    twin and the plain formula (supports ``torch.func`` transforms and forward-mode AD).

    >>> import torch, depthmetric
    >>> g = torch.Generator().manual_seed(0)
    >>> target = 1 + 9 * torch.rand(2, 1, 32, 48, generator=g)
    >>> pred = 0.5 * target + 0.05 * torch.rand(2, 1, 32, 48, generator=g)
    >>> regions = depthmetric.draw_hdn_regions(target, n_ranges=4, n_boxes=4, generator=g)
    >>> bool(depthmetric.hdn_loss(pred, target, **regions) < 0.05)
    True

    Args:
        pred: the predicted depth, floating ``B,1,H,W`` or ``B,H,W``, metres; NaN/Inf raise. The only input
            that gets a gradient.
        target: the ground-truth depth, ``B,1,H,W`` or ``B,H,W``, metres; a pixel is valid where it is finite
            and > 0. Data: no gradient.
        mask: optional bool map of the target's shape; ``False`` excludes a pixel. Default ``None``.
        depth_ranges: optional ``B,R,2`` floating tensor on the target's device, ``[lo, hi)`` of the ground
            truth in metres per region (compared in float64; ``-inf``/``inf`` leave a side open, a NaN bound
            selects nothing). Default ``None``.
        boxes: optional ``B,R,4`` integer tensor on the target's device, ``y0, y1, x0, x1`` per region
            (clipped to the image). Default ``None``.
        labels: optional integer label map, ``B,H,W`` or ``B,1,H,W`` of the target's size and device: one
            region per id ``0 .. num_labels - 1``, negative ids in none. Default ``None``.
        num_labels: the number of label regions, an int >= 0 (with ``labels`` only); ``None`` (default):
            ``labels.max() + 1``, one host synchronisation.
        mad_over: ``"region"`` (default, ``HDNRandomLoss``): each region's MAD over its own pixels;
            ``"image"`` (``HDSNRandomLoss``): over its image's valid pixels.
        reduction: ``"mean"`` (default): the batch's summed region terms over its total count; ``"none"``:
            the ``B`` per-image ratios; ``"sum"``: their sum.
        interpolate: resize a prediction of another size to the target's (bilinear, ``align_corners=True``);
            ``False`` makes a size mismatch a ValueError. Default True.
        normalize: ``"local"`` (default): this rank's sums and counts; ``"global"``: the global batch's under
            ``torch.distributed`` (see :mod:`depthmetric.distributed`), with ``reduction="mean"``.
        process_group: the group of ``normalize="global"``; ``None`` (default): the default group.
        backend: ``"auto"`` (default), ``"cpu"`` or ``"cuda"``: the compiled ``order_statistics`` kernel and
            the recomputing region pass; ``"reference"``: the twin and the plain formula.

    Returns:
        A scalar (``"mean"``, ``"sum"``) or the ``B`` per-image losses (``"none"``), float32 (float64 for
        float64 inputs).

    Raises:
        TypeError: a non-tensor or non-floating depth map, a non-bool mask, ``depth_ranges`` not floating,
            ``boxes`` not integer, ``labels`` not an integer map, ``num_labels`` not an int, a bad option type.
        ValueError: ``pred``/``target``/``mask`` shapes (or devices) that do not match, NaN/Inf in ``pred``,
            ``depth_ranges`` not ``B,R,2`` or ``boxes`` not ``B,R,4`` (with the target's ``B``), ``labels`` not
            of the target's size, a region argument on another device, a negative ``num_labels``, a bad
            ``mad_over``, ``reduction``, ``normalize`` or ``backend`` value, a size mismatch without
            ``interpolate``.
        RuntimeError: ``backend`` other than ``"reference"`` without the compiled extension (or its CUDA
            kernels for CUDA inputs), or with inputs under a ``torch.func`` transform or forward-mode AD.
    """
    _check_options(mad_over, reduction, normalize, process_group)
    if num_labels is not None:
        _checks.count("num_labels", num_labels)
    group = distributed.op_group(normalize, process_group)
    pred, target, mask = checked_pair(pred, target, mask, group=group)
    _ext.check_backend(backend, pred.device)
    acc = torch.promote_types(_checks.accumulate_dtype(pred.dtype), _checks.accumulate_dtype(target.dtype))
    pred = resized_prediction(pred.to(acc), target, interpolate)[:, 0]
    target = target.detach().to(acc)[:, 0]
    valid = _checks.valid_depth(target) & torch.isfinite(pred)
    if mask is not None:
        valid = valid & mask[:, 0]
    t = torch.where(valid, target, 0.0)
    p = torch.where(valid, pred, 0.0)
    regions = _Regions(t, depth_ranges, boxes, labels, num_labels)
    kernel = _ext.use_kernel(backend, p.device)
    if kernel:
        _autograd.check_untransformed("depthmetric.hdn_loss", (pred,))
    host = _HostIndex(regions, p, t, valid) if (kernel and HOST_INDEX and p.device.type == "cpu"
                                                and not torch.compiler.is_compiling()) else None
    if host is not None:
        stats_p, stats_t, counts = host.statistics(regions, p, t, valid, backend)
    else:
        args = (valid, t, regions.op_labels, regions.op_boxes, regions.op_ranges, regions.op_ids, 1.0, 0, True,
                backend)
        stats_p, counts = order_statistics.order_statistics(p.detach(), *args)
        stats_t, _ = order_statistics.order_statistics(t, *args)
    n = counts[..., 0].to(acc)
    mp, mt = stats_p[..., 0], stats_t[..., 0]
    eps_n = COUNT_EPS[mad_over]
    if mad_over == "region":  # the op's MAD is the mean: times n over n + eps
        st = stats_t[..., 1] * n / (n + eps_n)
        sp = stats_p[..., 1] * n / (n + eps_n)
    else:
        st = _image_abs_dev(t, valid, mt) / (n + eps_n)
        sp = _image_abs_dev(p, valid, mp) / (n + eps_n)
    if kernel:
        L = _RegionTerms.apply(p, sp, t, valid, regions, host, mp, mt, st, n, mad_over)
    else:
        L = _plain_terms(p, t, valid, regions, mp, mt, st, sp, n, mad_over)
    return _reduce(L, n, reduction, normalize, process_group)


def _reduce(L: torch.Tensor, n: torch.Tensor, reduction: str, normalize: str,
            process_group: distributed.ProcessGroup | None) -> torch.Tensor:
    if reduction == "none":
        return L.sum(1) / (n.sum(1) + EPS)
    if reduction == "sum":
        return (L.sum(1) / (n.sum(1) + EPS)).sum()
    total, count = L.sum(), n.sum()
    if normalize == "global":
        group = distributed.active_group(process_group)
        total, count = distributed.all_reduce_sum(total, group), distributed.all_reduce_count(count, group)
    return total / (count + EPS)


class HDNLoss(nn.Module):
    """Metric3D v2's hierarchical depth normalisation loss as a module; see :func:`hdn_loss`. The regions
    change every step, so they are arguments of ``forward`` (draw them with :func:`draw_hdn_regions`).

    Args:
        mad_over: ``"region"`` (default, ``HDNRandomLoss``): each region's MAD over its own pixels;
            ``"image"`` (``HDSNRandomLoss``): over its image's valid pixels.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        normalize: ``"local"`` (default): this rank's sums and counts; ``"global"``: the global batch's under
            ``torch.distributed`` (see :mod:`depthmetric.distributed`).
        process_group: the group of ``normalize="global"``; ``None`` (default): the default group.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``.

    Returns:
        Called as ``loss_fn(pred, target, mask=None, depth_ranges=None, boxes=None, labels=None,
        num_labels=None, interpolate=True)``: what :func:`hdn_loss` returns.

    Raises:
        TypeError, ValueError: a bad option, named.
    """

    def __init__(self, mad_over: str = "region", reduction: str = "mean", normalize: str = "local",
                 process_group: distributed.ProcessGroup | None = None, backend: str = "auto") -> None:
        super().__init__()
        _check_options(mad_over, reduction, normalize, process_group)
        _ext.check_backend(backend)
        self.mad_over, self.reduction, self.backend = mad_over, reduction, backend
        self.normalize, self.process_group = normalize, process_group

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                depth_ranges: torch.Tensor | None = None, boxes: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, num_labels: int | None = None,
                interpolate: bool = True) -> torch.Tensor:
        """The loss of ``pred`` against ``target`` over the given regions.

        Args:
            pred: the predicted depth, floating ``B,1,H,W`` or ``B,H,W``.
            target: the ground-truth depth, ``B,1,H,W`` or ``B,H,W`` (valid where finite and > 0).
            mask: optional bool map of the target's shape; ``False`` excludes a pixel. Default ``None``.
            depth_ranges: optional ``B,R,2`` floating ``[lo, hi)`` ground-truth intervals. Default ``None``.
            boxes: optional ``B,R,4`` integer ``y0, y1, x0, x1`` boxes. Default ``None``.
            labels: optional integer label map of the target's size, one region per id. Default ``None``.
            num_labels: the number of label regions; ``None`` (default): ``labels.max() + 1``.
            interpolate: resize a prediction of another size to the target's. Default True.

        Returns:
            What :func:`hdn_loss` returns.
        """
        return hdn_loss(pred, target, mask, depth_ranges=depth_ranges, boxes=boxes, labels=labels,
                        num_labels=num_labels, mad_over=self.mad_over, reduction=self.reduction,
                        interpolate=interpolate, normalize=self.normalize, process_group=self.process_group,
                        backend=self.backend)

    def extra_repr(self) -> str:
        return (f"mad_over={self.mad_over!r}, reduction={self.reduction!r}, normalize={self.normalize!r}, "
                f"backend={self.backend!r}")


# ---------------------------------------------------------------------------------------------------------
# Metric3D's random regions.

def draw_hdn_regions(target: torch.Tensor, mask: torch.Tensor | None = None, *, n_ranges: int = 10,
                     n_boxes: int = 20, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Random regions for :func:`hdn_loss`, drawn as Metric3D draws them, outside any compiled region: a dict
    ``{"depth_ranges": B,n_ranges,2 float64, "boxes": B,n_boxes,4 int64}`` on the target's device, to pass
    as ``hdn_loss(pred, target, mask, **regions)``.

    - Depth ranges (``HDNRandomLoss.get_random_masks_for_batch``), per image from the minimum ``a`` and
      maximum ``b`` of its valid ground truth (``0, 0`` without any): ``lo = a + u (b - a)``,
      ``u ~ U(0, 0.75)``; ``hi = a + v (b - a)``, ``v ~ U(lo + 0.1, 1 - 1e-6)`` (numpy's ``uniform(low,
      high)``, ``low + (high - low) U``, also when ``low > high``). As in Metric3D's code the lower bound of
      ``v`` is ``lo`` in metres, not its fraction ``u``: for depths beyond 0.9 m, ``v >= 1 - 1e-6`` and the
      interval runs to the maximum depth or beyond. (Metric3D's ``hi + 1e-30`` changes nothing in float64.)
    - Boxes (``HDSNRandomLoss.get_random_masks_for_batch``), the same for every image of the batch: heights
      drawn without replacement from ``int(0.125 H) .. int(0.5 H) - 1``, widths likewise from ``W``, tops
      without replacement from ``0 .. H - int(0.125 H) - 1``, lefts from ``0 .. W - int(0.125 W) - 1``;
      bottom and right clipped to the image. Drawing without replacement needs as many choices as boxes:
      ``n_boxes`` larger than ``int(0.5 H) - int(0.125 H)`` (or the same of ``W``) is a ValueError, as
      numpy's ``choice`` raises.

    ``generator``: a CPU ``torch.Generator`` (default: torch's global one); the same seed gives the same
    regions (the draws are torch's, not numpy's, so not Metric3D's numbers). ``target``/``mask`` as in
    :func:`hdn_loss`. One host synchronisation (the per-image minimum and maximum).

    >>> import torch, depthmetric
    >>> target = 1 + 9 * torch.rand(2, 1, 64, 64)
    >>> regions = depthmetric.draw_hdn_regions(target, generator=torch.Generator().manual_seed(0))
    >>> regions["depth_ranges"].shape, regions["boxes"].shape
    (torch.Size([2, 10, 2]), torch.Size([2, 20, 4]))

    Args:
        target: the ground-truth depth, floating ``B,1,H,W`` or ``B,H,W``, metres; a pixel is valid where it
            is finite and > 0.
        mask: optional bool map of the target's shape; ``False`` excludes a pixel. Default ``None``.
        n_ranges: the number of depth ranges per image, an int >= 0. Default 10.
        n_boxes: the number of boxes, an int >= 0, at most ``int(0.5 H) - int(0.125 H)`` and
            ``int(0.5 W) - int(0.125 W)``. Default 20.
        generator: a CPU ``torch.Generator``; ``None`` (default): torch's global one.

    Returns:
        ``{"depth_ranges": B,n_ranges,2 float64, "boxes": B,n_boxes,4 int64}`` on the target's device.

    Raises:
        TypeError: a non-tensor or non-floating ``target``, a non-bool mask, ``n_ranges``/``n_boxes`` not an
            int, ``generator`` not a ``torch.Generator``.
        ValueError: a ``target`` or ``mask`` of the wrong shape, a negative count, ``n_boxes`` larger than the
            box sizes to draw from.
        RuntimeError: a ``generator`` under ``torch.compile``.
    """
    target = _checks.depth_map("target", target)
    mask = _checks.mask_map("mask", mask, target)
    _checks.count("n_ranges", n_ranges)
    _checks.count("n_boxes", n_boxes)
    generator = _checks.generator("generator", generator)
    B, _, H, W = target.shape
    valid = _checks.valid_depth(target)
    if mask is not None:
        valid = valid & mask
    t = target.detach().double()
    has = valid.flatten(1).any(1)
    low = torch.where(valid, t, math.inf).flatten(1).amin(1) if H * W else t.new_zeros(B)
    high = torch.where(valid, t, -math.inf).flatten(1).amax(1) if H * W else t.new_zeros(B)
    low, high = (torch.where(has, x, 0.0).cpu() for x in (low, high))
    u = torch.rand(B, 2, n_ranges, generator=generator, dtype=torch.float64)
    span, low = (high - low)[:, None], low[:, None]
    lo = u[:, 0] * 0.75 * span + low
    v = (lo + 0.1) + ((1 - EPS) - (lo + 0.1)) * u[:, 1]
    ranges = torch.stack([lo, v * span + low], -1)
    for size, name in ((H, "height"), (W, "width")):
        first, last = int(0.125 * size), int(0.5 * size)
        if n_boxes > max(0, last - first):
            raise ValueError(f"n_boxes must be at most {max(0, last - first)} for an image {name} of {size} "
                             f"(Metric3D draws the box sizes int(0.125 * {name}) .. int(0.5 * {name}) - 1 "
                             f"without replacement), got {n_boxes}")
    sizes = [torch.arange(int(0.125 * s), int(0.5 * s))[torch.randperm(int(0.5 * s) - int(0.125 * s),
                                                                         generator=generator)[:n_boxes]]
             for s in (H, W)]
    starts = [torch.randperm(s - int(0.125 * s), generator=generator)[:n_boxes] for s in (H, W)]
    y0, x0 = starts
    boxes = torch.stack([y0, (y0 + sizes[0]).clamp(max=H), x0, (x0 + sizes[1]).clamp(max=W)], -1)
    return {"depth_ranges": ranges.to(target.device),
            "boxes": boxes.expand(B, n_boxes, 4).contiguous().to(target.device)}
