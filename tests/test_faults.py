"""Faults of a real training run: preemption (SIGTERM/SIGINT), SIGKILL and resume, an unwritable checkpoint, a
loss called on one rank, a NaN on one rank of a torchrun job, and the last hostile inputs of the ops.

The training runs are tiny (48x64 synthetic images, a 3-stage LTDepth, float64, 1 thread); the subprocess runs
pay for their start (importing torch), the steps take a few tens of milliseconds.
"""
import contextlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import depthmetric as dm
from depthmetric.training import load_checkpoint
from depthmetric.training.checkpoint import read_checkpoint, save_checkpoint
from depthmetric.training.cli import main

TINY = '{"width_mult": 0.35, "stages": 3, "blocks_per_stage": 1, "decoder_channels": 16, "features": 8}'
BACKEND = "cpu" if dm.build_info()["compiled"] else "reference"
RUN = ["--data", "synthetic", "--height", "48", "--width", "64", "--batch-size", "2", "--model", TINY,
       "--threads", "1", "--quiet", "--dtype", "float64", "--backend", BACKEND, "--warmup", "1", "--no-figure"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}  # no re-exec by the CLI


_STARTED: list[subprocess.Popen] = []


def spawn(command: list[str], stderr=subprocess.PIPE) -> subprocess.Popen:
    """``command`` in a new process group, its output captured; ended with the test (``no_process_left``)."""
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=stderr, text=True,
                               start_new_session=True)
    _STARTED.append(process)
    return process


@pytest.fixture(autouse=True)
def no_process_left():
    """Whatever a test's outcome (a failed wait, a timeout), the processes it started end with it: SIGTERM
    first (torchrun passes it on to its ranks), then SIGKILL to the whole process group."""
    yield
    while _STARTED:
        process = _STARTED.pop()
        if process.poll() is None:
            process.terminate()
            try:
                process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()


def launch(*args: str) -> subprocess.Popen:
    """``python -m depthmetric train RUN args`` in a new process, its output (stderr included) captured."""
    return spawn([sys.executable, "-m", "depthmetric", "train", *RUN, *args], stderr=subprocess.STDOUT)


def wait_for(path, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.02)


def torchrun_script(tmp_path, source: str, timeout: int = 120) -> tuple[subprocess.CompletedProcess, float]:
    """Runs ``source`` on 2 gloo CPU processes under torchrun; returns the result and its wall time."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(source))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    start = time.monotonic()
    process = spawn(command)
    output, errors = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(command, process.returncode, output, errors), time.monotonic() - start


# ------------------------------------------------------------------------------------------ preemption

def test_sigterm_between_checkpoints_writes_the_step_reached(tmp_path):
    out = tmp_path / "run"
    run = launch("--steps", "500", "--eval-every", "1000", "--save-every", "4", "--out", str(out))
    wait_for(out / "checkpoint.pt", run)  # step 4 written: the loop is running
    time.sleep(random.uniform(0, 0.2))
    run.send_signal(signal.SIGTERM)
    output, _ = run.communicate(timeout=60)
    assert run.returncode == 128 + signal.SIGTERM, output
    stopped = [line for line in output.splitlines() if line.startswith("stopped by")]
    assert len(stopped) == 1, output
    state = read_checkpoint(str(out / "checkpoint.pt"))
    step = state["step"]
    assert stopped[0] == (f"stopped by SIGTERM at step {step}: wrote {out / 'checkpoint.pt'}; continue with "
                          f"--resume {out / 'checkpoint.pt'}")
    assert 4 <= step < 500 and state["history"]["step"] == list(range(1, step + 1))
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.json"]  # no .tmp left


def test_a_second_signal_exits_at_once():
    code = ("import os, signal, time\nfrom depthmetric.training.runtime import StopSignals\n"
            "with StopSignals() as s:\n    os.kill(os.getpid(), signal.SIGINT)\n    time.sleep(0.1)\n"
            "    assert s.signum == signal.SIGINT\n    os.kill(os.getpid(), signal.SIGTERM)\n    time.sleep(30)\n")
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert time.monotonic() - start < 25


def test_signal_handlers_are_restored_after_a_run(tmp_path):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    assert main(["train", *RUN, "--steps", "1", "--out", str(tmp_path / "run")]) == 0
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_sigkill_then_resume_is_the_uninterrupted_run(tmp_path):
    args = ["--steps", "12", "--eval-every", "5", "--save-every", "2"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert main(["train", *RUN, *args, "--out", str(straight)]) == 0
    run = launch(*args, "--out", str(killed))
    wait_for(killed / "checkpoint.pt", run)
    time.sleep(random.uniform(0, 0.3))  # anywhere after the first checkpoint, writing one included
    run.kill()
    run.communicate(timeout=60)
    assert run.returncode == -signal.SIGKILL
    assert read_checkpoint(str(killed / "checkpoint.pt"))["step"] < 12  # a run to resume
    assert main(["train", *RUN, *args, "--out", str(killed), "--resume", str(killed / "checkpoint.pt")]) == 0
    a, b = (read_checkpoint(str(folder / "checkpoint.pt")) for folder in (straight, killed))
    assert a["step"] == b["step"] == 12
    for name, tensor in a["models"]["model"]["state"].items():
        torch.testing.assert_close(b["models"]["model"]["state"][name], tensor, rtol=1e-12, atol=1e-12,
                                   msg=lambda m: f"{name}: {m}")
    assert [e["step"] for e in b["eval_history"]] == [0, 5, 10, 12]
    for before, after in zip(a["eval_history"], b["eval_history"]):
        assert after == pytest.approx(before, rel=1e-12, abs=1e-12)
    assert b["history"]["loss"] == pytest.approx(a["history"]["loss"], rel=1e-12, abs=1e-12)


# ---------------------------------------------------------------------------------------- checkpoints

@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A 3-step run that kept its 2 newest checkpoints (one every step), set in its config file."""
    folder = tmp_path_factory.mktemp("faults")
    (folder / "run.yaml").write_text("save-every: 1\nkeep: 2\n")
    out = folder / "run"
    assert main(["train", *RUN, "--config", str(folder / "run.yaml"), "--steps", "3", "--out", str(out)]) == 0
    return out


