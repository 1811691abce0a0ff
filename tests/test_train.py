"""Training loops on the synthetic scene generator: the loss goes down, kernel and reference backends give the
same trajectory, runs are reproducible and resume exactly. Tiny models and tiny images (CPU, a few seconds)."""
import json
import math

import pytest
import torch

from depthmetric import _ext
from depthmetric.training import TrainConfig, build_task, load_checkpoint, train
from depthmetric.training.checkpoint import step_path
from depthmetric.training.loop import schedule
from depthmetric.training.pipeline import training_batches

from .registry import assert_same_state

needs_kernels = pytest.mark.skipif(not _ext.extension_loaded(), reason="compiled extension not built")

TINY_LT = dict(width_mult=0.35, stages=3, blocks_per_stage=1, decoder_channels=16, features=8)
TINY_DEPTHNET = dict(width=8, decoder_width=4)
TINY = {"ltdepth": TINY_LT, "zoe": dict(TINY_LT, n_bins=8, bin_embedding_dim=8), "depthnet": TINY_DEPTHNET,
        "sql": dict(width=8, embedding_dim=8, patch_size=8, queries=4, bins=8, heads=2, layers=1, feedforward=16)}
ARCH_TASKS = [("supervised", "ltdepth"), ("supervised", "zoe"), ("self-supervised", "depthnet"),
              ("self-supervised", "sql")]


def _config(tmp_path, name, **kw):
    base = dict(task="supervised", data="synthetic", height=48, width=64, batch_size=4, steps=20, lr=3e-3,
                warmup=2, eval_every=1000, synthetic_size=16, augment=False, figure=False, progress=False,
                backend="reference", out=str(tmp_path / name), threads=1)
    base.update(kw)
    if "model" not in kw:
        base["model"] = dict(TINY[base.get("arch") or ("ltdepth" if base["task"] == "supervised" else "depthnet")])
    return TrainConfig(**base)


def _mean(values, n=5):
    return sum(values[:n]) / n, sum(values[-n:]) / n


def test_supervised_20_steps_lowers_the_loss(tmp_path):
    result = train(_config(tmp_path, "sup"))
    first, last = _mean(result["history"]["loss"])
    assert last < 0.8 * first, result["history"]["loss"]
    assert {"silog", "contrastive"} <= set(result["history"])
    assert math.isfinite(result["metrics_after"]["AbsRel"])


def test_self_supervised_20_steps_lowers_the_loss(tmp_path):
    result = train(_config(tmp_path, "selfsup", task="self-supervised", height=64, width=64, lr=1e-3))
    first, last = _mean(result["history"]["loss"])
    assert last < first, result["history"]["loss"]
    assert {"reprojection", "smoothness"} <= set(result["history"])


@needs_kernels
@pytest.mark.parametrize("task", ["supervised", "self-supervised"])
def test_kernel_and_reference_give_the_same_trajectory(tmp_path, task):
    size = dict(height=64, width=64) if task == "self-supervised" else {}
    # lr 1e-4: Adam's first steps move every weight by about +-lr whatever its gradient's size, so float-level
    # differences between the backends (flipping a min-reprojection winner, say) grow in proportion to lr.
    runs = [train(_config(tmp_path, f"{task}-{b}", task=task, steps=5, lr=1e-4, backend=b, **size))["history"]
            for b in ("auto", "reference")]
    for name in runs[1]:
        if name not in ("step", "lr"):
            torch.testing.assert_close(torch.tensor(runs[0][name]), torch.tensor(runs[1][name]), rtol=1e-4,
                                       atol=1e-4, msg=lambda m: f"{name}: {m}")


