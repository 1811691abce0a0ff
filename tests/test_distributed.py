"""The losses and metrics under torch.distributed, with real processes: 2 gloo ranks on the
CPU, spawned by the tests, against one process holding the whole global batch.

Rank r of the global batch holds images SPLIT[r] (unequal on purpose: 1 and 3 images, so that a local mean
differs from the global one). Every distributed check runs in one spawn of the two ranks (process start-up
dominates); the NaN check, which makes them raise, in another.
"""
import math
import multiprocessing
import pathlib
import traceback

import pytest
import torch
import torch.distributed as dist
from torch import nn

import depthmetric as dm
from depthmetric import distributed
from depthmetric.metrics import DepthMetrics

WORLD = 2
SPLIT = [slice(0, 1), slice(1, 4)]
TIMEOUT_S = 120
BACKENDS = ["cpu", "reference"] if dm.build_info()["compiled"] else ["reference"]


# ----------------------------------------------------------------------------------------------- harness

def _worker(rank: int, folder: str, job: str):
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=WORLD)
    try:
        out = JOBS[job](rank)
    except Exception as error:  # reported to the test, which decides whether it was expected
        out = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    torch.save(out, pathlib.Path(folder) / f"rank{rank}.pt")
    dist.destroy_process_group()


def run_ranks(job: str, folder: pathlib.Path) -> list[dict]:
    """Runs JOBS[job] on 2 gloo ranks in fresh processes; returns each rank's result (a hang fails)."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker, args=(r, str(folder), job)) for r in range(WORLD)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(TIMEOUT_S)
    hung = [r for r, p in enumerate(processes) if p.is_alive()]
    for p in processes:
        if p.is_alive():
            p.kill()
    assert not hung, f"ranks {hung} did not finish within {TIMEOUT_S} s (a collective hung)"
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


# ------------------------------------------------------------------------------------------------ data

def depth_batch():
    """4 float64 images: prediction, ground truth with holes (unequal valid counts) and a mask."""
    g = torch.Generator().manual_seed(7)
    gt = 0.5 + 4.0 * torch.rand(4, 1, 12, 14, generator=g, dtype=torch.float64)
    gt[torch.rand(gt.shape, generator=g) < torch.tensor([0.1, 0.5, 0.3, 0.7]).view(-1, 1, 1, 1)] = 0.0
    x = torch.rand(4, 1, 12, 14, generator=g, dtype=torch.float64)
    mask = torch.rand(gt.shape, generator=g) > 0.2
    return x, gt, mask


class Head(nn.Module):
    """A per-pixel network whose parameters receive the loss's gradient."""

    def __init__(self, channels_out=1):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, channels_out, 1).double()

    def forward(self, x):
        return self.conv(x)


def photo_batch():
    g = torch.Generator().manual_seed(3)
    target = torch.rand(4, 3, 10, 12, generator=g, dtype=torch.float64)
    sources = [torch.rand(4, 3, 10, 12, generator=g, dtype=torch.float64) for _ in range(2)]
    sources[0][..., :4, :4] = target[..., :4, :4]  # a static patch: identity wins there
    noise = 1e-5 * torch.rand(2, 4, 10, 12, generator=g, dtype=torch.float64)
    return target, sources, noise


def contrastive_batch():
    g = torch.Generator().manual_seed(11)
    x = torch.rand(4, 1, 6, 7, generator=g, dtype=torch.float64)
    depth = 0.5 + 2.5 * torch.rand(4, 1, 6, 7, generator=g, dtype=torch.float64)
    depth[torch.rand(depth.shape, generator=g) < 0.2] = 0.0
    shifts = torch.tensor([[0, 1, 2], [0, 3, 5], [1, 0, 0], [2, 0, 0], [3, 0, 0], [1, 2, 3]])
    return x, depth, shifts


def supervised_losses(normalize):
    """name -> loss(pred, gt, mask) of every loss whose mean divides by a data-dependent count."""
    kw = dict(normalize=normalize)
    return {
        "silog": dm.SILogLoss(**kw),
        "silog_bts": dm.SILogLoss(variance_focus=0.85, **kw),
        "trimmed_mae": dm.TrimmedMAELoss(**kw),
        "derivative": dm.MultiScaleDerivativeLoss(scales=2, **kw),
        "ssi": dm.ScaleShiftInvariantLoss(**kw),
        "hdn": lambda p, g, m: dm.hdn_loss(p, g, m, depth_ranges=HDN_RANGES.expand(p.shape[0], 2, 2),
                                           boxes=HDN_BOXES.expand(p.shape[0], 2, 4), **kw),
    }