def test_keep_holds_the_newest_checkpoints(saved):
    assert sorted(p.name for p in saved.glob("checkpoint*")) == [
        "checkpoint-step000002.pt", "checkpoint-step000003.pt", "checkpoint.pt"]
    assert os.path.samefile(saved / "checkpoint.pt", saved / "checkpoint-step000003.pt")
    assert read_checkpoint(str(saved / "checkpoint-step000002.pt"))["step"] == 2


@pytest.mark.parametrize("block", ["tmp is a folder", "parent is a file"])
def test_unwritable_checkpoint_names_its_path_and_keeps_the_previous(saved, tmp_path, block):
    task, config, state = load_checkpoint(str(saved / "checkpoint.pt"))
    if block == "tmp is a folder":  # the disk refuses the write: the previous checkpoint must survive
        path = tmp_path / "checkpoint.pt"
        path.write_bytes((saved / "checkpoint.pt").read_bytes())
        (tmp_path / "checkpoint.pt.tmp").mkdir()
    else:
        (tmp_path / "file").write_text("")
        path = tmp_path / "file" / "checkpoint.pt"
    previous = path.read_bytes() if path.exists() else None
    with pytest.raises(OSError, match=f"could not write the checkpoint {path}"):
        save_checkpoint(str(path), task, None, 4, config, state["history"], state["eval_history"],
                        state["metrics_before"])
    if previous is not None:
        assert path.read_bytes() == previous


# ---------------------------------------------------------------------------------------- distributed

def test_sigterm_under_torchrun_checkpoints_the_step_every_rank_reached(tmp_path):
    """torchrun passes its SIGTERM on to every rank; they agree on the step, rank 0 writes it, none fails."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "depthmetric", "train", *RUN, "--freeze-bn", "--steps", "500", "--eval-every", "1000",
               "--save-every", "4", "--out", str(out)]
    run = spawn(command)
    wait_for(out / "checkpoint.pt", run)
    time.sleep(random.uniform(0, 0.2))
    run.send_signal(signal.SIGTERM)
    output, errors = run.communicate(timeout=90)
    step = read_checkpoint(str(out / "checkpoint.pt"))["step"]
    assert output.splitlines() == [f"stopped by SIGTERM at step {step}: wrote {out / 'checkpoint.pt'}; continue "
                                   f"with --resume {out / 'checkpoint.pt'}"], output + errors[-3000:]
    assert "[rank0]: Traceback" not in errors and "[rank1]: Traceback" not in errors, errors[-3000:]


def test_a_loss_on_rank_0_alone_returns(tmp_path):
    done, seconds = torchrun_script(tmp_path, """
        import torch, torch.distributed as dist
        import depthmetric as dm
        dist.init_process_group("gloo")
        if dist.get_rank() == 0:  # e.g. a log line: the other rank never calls the loss
            print("loss", float(dm.SILogLoss()(torch.rand(2, 1, 8, 8) + 1, torch.rand(2, 1, 8, 8) + 1)), flush=True)
        dist.barrier()
        dist.destroy_process_group()
    """, timeout=90)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "loss " in done.stdout


def test_a_nan_on_rank_1_ends_the_job_within_seconds(tmp_path):
    done, seconds = torchrun_script(tmp_path, """
        import torch, torch.distributed as dist
        import depthmetric as dm
        dist.init_process_group("gloo")
        rank = dist.get_rank()
        for step in range(3):  # a DDP-like loop: each rank's loss, then a collective
            pred = torch.rand(2, 1, 8, 8, dtype=torch.float64) + 1
            if rank == 1 and step == 1:
                pred[0, 0, 0, 0] = float("nan")
            loss = dm.SILogLoss()(pred, torch.rand(2, 1, 8, 8, dtype=torch.float64) + 1)
            dist.all_reduce(loss.detach())
        dist.destroy_process_group()
    """)
    assert done.returncode != 0
    assert seconds < 60, seconds
    assert "ValueError: pred contains NaN or Inf values (rank 1)" in done.stdout + done.stderr


# ------------------------------------------------------------------------------------- hostile inputs

def test_depth_metrics_ids_on_the_meta_device_name_themselves():
    """The registry's ops are covered by test_hostile_tensors.py; DepthMetrics.update's ids here."""
    with pytest.raises(ValueError, match="ids is on meta but pred is on cpu"):
        dm.metrics.DepthMetrics(crop=None).update(torch.rand(2, 1, 4, 4) + 1, torch.rand(2, 1, 4, 4) + 1,
                                                  ids=torch.zeros(2, dtype=torch.long, device="meta"))


def test_one_process_nan_message_names_no_rank():
    with pytest.raises(ValueError, match=r"^pred contains NaN or Inf values$"):
        dm.SILogLoss()(torch.full((1, 1, 4, 4), float("nan")), torch.ones(1, 1, 4, 4))
