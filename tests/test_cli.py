"""The command line: help, a 3-step training run writing its outputs, evaluate, predict, resume."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import depthmetric as dm

from depthmetric.training.cli import build_parser, main

from .registry import assert_same_state

TINY = '{"width_mult": 0.35, "stages": 3, "blocks_per_stage": 1, "decoder_channels": 16, "features": 8}'
RUN = ["--data", "synthetic", "--height", "48", "--width", "64", "--batch-size", "2", "--backend", "reference",
       "--model", TINY, "--threads", "1", "--quiet"]


def test_module_help_exits_zero():
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}  # as the CLI sets it: no re-exec, one torch import
    done = subprocess.run([sys.executable, "-m", "depthmetric", "train", "--help"], capture_output=True, text=True,
                          env=env)
    assert done.returncode == 0
    assert "--metric-weight" in done.stdout and "--backend" in done.stdout


# The [train] extra's modules, hidden from a child process as if only torch were installed.
_WITHOUT_TRAIN_EXTRA = """
import sys
class Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("numpy", "PIL", "tqdm", "matplotlib", "tensorboard", "yaml"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Hide())
from depthmetric.training.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("argv, code, says", [
    (["--version"], 0, f"depthmetric {dm.__version__}"),
    (["--help"], 0, "train"),
    (["train", "--help"], 0, "--arch"),
    (["train", "--steps", "1"], 2, "needs the [train] extra (missing module 'numpy'): pip install 'depthmetric[train]'"),
])
def test_command_line_without_the_train_extra(argv, code, says):
    done = subprocess.run([sys.executable, "-c", _WITHOUT_TRAIN_EXTRA, *argv], capture_output=True, text=True,
                          env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    assert done.returncode == code, done.stderr
    assert says in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["predict"], ["compare"], ["ablate"]])
def test_help_of_each_command(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: depthmetric" in capsys.readouterr().out


def test_train_defaults_are_the_main_job():
    args = build_parser().parse_args(["train"])
    assert args.task == "supervised" and args.data is None and args.metric_loss is True and args.backend == "auto"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *RUN, "--steps", "3", "--eval-every", "2", "--out", str(out)]) == 0
    return out


def test_three_step_run_writes_its_outputs(run_dir):
    for name in ("figure.png", "metrics.json", "checkpoint.pt", "config.json"):
        assert (run_dir / name).stat().st_size > 0, name
    results = json.loads((run_dir / "metrics.json").read_text())
    assert results["history"]["step"] == [1, 2, 3]
    assert [e["step"] for e in results["eval_history"]] == [0, 2, 3]
    assert set(results["metrics_before"]) >= {"AbsRel", "RMSE", "delta1"}
    with Image.open(run_dir / "figure.png") as figure:
        assert figure.size[0] > 800 and figure.size[1] > 600


def test_resume_from_the_command_line(run_dir, tmp_path):
    out = tmp_path / "resumed"
    assert main(["train", *RUN, "--steps", "5", "--out", str(out), "--resume", str(run_dir / "checkpoint.pt")]) == 0
    results = json.loads((out / "metrics.json").read_text())
    assert results["history"]["step"] == [1, 2, 3, 4, 5] and results["timing"]["steps_this_run"] == 2


def test_resume_from_the_command_line_ends_where_the_straight_run_ends(tmp_path):
    """float64, a cosine schedule after a 1-step warm-up: 4 steps straight (keeping the step-2 checkpoint), and
    2 + 2 resumed from it, end with the same weights, AdamW state and scheduler state."""
    common = [*RUN, "--steps", "4", "--warmup", "1", "--schedule", "cosine", "--dtype", "float64",
              "--save-every", "2", "--keep", "2", "--no-figure", "--eval-every", "1000"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["train", *common, "--out", str(straight)]) == 0
    middle = straight / "checkpoint-step000002.pt"
    assert main(["train", *common, "--out", str(resumed), "--resume", str(middle)]) == 0
    want, got = (torch.load(d / "checkpoint.pt", weights_only=True) for d in (straight, resumed))
    assert torch.load(middle, weights_only=True)["step"] == 2 and want["step"] == got["step"] == 4
    for part in ("models", "optimizer", "scheduler"):
        assert_same_state(got[part], want[part], part)