@needs_kernels
@pytest.mark.parametrize("task, arch", ARCH_TASKS)
def test_float64_kernel_and_reference_train_alike(tmp_path, task, arch):
    """In float64 the backends' 30-step runs agree to 1e-9, losses and parameters: the float32 drift between
    them is rounding amplified by training, not a different loss. The bin-head architectures run their fused
    heads (log-binomial, attractors, softmax bins) on the backend too."""
    size = dict(height=64, width=64) if task == "self-supervised" else {}
    results = [train(_config(tmp_path, f"{arch}-{b}", task=task, arch=arch, steps=30, dtype="float64", backend=b,
                             **size))
               for b in ("cpu", "reference")]
    torch.testing.assert_close(torch.tensor(results[0]["history"]["loss"]), torch.tensor(results[1]["history"]["loss"]),
                               rtol=1e-9, atol=0)
    states = [load_checkpoint(r["files"]["checkpoint"])[2]["models"] for r in results]
    for module in states[1]:
        for name, tensor in states[1][module]["state"].items():
            assert tensor.dtype in (torch.float64, torch.int64), name
            torch.testing.assert_close(states[0][module]["state"][name], tensor, rtol=1e-9, atol=1e-10,
                                       msg=lambda m: f"{module}.{name}: {m}")


@pytest.mark.parametrize("task, arch", [t for t in ARCH_TASKS if t[1] in ("zoe", "sql")])
def test_bin_head_architectures_train_and_reload(tmp_path, task, arch):
    size = dict(height=64, width=64) if task == "self-supervised" else {}
    result = train(_config(tmp_path, arch, task=task, arch=arch, steps=8, backend="auto", lr=1e-3, **size))
    assert all(math.isfinite(v) for v in result["history"]["loss"]) and len(result["history"]["loss"]) == 8
    first, last = _mean(result["history"]["loss"], 3)
    assert last < first, result["history"]["loss"]
    reloaded, config, _ = load_checkpoint(result["files"]["checkpoint"])
    assert config.arch == arch and type(reloaded.model).__name__ == ("ZoeLTDepth" if arch == "zoe" else "SQLDepthNet")
    depth = reloaded.predict(torch.rand(1, 3, *(config.height, config.width)))
    assert depth.shape == (1, 1, config.height, config.width)


def test_arch_must_fit_the_task():
    with pytest.raises(ValueError, match="arch"):
        TrainConfig(task="supervised", arch="sql").resolved()


def test_one_ulp_moves_every_initial_weight(tmp_path):
    from depthmetric.training.loop import _move_ulps

    task = build_task(TrainConfig(data="synthetic", model=TINY_LT))
    before = [p.detach().clone() for p in task.model.parameters()]
    _move_ulps(task, 1)
    for old, new in zip(before, task.model.parameters()):
        assert torch.equal(new, torch.nextafter(old, torch.full_like(old, math.inf)))


def test_seeded_cpu_run_is_reproducible(tmp_path):
    a = train(_config(tmp_path, "a", steps=4))["history"]["loss"]
    b = train(_config(tmp_path, "b", steps=4))["history"]["loss"]
    c = train(_config(tmp_path, "c", steps=4, seed=1))["history"]["loss"]
    assert a == b
    assert a != c


def test_resume_continues_the_step_count_and_the_run(tmp_path):
    # constant schedule: the first leg's cosine would depend on its own step count
    straight = train(_config(tmp_path, "straight", steps=6, schedule="constant"))
    first = train(_config(tmp_path, "resumed", steps=3, schedule="constant"))
    assert len(first["history"]["loss"]) == 3
    ckpt = first["files"]["checkpoint"]
    assert torch.load(ckpt, weights_only=True)["step"] == 3
    resumed = train(_config(tmp_path, "resumed", steps=6, schedule="constant"), resume=ckpt)
    assert resumed["history"]["step"] == [1, 2, 3, 4, 5, 6]
    assert resumed["timing"]["steps_this_run"] == 3
    assert torch.load(ckpt, weights_only=True)["step"] == 6
    torch.testing.assert_close(torch.tensor(resumed["history"]["loss"]), torch.tensor(straight["history"]["loss"]),
                               rtol=1e-6, atol=1e-6)
    assert resumed["metrics_before"] == first["metrics_before"]