# Metric3D's HDN regions of every image: two depth intervals and two boxes.
HDN_RANGES = torch.tensor([[0.5, 2.5], [1.5, 4.5]], dtype=torch.float64)
HDN_BOXES = torch.tensor([[0, 6, 0, 14], [3, 12, 4, 10]])


def parameter_grads(model):
    return [p.grad.detach().clone() for p in model.parameters()]


def ddp_grads(rank, normalize, backend="cpu"):
    """Each loss through DDP on this rank's part of the batch: its value and the averaged parameter grads."""
    out = {}
    x, gt, mask = depth_batch()
    part = SPLIT[rank]
    for name, loss_fn in supervised_losses(normalize).items():
        model = nn.parallel.DistributedDataParallel(Head())
        loss = loss_fn(model(x[part]).exp(), gt[part], mask[part])
        loss.backward()
        out[name] = (loss.detach(), parameter_grads(model))
    target, sources, noise = photo_batch()
    model = nn.parallel.DistributedDataParallel(Head())
    warped = [torch.sigmoid(model(s[part].mean(1, keepdim=True)) + s[part]) for s in sources]
    loss = dm.min_reprojection_loss(warped, target[part], [s[part] for s in sources], noise=noise[:, part],
                                    normalize=normalize, backend=backend)
    loss.backward()
    out["min_reprojection"] = (loss.detach(), parameter_grads(model))
    x, depth, shifts = contrastive_batch()
    within = shifts[shifts[:, 0] == 0]  # across-image shifts are checked with across="global"
    model = nn.parallel.DistributedDataParallel(Head(channels_out=4))
    loss = dm.multi_range_contrastive_loss(model(x[part]), depth[part], shifts=within, normalize=normalize,
                                           backend=backend)
    loss.backward()
    out["multi_range_contrastive"] = (loss.detach(), parameter_grads(model))
    return out


def single_grads(backend="cpu"):
    """The same losses in one process over the whole batch."""
    out = {}
    x, gt, mask = depth_batch()
    for name, loss_fn in supervised_losses("local").items():
        model = Head()
        loss = loss_fn(model(x).exp(), gt, mask)
        loss.backward()
        out[name] = (loss.detach(), parameter_grads(model))
    target, sources, noise = photo_batch()
    model = Head()
    warped = [torch.sigmoid(model(s.mean(1, keepdim=True)) + s) for s in sources]
    loss = dm.min_reprojection_loss(warped, target, sources, noise=noise, backend=backend)
    loss.backward()
    out["min_reprojection"] = (loss.detach(), parameter_grads(model))
    x, depth, shifts = contrastive_batch()
    model = Head(channels_out=4)
    loss = dm.multi_range_contrastive_loss(model(x), depth, shifts=shifts[shifts[:, 0] == 0], backend=backend)
    loss.backward()
    out["multi_range_contrastive"] = (loss.detach(), parameter_grads(model))
    return out


def across_global(rank, backend):
    """Contrastive loss with across-image samples from the global batch: value and this rank's feature grad."""
    x, depth, shifts = contrastive_batch()
    features = Head(channels_out=4)(x[SPLIT[rank]]).detach().requires_grad_()
    loss = dm.multi_range_contrastive_loss(features, depth[SPLIT[rank]], shifts=shifts, normalize="global",
                                           across="global", backend=backend)
    loss.backward()
    return loss.detach(), features.grad


# Rank 0 holds 3 images and rank 1 one: shifts drawn on rank 0 take s_k in [1, 2], which on rank 1 (B = 1) is
# no shift at all, a pixel paired with itself.
DRAWN_SPLIT = [slice(0, 3), slice(3, 4)]
DRAWN_SEED = 5


