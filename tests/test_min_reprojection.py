"""min_reprojection_loss / ReprojectionLoss: kernel vs reference twin, auto-mask semantics, gradients, opcheck,
compile, determinism, bad input."""
import warnings

import pytest
import torch

import depthmetric as dm
from depthmetric import _checks
from depthmetric.reference.min_reprojection import min_reprojection as reference_op

from .registry import DEVICES, assert_close_scaled, backend_of, needs_ext, scene


SHAPES = [(1, 3, 5, 7), (2, 3, 9, 13)]
TOL = {torch.float64: 1e-10, torch.float32: 2e-5}


def run(target, warped, sources, backend, **kw):
    w = [x.detach().clone().requires_grad_(True) for x in warped]
    loss, mask, winner = dm.min_reprojection_loss(w, target, sources, backend=backend, return_mask=True, **kw)
    loss.backward()
    return loss.detach(), mask, winner, [x.grad for x in w]


def assert_runs_match(got, ref, loss_tol, grad_tol):
    """Two ``run`` results: the same winners and mask, the loss and every gradient within (rtol, atol)."""
    assert torch.equal(got[2], ref[2]) and torch.equal(got[1], ref[1])
    torch.testing.assert_close(got[0], ref[0], rtol=loss_tol[0], atol=loss_tol[1])
    for g, g_ref in zip(got[3], ref[3]):
        torch.testing.assert_close(g, g_ref, rtol=grad_tol[0], atol=grad_tol[1])


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("n_sources", [1, 3, 4])
@pytest.mark.parametrize("automask,reduce_sources", [(True, "min"), (False, "min"), (True, "mean"), (False, "mean")])
def test_kernel_matches_reference(automask, reduce_sources, n_sources, shape, dtype, device):
    target, warped, sources, _ = scene(shape, n_sources, dtype, device, seed=n_sources + shape[0])
    kw = dict(automask=automask, reduce_sources=reduce_sources)
    got = run(target, warped, sources, backend_of(device), generator=torch.Generator().manual_seed(3), **kw)
    ref = run(target, warped, sources, "reference", generator=torch.Generator().manual_seed(3), **kw)
    loss, mask, winner, grads = got
    assert loss.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert mask.shape == (shape[0], 1, *shape[2:]) and mask.dtype == torch.bool
    assert winner.dtype == torch.int64 and all(g.dtype == dtype for g in grads)
    assert_runs_match(got, ref, (TOL[dtype], TOL[dtype]), (TOL[dtype], TOL[dtype]))
    if automask and n_sources > 1 and reduce_sources == "min":  # the scene exercises every branch
        assert (winner < n_sources).any() and (winner >= n_sources).any()
        assert len(winner[winner < n_sources].unique()) > 1


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduce_sources", ["min", "mean"])
def test_many_tiles_and_row_blocks(reduce_sources, device):
    """Sizes spanning several CUDA thread blocks (32 x 8) and CPU row blocks (32 rows), with ragged edges."""
    target, warped, sources, _ = scene((2, 3, 37, 70), 2, torch.float64, device, seed=2)
    kw = dict(reduce_sources=reduce_sources, generator=torch.Generator().manual_seed(3))
    got = run(target, warped, sources, backend_of(device), **kw)
    kw["generator"] = torch.Generator().manual_seed(3)
    ref = run(target, warped, sources, "reference", **kw)
    assert_runs_match(got, ref, (1e-10, 1e-10), (1e-10, 1e-10))


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_stacked_tensor_equals_list(device):
    target, warped, sources, _ = scene((2, 3, 8, 11), 2, torch.float32, device, seed=5)
    noise = dm.draw_identity_noise(2, target, torch.Generator().manual_seed(0))
    as_list = dm.min_reprojection_loss(warped, target, sources, noise=noise)
    stacked = dm.min_reprojection_loss(torch.stack(warped), target, torch.stack(sources), noise=noise)
    assert torch.equal(as_list, stacked)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_strided_inputs(device):
    target, warped, sources, _ = scene((2, 3, 10, 12), 2, torch.float32, device, seed=7)
    noise = dm.draw_identity_noise(2, target, torch.Generator().manual_seed(0))
    ref = run(target, warped, sources, backend_of(device), noise=noise)
    got = run(target.to(memory_format=torch.channels_last), [w.to(memory_format=torch.channels_last) for w in warped],
              [s.transpose(2, 3).contiguous().transpose(2, 3) for s in sources], backend_of(device), noise=noise)
    assert_runs_match(got, ref, (1e-6, 1e-7), (1e-5, 1e-8))


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_against_float64_reference(dtype, device):
    target, warped, sources, _ = scene((2, 3, 12, 16), 2, dtype, device, seed=9)
    noise = dm.draw_identity_noise(2, target, torch.Generator().manual_seed(0))
    loss, _, winner, grads = run(target, warped, sources, backend_of(device), noise=noise)
    as64 = lambda ts: [t.double() for t in ts]  # noqa: E731  (the same rounded values in float64)
    loss_r, _, winner_r, grads_r = run(target.double(), as64(warped), as64(sources), "reference", noise=noise.double())
    assert loss.dtype == torch.float32 and grads[0].dtype == dtype
    torch.testing.assert_close(loss.double(), loss_r, rtol=1e-4, atol=1e-5)
    assert (winner == winner_r).float().mean() > 0.99  # near-ties may flip in float32 arithmetic
    # A pixel's gradient sums the box3 terms of the 3x3 pixels around it: where none of their winners
    # flipped, it differs by 16-bit rounding only, within the scaled tolerance of its 9 x 2 terms.
    flipped = (winner != winner_r).double()
    near_flip = torch.nn.functional.max_pool2d(flipped, 3, stride=1, padding=1) > 0
    keep = (~near_flip).expand_as(grads[0])
    assert keep.float().mean() > 0.9
    for g, g_r in zip(grads, grads_r):
        assert_close_scaled(g[keep], g_r[keep], dtype, n_terms=18)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduce_sources", ["min", "mean"])