def test_resume_restores_weights_optimizer_and_scheduler(tmp_path):
    """A float64 run of 6 steps (cosine schedule after a 2-step warm-up) keeps its step-3 checkpoint; resumed
    from it, a second run ends with the uninterrupted run's weights, AdamW state and scheduler state."""
    kw = dict(steps=6, warmup=2, schedule="cosine", dtype="float64", save_every=3, keep=2)
    straight = train(_config(tmp_path, "straight", **kw))
    end = straight["files"]["checkpoint"]
    middle = step_path(end, 3)
    resumed = train(_config(tmp_path, "resumed", **kw), resume=middle)
    want, got = (torch.load(p, weights_only=True) for p in (end, resumed["files"]["checkpoint"]))
    mid = torch.load(middle, weights_only=True)
    assert mid["step"] == 3 and want["step"] == got["step"] == 6
    weights = mid["models"]["model"]["state"]
    assert any(not torch.equal(weights[k], want["models"]["model"]["state"][k]) for k in weights)  # it trained on
    assert_same_state(got["models"], want["models"], "models")
    assert_same_state(got["optimizer"], want["optimizer"], "optimizer")
    assert_same_state(got["scheduler"], want["scheduler"], "scheduler")


def test_checkpoint_reloads_the_model(tmp_path):
    result = train(_config(tmp_path, "ckpt", steps=2))
    task, config, state = load_checkpoint(result["files"]["checkpoint"])
    assert state["step"] == 2 and config.task == "supervised" and config.height == 48
    saved = json.load(open(result["files"]["metrics"]))
    assert saved["history"]["step"] == [1, 2]
    depth = task.predict(torch.rand(1, 3, 48, 64))
    assert depth.shape == (1, 1, 48, 64)


def test_metric_loss_off_is_the_silog_baseline(tmp_path):
    result = train(_config(tmp_path, "baseline", steps=2, metric_loss=False))
    assert "contrastive" not in result["history"]
    torch.testing.assert_close(torch.tensor(result["history"]["loss"]), torch.tensor(result["history"]["silog"]))


