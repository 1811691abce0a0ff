"""The training application under torchrun (2 gloo processes on the CPU), against one process; its config
files, TensorBoard logs and checkpoint safety.

Equivalence: K steps on 2 ranks of batch b reach the parameters of one process of batch 2b (float64, 1e-9).
That needs every random draw to agree (augmentation per item, shifts from rank 0), BatchNorm to normalise
alike (torch's SyncBatchNorm is GPU-only, so ``--freeze-bn`` on the CPU) and the contrastive loss's pairs to
be the same: ``DistributedSampler`` gives the ranks the one-process batch's images in another order, which
changes which images pair across the batch, so the run uses within-image samples only (``--metric-across 0``).
"""
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

import depthmetric as dm
from depthmetric.training import load_checkpoint
from depthmetric.training.checkpoint import read_checkpoint
from depthmetric.training.cli import main

TINY = '{"width_mult": 0.35, "stages": 3, "blocks_per_stage": 1, "decoder_channels": 16, "features": 8}'
BACKEND = "cpu" if dm.build_info()["compiled"] else "reference"
RUN = ["--data", "synthetic", "--height", "48", "--width", "64", "--model", TINY, "--threads", "1", "--quiet",
       "--dtype", "float64", "--freeze-bn", "--metric-across", "0", "--backend", BACKEND, "--steps", "3",
       "--warmup", "1", "--eval-every", "2", "--no-figure"]


def torchrun(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "depthmetric", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("torchrun")
    torchrun("train", *RUN, "--batch-size", "2", "--out", str(folder / "ddp"))
    assert main(["train", *RUN, "--batch-size", "4", "--out", str(folder / "one")]) == 0
    return folder


def test_two_ranks_reach_the_parameters_of_one_process(runs):
    ddp = read_checkpoint(str(runs / "ddp" / "checkpoint.pt"))
    one = read_checkpoint(str(runs / "one" / "checkpoint.pt"))
    assert ddp["step"] == one["step"] == 3
    for name, tensor in one["models"]["model"]["state"].items():
        torch.testing.assert_close(ddp["models"]["model"]["state"][name], tensor, rtol=1e-9, atol=1e-11,
                                   msg=lambda m: f"{name}: {m}")
    torch.testing.assert_close(torch.tensor(ddp["history"]["loss"]), torch.tensor(one["history"]["loss"]),
                               rtol=1e-9, atol=0)


def test_run_folder_keeps_the_resolved_config(runs):
    config = json.loads((runs / "ddp" / "config.json").read_text())
    assert config["world_size"] == 2 and config["batch_size"] == 2 and config["height"] == 48
    results = json.loads((runs / "ddp" / "metrics.json").read_text())
    assert results["timing"]["world_size"] == 2


def test_evaluate_under_torchrun_prints_the_single_process_metrics(runs, capsys):
    checkpoint = str(runs / "one" / "checkpoint.pt")
    done = torchrun("evaluate", "--checkpoint", checkpoint, "--backend", BACKEND, "--out", str(runs / "ddp.json"))
    assert main(["evaluate", "--checkpoint", checkpoint, "--backend", BACKEND, "--out", str(runs / "one.json")]) == 0
    single_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert done.stdout.strip().splitlines()[-1] == single_line  # rank 0 alone prints
    ddp, one = (json.loads((runs / f"{n}.json").read_text())["metrics"] for n in ("ddp", "one"))
    assert ddp["images"] == one["images"] == 8
    for name, value in one.items():
        assert ddp[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name


def test_resume_under_torchrun(runs):
    more = [("4" if previous == "--steps" else arg) for previous, arg in zip([None, *RUN], RUN)]
    torchrun("train", *more, "--batch-size", "2", "--resume", str(runs / "ddp" / "checkpoint.pt"))
    state = read_checkpoint(str(runs / "ddp" / "checkpoint.pt"))
    assert state["step"] == 4 and state["history"]["step"] == [1, 2, 3, 4]


def test_config_file_and_tensorboard_log(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("data: synthetic\nheight: 48\nwidth: 64\nsteps: 5\nbatch-size: 2\nthreads: 1\n"
                      f"model: {TINY}\nbackend: reference\nprogress: false\nfigure: true\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--steps", "2", "--log", "tensorboard", "--out", str(out)]) == 0
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["steps"] == 2 and resolved["batch_size"] == 2 and resolved["log"] == "tensorboard"
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0}).Reload()
    tags = log.Tags()
    assert {"loss/total", "loss/silog", "loss/contrastive", "lr", "time/step_seconds", "eval/AbsRel"} <= set(tags["scalars"])
    assert "figure" in tags["images"]


def test_config_file_rejects_unknown_options(tmp_path):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"stepz": 3}))
    with pytest.raises(ValueError, match="unknown options \\['stepz'\\]"):
        main(["train", "--config", str(config)])


def test_checkpoint_with_a_pickled_object_is_refused(tmp_path, runs):
    """weights_only loading: a shared checkpoint cannot run code; one carrying a callable is refused."""
    state = torch.load(runs / "one" / "checkpoint.pt", weights_only=True)
    state["history"]["hook"] = pathlib.Path  # any pickled class: weights_only refuses to build it
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(ValueError, match="pickled object: refused"):
        load_checkpoint(str(bad))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((runs / "one" / "checkpoint.pt").read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(str(truncated))