def test_gradcheck(reduce_sources, device):
    target, warped, sources, _ = scene((1, 3, 4, 5), 2, torch.float64, device, seed=11)
    noise = dm.draw_identity_noise(2, target, torch.Generator().manual_seed(0))
    warped = [w.requires_grad_(True) for w in warped]

    def fn(*w):
        return dm.min_reprojection_loss(list(w), target, sources, noise=noise, reduce_sources=reduce_sources,
                                        backend=backend_of(device))

    assert torch.autograd.gradcheck(fn, tuple(warped))


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    target, warped, sources, _ = scene((2, 3, 6, 7), 2, torch.float32, device, seed=13)
    noise = dm.draw_identity_noise(2, target, torch.Generator().manual_seed(0))
    warped = [w.requires_grad_(True) for w in warped]
    op = torch.ops.depthmetric.min_reprojection.default
    torch.library.opcheck(op, (target, warped, sources, noise, 0.85, False))
    torch.library.opcheck(op, (target, warped, [], noise[:0], 0.85, True),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_backward_is_deterministic(device):
    target, warped, sources, _ = scene((2, 3, 33, 41), 3, torch.float32, device, seed=17)
    noise = dm.draw_identity_noise(3, target, torch.Generator().manual_seed(0))
    first = run(target, warped, sources, backend_of(device), noise=noise)
    second = run(target, warped, sources, backend_of(device), noise=noise)
    assert torch.equal(first[0], second[0]) and torch.equal(first[2], second[2])
    for a, b in zip(first[3], second[3]):
        assert torch.equal(a, b)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_training_step(device):
    """The noise is drawn outside the graph and passed explicitly: a torch.Generator argument is not
    traceable by dynamo, so ``generator=`` would break the graph (generator=None would draw inside it)."""
    torch._dynamo.reset()
    target, warped, sources, _ = scene((2, 3, 10, 12), 2, torch.float32, device, seed=19)
    loss_fn = dm.ReprojectionLoss()
    noise = dm.draw_identity_noise(2, target, torch.Generator().manual_seed(0))

    def step(warped, noise):
        return loss_fn([w * 0.9 for w in warped], target, sources, noise=noise)

    w = [x.clone().requires_grad_(True) for x in warped]
    loss = torch.compile(step, fullgraph=True)(w, noise)
    loss.backward()
    w_eager = [x.clone().requires_grad_(True) for x in warped]
    eager = step(w_eager, noise)
    eager.backward()
    torch.testing.assert_close(loss, eager, rtol=1e-6, atol=1e-7)
    for a, b in zip(w, w_eager):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-8)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_automask_semantics(device):
    """A static scene (sources == target) is masked out: identity wins everywhere, no gradient, loss ~ noise.
    A perfect warp wins everywhere with zero loss; without auto-masking the warped error is all there is."""
    target, warped, sources, _ = scene((2, 3, 9, 10), 2, torch.float64, device, seed=23)
    static = [target.clone(), target.clone()]
    loss, mask, winner, grads = run(target, warped, static, backend_of(device), generator=torch.Generator().manual_seed(1))
    assert not mask.any() and (winner >= 2).all()
    assert loss.abs() < 1e-4 and all((g == 0).all() for g in grads)
    perfect, moved = [target.clone(), warped[1]], [1 - target, 1 - target]
    loss, mask, winner, _ = run(target, perfect, moved, backend_of(device), generator=torch.Generator().manual_seed(1))
    assert mask.all() and (winner == 0).all() and loss.abs() < 1e-12
    loss_off, mask_off, _, _ = run(target, warped, static, backend_of(device), automask=False)
    assert mask_off.all() and loss_off > 0.01