class Indexed(torch.utils.data.Dataset):
    """Samples that say which item they are."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"image": torch.full((3, 4, 4), float(i)), "depth": torch.ones(1, 4, 4)}


def _items(config, rank=0, world=1, start=0):
    return {step: batch["image"][:, 0, 0, 0].long().tolist()
            for step, batch in training_batches(Indexed(10), config, rank, world, start)}


def test_batches_cover_each_epoch_and_resume_in_place():
    config = TrainConfig(steps=4, batch_size=5, augment=False, seed=3).resolved()
    config.height = config.width = 4
    seen = _items(config)
    assert sorted(seen[0] + seen[1]) == list(range(10)) and sorted(seen[2] + seen[3]) == list(range(10))
    assert _items(config, start=3) == {3: seen[3]}  # a resumed run skips to its step


def test_ranks_batches_together_are_one_process_batch():
    """DistributedSampler interleaves one permutation: W ranks of batch b at step k hold what one process of
    batch W b holds at step k, which makes DDP on W ranks the same optimisation as one process."""
    one = TrainConfig(steps=3, batch_size=4, augment=False, seed=5).resolved()
    half = TrainConfig(steps=3, batch_size=2, augment=False, seed=5).resolved()
    for c in (one, half):
        c.height = c.width = 4
    whole = _items(one)
    ranks = [_items(half, rank, 2) for rank in range(2)]
    for step in range(3):
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(whole[step])


def test_lr_schedule_warms_up_and_decays():
    config = TrainConfig(steps=100, warmup=10, lr=1.0)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    lr = schedule(optimizer, config)
    factors = []
    for _ in range(100):
        factors.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        lr.step()
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0) and max(factors) == pytest.approx(1.0)
    assert factors[-1] < 0.1 and factors[-1] >= 0.05
    constant = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule(constant, TrainConfig(schedule="constant", warmup=0))
    assert constant.param_groups[0]["lr"] == 1.0


@pytest.mark.parametrize("field, value, match", [
    ("task", "unsupervised", "task"), ("backend", "gpu", "backend"), ("amp", "fp8", "amp"),
    ("batch_size", 0, "batch_size"), ("schedule", "step", "schedule"), ("dtype", "float16", "dtype"),
    ("log", "wandb", "log"),
])
def test_bad_config(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{field: value}).resolved()


def test_fp16_on_cpu_is_refused(tmp_path):
    with pytest.raises(ValueError, match="fp16"):
        train(_config(tmp_path, "fp16", amp="fp16", steps=1))


@pytest.mark.cuda
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cuda_amp_run(tmp_path, amp):
    result = train(_config(tmp_path, f"cuda-{amp}", device="cuda", amp=amp, backend="auto", steps=10))
    assert all(math.isfinite(v) for v in result["history"]["loss"])


@pytest.mark.parametrize("task", ["supervised", "self-supervised"])
def test_tasks_accept_a_compiled_network(task):
    """--compile hands the task a torch.compile wrapper, which has no len(): it must not be truth-tested."""
    config = TrainConfig(task=task, data="synthetic", backend="reference")
    t = build_task(config, max_depth=10.0)
    t.nets = {**t.modules(), "model": torch.compile(t.model, backend="eager")}
    batch = {"image": torch.rand(2, 3, 64, 64), "sources": torch.rand(2, 2, 3, 64, 64)}
    out = t.forward(batch)
    assert out["depth" if task == "supervised" else "disp0"].shape[-2:] == (64, 64)


def test_train_restores_process_wide_switches(tmp_path):
    """A CPU run turns on deterministic algorithms and may set the thread count; the caller gets its own back."""
    threads = torch.get_num_threads()
    assert not torch.are_deterministic_algorithms_enabled()
    train(_config(tmp_path, "switches", steps=2, threads=1))
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.get_num_threads() == threads


def test_zoe_trains_with_segmentation_distillation_and_logs_it(tmp_path):
    """--arch zoe --seg-weight 0.1 on the synthetic scenes (which have labels): the segmentation loss is a logged
    part, the total is SILog + contrastive + 0.1 x segmentation, the head is saved with the model, and prediction
    does not run it."""
    result = train(_config(tmp_path, "seg", arch="zoe", steps=4, seg_weight=0.1))
    history = result["history"]
    assert {"silog", "contrastive", "segmentation"} <= set(history)
    for k in range(4):
        want = history["silog"][k] + history["contrastive"][k] + 0.1 * history["segmentation"][k]
        assert history["loss"][k] == pytest.approx(want, rel=1e-5)
    assert all(math.isfinite(v) and v > 0 for v in history["segmentation"])
    reloaded, config, _ = load_checkpoint(result["files"]["checkpoint"])
    assert config.seg_weight == 0.1 and reloaded.model.seg_head is not None
    calls = []
    reloaded.model.seg_head.register_forward_hook(lambda *a: calls.append(1))
    reloaded.predict(torch.rand(1, 3, config.height, config.width))
    assert not calls
    resumed = train(_config(tmp_path, "seg", arch="zoe", steps=6), resume=result["files"]["checkpoint"])
    assert len(resumed["history"]["segmentation"]) == 6  # the saved seg_weight (and head) carry on


def test_seg_weight_defaults_and_off(tmp_path):
    assert TrainConfig(arch="zoe", data="synthetic").resolved().seg_weight == 0.1  # seed 003's lambda_dis
    assert TrainConfig(arch="zoe", data="nyu").resolved().seg_weight == 0.0  # no labels there
    assert TrainConfig(data="synthetic").resolved().seg_weight == 0.0  # ltdepth has no segmentation head
    task = build_task(TrainConfig(arch="zoe", data="synthetic", seg_weight=0.0, model=TINY["zoe"]))
    assert task.model.seg_head is None and task.seg_loss is None
    with pytest.raises(ValueError, match="--arch zoe"):
        TrainConfig(data="synthetic", seg_weight=0.1).resolved()
    with pytest.raises(ValueError, match="seg_weight"):
        TrainConfig(arch="zoe", seg_weight=-1.0).resolved()


def test_seg_weight_on_data_without_labels_stops_before_training(tmp_path):
    from depthmetric.training.data import SyntheticScenes
    from depthmetric.training.config import MissingLabels

    scenes = SyntheticScenes(4, height=48, width=64, sources=0)
    unlabelled = [{k: v for k, v in scenes[i].items() if k != "labels"} for i in range(4)]  # a list: no .classes
    with pytest.raises(MissingLabels, match="has no segmentation labels"):
        train(_config(tmp_path, "nolabels", arch="zoe", steps=2, seg_weight=0.1),
              datasets=(unlabelled, unlabelled, None))
    assert not (tmp_path / "nolabels" / "checkpoint.pt").exists()