def test_evaluate_and_predict(run_dir, tmp_path, capsys):
    metrics = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(run_dir / "checkpoint.pt"), "--backend", "reference",
                 "--out", str(metrics)]) == 0
    assert "AbsRel" in capsys.readouterr().out
    assert json.loads(metrics.read_text())["metrics"]["images"] > 0

    image = tmp_path / "image.png"
    Image.fromarray((np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)).save(image)
    out = tmp_path / "predictions"
    assert main(["predict", str(image), "--checkpoint", str(run_dir / "checkpoint.pt"), "--out", str(out),
                 "--npy"]) == 0
    depth_png = out / "image_depth.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json", "image.png", "predictions"]  # beside: nothing
    with Image.open(depth_png) as png:
        assert png.size == (70, 50) and png.mode == "RGB"
    depth = np.load(os.path.splitext(depth_png)[0] + ".npy")
    assert depth.shape == (50, 70) and np.isfinite(depth).all() and depth.min() > 0


def test_bad_arguments_exit_nonzero():
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--metric-loss", "maybe"])
    assert exit_info.value.code == 2


def test_main_job_without_the_samples_says_in_one_line_what_to_install(tmp_path):
    # depthmetric_samples made unimportable, as where the distribution is not installed.
    code = ("import sys; sys.modules['depthmetric_samples'] = None; from depthmetric.training.cli import main; "
            f"sys.exit(main(['train', '--steps', '1', '--out', {str(tmp_path / 'run')!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "pip install ./samples" in done.stderr and "--data-root" in done.stderr


def test_ablate_writes_its_summary_and_resumes(tmp_path, capsys):
    out = tmp_path / "ablate"
    argv = ["ablate", *RUN, "--steps", "2", "--seeds", "0", "1", "--weights", "0.5", "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "ablation.json").read_text())
    assert list(summary["runs"]) == ["none", "uniform", "multi-range", "multi-range w=0.5"]
    assert all(len(runs) == 2 for runs in summary["runs"].values())
    assert summary["std"]["none"]["AbsRel"] >= 0 and (out / "ablation.png").stat().st_size > 0
    assert "AbsRel" in capsys.readouterr().out
    first = (out / "none" / "seed0" / "metrics.json").stat().st_mtime_ns
    assert main(argv) == 0  # a finished sweep: every run is read back, none trained again
    assert (out / "none" / "seed0" / "metrics.json").stat().st_mtime_ns == first
    assert json.loads((out / "ablation.json").read_text())["mean"] == summary["mean"]


@pytest.mark.skipif(not dm.build_info()["compiled"], reason="compare runs the compiled kernels")
def test_compare_reports_each_pair(tmp_path):
    out = tmp_path / "compare"
    backend = RUN.index("--backend")
    common = RUN[:backend] + RUN[backend + 2:]  # compare sets each run's backend itself
    assert main(["compare", "--steps", "2", "--dtype", "float64", "--out", str(out), "--", *common]) == 0
    runs = {name: json.loads((out / name / "config.json").read_text()) for name in ("kernel", "reference")}
    assert runs["kernel"]["backend"] == "auto" and runs["reference"]["backend"] == "reference"
    summary = json.loads((out / "compare.json").read_text())
    assert set(summary["pairs"]) == {"kernel vs reference", "reference vs reference+1ulp"}
    assert summary["pairs"]["kernel vs reference"]["max_rel_loss_diff"] < 1e-9
    assert summary["pairs"]["reference vs reference+1ulp"]["max_rel_loss_diff"] > 0
    assert (out / "compare.png").stat().st_size > 0


def test_seg_weight_on_the_command_line(tmp_path, capsys):
    """--arch zoe --seg-weight 0.1 trains on the synthetic scenes and logs the segmentation loss; on the NYU
    samples, which have no labels, the run stops before training with one line saying so."""
    zoe = '{"width_mult": 0.35, "stages": 3, "blocks_per_stage": 1, "decoder_channels": 16, "features": 8, ' \
          '"n_bins": 8, "bin_embedding_dim": 8}'
    common = [*RUN[:-4], zoe, "--threads", "1", "--quiet", "--arch", "zoe", "--steps", "2", "--no-figure"]
    out = tmp_path / "seg"
    assert main(["train", *common, "--seg-weight", "0.1", "--out", str(out)]) == 0
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert len(history["segmentation"]) == 2
    assert json.loads((out / "config.json").read_text())["seg_weight"] == 0.1
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--seg-weight" in capsys.readouterr().out
    nyu = [a if a != "synthetic" else "nyu" for a in common]
    code = ("import sys; from depthmetric.training.cli import main; "
            f"sys.exit(main(['train', *{nyu!r}, '--seg-weight', '0.1', '--out', {str(tmp_path / 'nyu')!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    if "pip install ./samples" in done.stderr:
        pytest.skip("the samples are not installed")
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "has no segmentation labels" in done.stderr, done.stderr
    assert not (tmp_path / "nyu" / "checkpoint.pt").exists()