def drawn_shifts_local(rank, backend, split=DRAWN_SPLIT):
    """Contrastive loss with across="local" and shifts drawn by the op (on rank 0, from its generator)."""
    x, depth, _ = contrastive_batch()
    features = Head(channels_out=4)(x[split[rank]]).detach().requires_grad_()
    loss = dm.multi_range_contrastive_loss(features, depth[split[rank]], across="local", backend=backend,
                                           generator=torch.Generator().manual_seed(DRAWN_SEED))
    loss.backward()
    return loss.detach(), features.grad


def metric_images():
    """5 evaluation images (the 4 of depth_batch and a fifth)."""
    x, gt, _ = depth_batch()
    return torch.cat([x, x[:1]]).exp() + 0.5, torch.cat([gt, gt[:1] * 0.9])


def metrics_job(rank):
    """DistributedSampler over 5 images pads rank 1 with image 0 again; ids count it once."""
    pred, gt = metric_images()
    sampler = torch.utils.data.DistributedSampler(range(5), num_replicas=WORLD, rank=rank, shuffle=False)
    ids = torch.tensor(list(sampler))
    metric = DepthMetrics(crop=None)
    metric.update(pred[ids], gt[ids], ids=ids)
    out = {"ids": ids, "metrics": metric.compute(), "unsynced": DepthMetrics(crop=None, sync=False)}
    out["unsynced"].update(pred[ids], gt[ids], ids=ids)
    out["unsynced"] = out["unsynced"].compute()
    try:
        from depthmetric.metrics import DepthMetricsTM
    except ImportError:
        return out
    tm = DepthMetricsTM(crop=None)
    tm.update(pred[ids], gt[ids], ids=ids)
    out["torchmetrics"] = tm.compute()
    return out


def all_job(rank):
    torch.use_deterministic_algorithms(True)
    out = {"metrics": metrics_job(rank)}
    for backend in BACKENDS:
        out[f"global-{backend}"] = ddp_grads(rank, "global", backend)
        out[f"across-{backend}"] = across_global(rank, backend)
        out[f"drawn-{backend}"] = drawn_shifts_local(rank, backend)
    out["local"] = ddp_grads(rank, "local", BACKENDS[0])
    # Shifts drawn by the loss itself are the same on every rank whatever their seeds.
    torch.manual_seed(100 + rank)
    out["shifts"] = distributed.broadcast_from_first(lambda: dm.sample_shifts(4, 6, 7), distributed.active_group())
    return out


def nan_job(rank):
    x, depth, shifts = contrastive_batch()
    features = Head(channels_out=4)(x[SPLIT[rank]])
    if rank == 1:
        features = features.detach().clone()
        features[0, 0, 0, 0] = math.nan
    # normalize="global" communicates, so its checks are collective: every rank raises.
    dm.multi_range_contrastive_loss(features, depth[SPLIT[rank]], shifts=shifts[:2], normalize="global")
    return {"error": None}


JOBS = {"all": all_job, "nan": nan_job}


# ----------------------------------------------------------------------------------------------- tests

@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    results = run_ranks("all", tmp_path_factory.mktemp("ranks"))
    for r in results:
        assert "error" not in r, r.get("traceback")
    return results


@pytest.fixture(scope="module")
def single():
    return {backend: single_grads(backend) for backend in BACKENDS}


def test_depth_metrics_count_the_union_of_images_once(ranks):
    one = DepthMetrics(crop=None)
    one.update(*metric_images())
    expected = one.compute()
    assert sorted(torch.cat([r["metrics"]["ids"] for r in ranks]).tolist()) == [0, 0, 1, 2, 3, 4]  # padded
    for r in ranks:
        got = r["metrics"]["metrics"]
        assert got["images"] == expected["images"] == 5
        for name in dm.metrics.METRICS:
            assert got[name] == pytest.approx(expected[name], rel=1e-12, abs=1e-12), name
        assert r["metrics"]["unsynced"]["images"] == 3  # sync=False: this rank's images only


def test_torchmetrics_adapter_matches(ranks):
    pytest.importorskip("torchmetrics")
    for r in ranks:
        tm = r["metrics"]["torchmetrics"]  # tensors, as a torchmetrics Metric returns
        for name in dm.metrics.METRICS:
            assert tm[name].dtype == torch.float64 and tm[name].dim() == 0, name
            assert tm[name].item() == pytest.approx(r["metrics"]["metrics"][name], rel=1e-12)
        assert tm["images"].dtype == torch.int64 and tm["images"].item() == 5