@needs_ext
def test_generator_reproducible_and_noise_matches_generator():
    target, warped, sources, _ = scene((2, 3, 8, 9), 2, torch.float32, "cpu", seed=29)
    a = run(target, warped, sources, "cpu", generator=torch.Generator().manual_seed(5))
    b = run(target, warped, sources, "cpu", generator=torch.Generator().manual_seed(5))
    c = run(target, warped, sources, "cpu", noise=dm.draw_identity_noise(2, target, torch.Generator().manual_seed(5)))
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], c[2]) and torch.equal(a[0], c[0])


def test_module_matches_function():
    target, warped, sources, _ = scene((1, 3, 6, 8), 2, torch.float64, "cpu", seed=31)
    module = dm.ReprojectionLoss(alpha=0.7, reduce_sources="mean", backend="reference")
    out = module(warped, target, sources, generator=torch.Generator().manual_seed(2), return_mask=True)
    ref = dm.min_reprojection_loss(warped, target, sources, alpha=0.7, reduce_sources="mean", backend="reference",
                                   generator=torch.Generator().manual_seed(2), return_mask=True)
    assert all(torch.equal(a, b) for a, b in zip(out, ref))
    assert set(out[2].unique().tolist()) <= {0, 2}


def test_reference_is_monodepth2():
    """The twin against Monodepth2's compute_losses written out: cat, +noise, torch.min over channels."""
    target, warped, sources, _ = scene((2, 3, 7, 9), 2, torch.float64, "cpu", seed=37)
    noise = dm.draw_identity_noise(2, target, torch.Generator().manual_seed(4))
    loss, winner = reference_op(target, warped, sources, noise, 0.85, False)
    pe = lambda a: dm.photometric_error(a, target, backend="reference")  # noqa: E731
    reprojection = torch.cat([pe(w) for w in warped], 1)
    identity = torch.cat([pe(s) for s in sources], 1) + noise.transpose(0, 1)
    combined = torch.cat([identity, reprojection], 1)  # Monodepth2 puts the identity errors first
    to_optimise, idxs = torch.min(combined, dim=1)
    torch.testing.assert_close(loss, to_optimise, rtol=0, atol=0)
    torch.testing.assert_close((winner < 2), idxs > 1)


def test_bad_input(monkeypatch):
    target, warped, sources, _ = scene((1, 3, 6, 7), 2, torch.float32, "cpu", seed=41)
    call = lambda *a, **k: dm.min_reprojection_loss(*a, backend="reference", **k)  # noqa: E731
    with pytest.raises(ValueError, match="warped is empty"):
        call([], target, sources)
    with pytest.raises(ValueError, match="sources is empty"):
        call(warped, target, [])
    with pytest.raises(ValueError, match="automask=True needs sources"):
        call(warped, target)
    with pytest.raises(ValueError, match="sources has 1 images but warped has 2"):
        call(warped, target, sources[:1])
    with pytest.raises(ValueError, match=r"warped\[1\] has shape"):
        call([warped[0], warped[1][:, :, :5]], target, sources)
    with pytest.raises(ValueError, match=r"sources\[0\] has shape"):
        call(warped, target, [sources[0][:, :2], sources[1]])  # wrong channel count
    with pytest.raises(ValueError, match=r"warped\[0\] is on meta"):
        call([warped[0].to("meta"), warped[1]], target, sources)
    with pytest.raises(TypeError, match=r"warped\[1\] is torch.float64"):
        call([warped[0], warped[1].double()], target, sources)
    with pytest.raises(ValueError, match="S,B,C,H,W"):
        call(torch.stack(warped)[0], target, sources)
    # the order before 0.1.0, (target, warped, sources): the function and the module name the arguments
    swapped = r"^min_reprojection_loss\(warped, target, sources\): warped is one B,C,H,W tensor and target is a list"
    with pytest.raises(TypeError, match=swapped):
        call(target, warped, sources)
    with pytest.raises(TypeError, match=r"^min_reprojection_loss\(warped, target, sources\): .* a tensor of shape "
                                        r"\(2, 1, 3, 6, 7\)"):
        call(target, torch.stack(warped), torch.stack(sources))
    with pytest.raises(TypeError, match=r"^ReprojectionLoss\(warped, target, sources\): .*look swapped"):
        dm.ReprojectionLoss(backend="reference")(target, warped, sources)
    with pytest.raises(ValueError, match="reduce_sources"):
        call(warped, target, sources, reduce_sources="max")
    with pytest.raises(ValueError, match="alpha"):
        call(warped, target, sources, alpha=-0.1)
    with pytest.raises(ValueError, match="noise must be S,B,H,W"):
        call(warped, target, sources, noise=torch.zeros(1, 1, 6, 7))
    with pytest.raises(ValueError, match="needs H and W >= 2"):
        call([w[..., :1] for w in warped], target[..., :1], [s[..., :1] for s in sources])
    with pytest.raises(ValueError, match="reduce_sources"):
        dm.ReprojectionLoss(reduce_sources="median")
    nan = warped[1].clone()
    nan[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match=r"warped\[1\] contains NaN"):
        call([warped[0], nan], target, sources)
    monkeypatch.setattr(_checks, "_warned_outside_unit", False)
    with pytest.warns(UserWarning, match=r"target has values outside \[0, 1\]"):
        call(warped, target * 255, sources)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        call([w + 2 for w in warped], target, sources)


@needs_ext
def test_compiled_step_with_noise_drawn_outside_matches_the_seeded_eager_call():
    torch._dynamo.reset()
    target, warped, sources, _ = scene((2, 3, 10, 12), 2, torch.float32, "cpu", seed=29)
    compiled = torch.compile(lambda w, n: dm.min_reprojection_loss(w, target, sources, noise=n), fullgraph=True)
    noise = dm.draw_identity_noise(2, target, torch.Generator().manual_seed(4))
    eager = dm.min_reprojection_loss(warped, target, sources, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(compiled(warped, noise), eager, rtol=1e-6, atol=1e-8)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(Exception, match="draw_identity_noise"):
        torch.compile(lambda w: dm.min_reprojection_loss(w, target, sources, generator=g), fullgraph=True)(warped)


@pytest.mark.parametrize("backend", ["reference"] + (["cpu"] if dm.build_info()["compiled"] else []))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("automask,reduce_sources", [(False, "min"), (True, "min"), (True, "mean")])
def test_ties_go_to_the_first_minimum(automask, reduce_sources, dtype, backend):
    """Two identical warped frames (and, with automask, unwarped sources equal to them with zero noise): every
    candidate ties at every pixel, and torch.argmin's first minimum wins, warped frame 0; with the sources'
    mean (where the warped frames' errors are averaged too), the identity must be strictly smaller to win, so
    the warped frames win the tie. So the loss is that of frame 0 alone, and its gradient goes entirely to
    frame 0 (halved between the two under the mean)."""
    target, warped, _, _ = scene((2, 3, 6, 7), 1, dtype, "cpu", seed=4)
    w0 = warped[0]
    alone = run(target, [w0], None, backend, automask=False)
    kw = dict(automask=automask, reduce_sources=reduce_sources)
    if automask:
        kw["noise"] = torch.zeros(2, 2, 6, 7, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    loss, mask, winner, grads = run(target, [w0, w0.clone()], [w0.clone(), w0.clone()] if automask else None,
                                    backend, **kw)
    assert torch.count_nonzero(winner) == 0 and bool(mask.all())
    assert torch.equal(loss, alone[0])
    assert torch.count_nonzero(alone[3][0]) > 0
    if reduce_sources == "mean":
        for grad in grads:
            torch.testing.assert_close(grad, alone[3][0] / 2, rtol=0, atol=0)
    else:
        torch.testing.assert_close(grads[0], alone[3][0], rtol=0, atol=0)
        assert torch.count_nonzero(grads[1]) == 0


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_reduction_none_is_the_per_pixel_loss(backend):
    if backend == "cpu" and not dm.build_info()["compiled"]:
        pytest.skip("extension not built")
    target, warped, sources, g = scene((2, 3, 9, 11), 2, torch.float64, "cpu", seed=4)
    noise = dm.draw_identity_noise(2, target, g)
    per_pixel = dm.min_reprojection_loss(warped, target, sources, noise=noise, reduction="none", backend=backend)
    assert per_pixel.shape == (2, 1, 9, 11)
    mean = dm.min_reprojection_loss(warped, target, sources, noise=noise, backend=backend)
    assert per_pixel.mean().item() == pytest.approx(mean.item(), rel=1e-12)
    # The per-pixel loss is the smallest photometric error among the candidates, pixel by pixel.
    errors = torch.stack([dm.photometric_error(target, w, backend=backend) for w in warped]
                         + [dm.photometric_error(target, s, backend=backend) + n.unsqueeze(1)
                            for s, n in zip(sources, noise)])
    torch.testing.assert_close(per_pixel, errors.min(0).values, rtol=1e-12, atol=1e-12)
    module = dm.ReprojectionLoss(reduction="none", backend=backend)
    torch.testing.assert_close(module(warped, target, sources, noise=noise), per_pixel, rtol=0, atol=0)