LOSSES = ["silog", "silog_bts", "trimmed_mae", "derivative", "ssi", "hdn", "min_reprojection",
          "multi_range_contrastive"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", LOSSES)
def test_global_normalization_gives_the_single_process_gradient(ranks, single, loss, backend):
    want_value, want_grads = single[backend][loss]
    for r in ranks:
        value, grads = r[f"global-{backend}"][loss]
        torch.testing.assert_close(value, want_value, rtol=1e-10, atol=1e-12)
        for got, want in zip(grads, want_grads):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("loss", LOSSES)
def test_local_normalization_is_not_the_global_gradient(ranks, single, loss):
    """What "global" fixes: with unequal per-rank counts, DDP over local means is another gradient."""
    want = single[BACKENDS[0]][loss][1]
    got = ranks[0]["local"][loss][1]
    assert any(not torch.allclose(g, w, rtol=1e-6) for g, w in zip(got, want))


@pytest.mark.parametrize("backend", BACKENDS)
def test_across_global_matches_one_process_over_the_concatenated_batch(ranks, backend):
    x, depth, shifts = contrastive_batch()
    features = Head(channels_out=4)(x).detach().requires_grad_()
    want = dm.multi_range_contrastive_loss(features, depth, shifts=shifts, backend=backend)
    want.backward()
    for r, part in zip(ranks, SPLIT):
        value, grad = r[f"across-{backend}"]
        torch.testing.assert_close(value, want.detach(), rtol=1e-10, atol=1e-12)
        # Every rank returns the global loss; its features' gradient is world_size times the single-process
        # one, which DDP's averaging of the parameter gradients divides back.
        torch.testing.assert_close(grad / WORLD, features.grad[part], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_drawn_shifts_with_across_local_drop_what_is_no_shift_on_this_rank(ranks, backend):
    """Each rank's loss and gradient with shifts drawn on rank 0 (B = 3) equal those of the rank's batch alone
    in one process from the same generator state. Alone, rank 1 (B = 1) draws the same within-image shifts
    (they come first from the generator) and no across-image ones; in DDP its across shifts s_k in [1, 2] are
    identities there, self-pairs (distance 0, always positive) that would only inflate the pair count."""
    for rank, r in enumerate(ranks):
        alone = drawn_shifts_local(rank, backend)  # no process group here: a single process
        value, grad = r[f"drawn-{backend}"]
        torch.testing.assert_close(value, alone[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, alone[1], rtol=1e-12, atol=1e-12)
        assert alone[0] > 0 and torch.count_nonzero(alone[1]) > 0


def test_drawn_shifts_are_the_same_on_every_rank(ranks):
    assert torch.equal(ranks[0]["shifts"], ranks[1]["shifts"])


def test_nan_on_one_rank_raises_on_every_rank_in_a_communicating_op(tmp_path):
    results = run_ranks("nan", tmp_path)
    for r in results:
        assert r["error"] is not None and r["error"].startswith("ValueError"), r
        assert "features contains NaN or Inf values (rank 1)" in r["error"]


def test_one_process_is_unchanged():
    """Without an initialised group every helper is the identity."""
    assert distributed.active_group() is None
    t = torch.arange(3.0, requires_grad=True)
    assert distributed.all_reduce_sum(t, None) is t
    assert distributed.all_gather_batch(t, None) == (t, 0)


@pytest.mark.parametrize("make,error,match", [
    (lambda: dm.SILogLoss(normalize="all"), ValueError, "normalize"),
    (lambda: dm.MultiRangeContrastiveLoss(across="world"), ValueError, "across"),
    (lambda: DepthMetrics(median_scaling="no"), TypeError, "median_scaling"),
    (lambda: DepthMetrics(crop=None).update(torch.ones(2, 1, 4, 4), torch.ones(2, 1, 4, 4), ids=[1]),
     ValueError, "ids"),
    (lambda: DepthMetrics(crop=None).update(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 4, 4), ids=[0.5]),
     TypeError, "ids"),
])
def test_bad_distributed_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()
