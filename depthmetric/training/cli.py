"""Command line: ``python -m depthmetric train | evaluate | predict | compare | ablate`` (also the ``depthmetric``
command).

``python -m depthmetric train`` with no arguments is the main job: LTDepth trained with SILog + the fused
multi-range contrastive loss on the NYU samples (``pip install ./samples``), metrics before and after, a figure
and a JSON of the run under ``runs/``. ``torchrun --standalone --nproc_per_node=N -m depthmetric train ...``
trains on N processes (DDP; ``evaluate`` likewise); ``--config run.yaml`` sets any option by name.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

__all__ = ["main", "build_parser"]


def _bool(value: str) -> bool:
    if value.lower() in ("on", "true", "1", "yes"):
        return True
    if value.lower() in ("off", "false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected on/off, got {value!r}")


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    from .. import BACKENDS
    from .config import AMP, ARCHS, DTYPES, LOGGERS, SCHEDULES, TASKS, TrainConfig

    d = TrainConfig()
    p.add_argument("--config", default=None, metavar="FILE",
                   help="a .yaml/.yml or .json file of options by name (e.g. steps: 500); flags given on the "
                        "command line win")
    p.add_argument("--task", choices=TASKS, default=d.task,
                   help="supervised: LTDepth, SILog + weight x multi-range contrastive; self-supervised: DepthNet + "
                        "PoseNet, min-reprojection + smoothness (default: %(default)s)")
    p.add_argument("--arch", choices=sorted({a for archs in ARCHS.values() for a in archs}), default=None,
                   help="depth network: " + "; ".join(f"{task}: {' | '.join(archs)}" for task, archs in ARCHS.items())
                        + " (default: the first). zoe: LTDepth's encoder-decoder with ZoeDepth's metric bins head; "
                          "sql: SPIdepth's self-query layer")
    p.add_argument("--data", default=None,
                   help="nyu | kitti | synthetic | <path>: the samples (pip install ./samples), the procedural "
                        "scenes, or a data set on disk (default: nyu for supervised, kitti for self-supervised)")
    p.add_argument("--data-root", default=None, help="root of a full data set (NYU Depth V2 / KITTI raw as "
                                                     "downloaded) for --data nyu|kitti")
    p.add_argument("--train-split", default=None, help="with --data-root: BTS-style split file of the training "
                                                       "images (e.g. nyudepthv2_train_files_with_gt.txt)")
    p.add_argument("--eval-split", default=None, help="with --data-root: split file of the evaluation images")
    p.add_argument("--depth-root", default=None, help="folder of the split files' depth paths (default: the "
                                                      "data root)")
    p.add_argument("--height", type=int, default=None, help="training height (default 96 on kitti or "
                                                            "self-supervised, else 120)")
    p.add_argument("--width", type=int, default=None, help="training width (default 320 on kitti, else 128 "
                                                           "self-supervised, 160 supervised)")
    p.add_argument("--steps", type=int, default=d.steps, help="total optimisation steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="images per process; under torchrun the global batch is N times it (default: %(default)s)")
    p.add_argument("--workers", type=int, default=d.workers, help="DataLoader worker processes (default: %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="AdamW peak learning rate (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="default: %(default)s")
    p.add_argument("--warmup", type=int, default=d.warmup, help="linear warm-up steps (default: %(default)s)")
    p.add_argument("--schedule", choices=SCHEDULES, default=d.schedule, help="default: %(default)s")
    p.add_argument("--metric-loss", type=_bool, default=d.metric_loss, metavar="on|off",
                   help="add the multi-range contrastive loss on LTDepth's feature map; off = SILog-only baseline "
                        "(default: on)")
    p.add_argument("--metric-weight", type=float, default=d.metric_weight,
                   help="weight of the contrastive loss, L = SILog + weight x L_re (default: %(default)s)")
    p.add_argument("--seg-weight", type=float, default=None, help="zoe: weight of the segmentation distillation "
                   "(U-Net head, Dice + Focal on the labels; 0: off; default 0.1 on --data synthetic, else 0)")
    p.add_argument("--metric-preset", default=None,
                   help="MultiRangeContrastiveLoss preset (default nyu-lt; kitti-lt for kitti)")
    p.add_argument("--metric-across", type=int, default=d.metric_across,
                   help="across-image samples of the contrastive loss (default: %(default)s, the paper's 10 + 4)")
    p.add_argument("--backend", choices=BACKENDS, default=d.backend,
                   help="loss implementation: compiled kernels (auto/cpu/cuda) or the pure-PyTorch reference "
                        "(default: %(default)s)")
    p.add_argument("--device", default=d.device,
                   help="cpu, cuda, cuda:1, ... (under torchrun cuda is each rank's own GPU) (default: %(default)s)")
    p.add_argument("--dtype", choices=DTYPES, default=d.dtype,
                   help="precision of model, data and losses (default: %(default)s)")
    p.add_argument("--amp", choices=AMP, default=d.amp, help="autocast the network: bf16 or fp16 (CUDA) "
                                                             "(default: %(default)s)")
    p.add_argument("--compile", action="store_true", help="torch.compile the depth network")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the model and every random stream "
                                                            "(default: %(default)s)")
    p.add_argument("--init-ulps", type=int, default=d.init_ulps,
                   help="move every initial weight this many ulps: how far rounding alone takes a run apart")
    p.add_argument("--no-deterministic", dest="deterministic", action="store_false",
                   help="do not call torch.use_deterministic_algorithms on CPU")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--eval-every", type=int, default=d.eval_every,
                   help="evaluate (and checkpoint) every N steps (default: %(default)s)")
    p.add_argument("--save-every", type=int, default=d.save_every,
                   help="also write the checkpoint every N steps, evaluation or not (default: %(default)s: at "
                        "evaluations and the end only)")
    p.add_argument("--keep", type=int, default=d.keep,
                   help="keep the K newest checkpoints as <out>/checkpoint-stepNNNNNN.pt, checkpoint.pt being the "
                        "newest (default: %(default)s: checkpoint.pt alone)")
    p.add_argument("--no-augment", dest="augment", action="store_false", help="no flips/colour jitter/crops")
    p.add_argument("--freeze-bn", action="store_true",
                   help="BatchNorm layers keep their running statistics while training (on several CPU processes, "
                        "where torch has no SyncBatchNorm, this makes every rank normalise alike)")
    p.add_argument("--model", default=None, metavar="JSON",
                   help='constructor overrides of the --arch model, e.g. \'{"width_mult": 1.0, "stages": 5}\'')
    p.add_argument("--out", default=None, help="output folder (default: runs/<name or timestamp>)")
    p.add_argument("--name", default=None, help="run name for the default output folder")
    p.add_argument("--resume", default=None, metavar="CHECKPOINT", help="continue a run from its checkpoint.pt")
    p.add_argument("--no-figure", dest="figure", action="store_false", help="skip the PNG figure")
    p.add_argument("--log", choices=LOGGERS, default=d.log,
                   help="tensorboard: also write scalars and the figure to <out>/tensorboard (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines")


def _config_from_args(args, parser) -> tuple:
    """The TrainConfig of the command line over the ``--config`` file's values (flags given win), and the
    checkpoint to resume from."""
    from .config import TrainConfig, load_config_file

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in fields and k != "model"}
    values = load_config_file(args.config) if args.config else {}
    resume = values.pop("resume", None)
    defaults = {k: parser.get_default(k) for k in given}
    values.update({k: v for k, v in given.items() if k not in values or v != defaults[k]})
    if args.model:
        values["model"] = json.loads(args.model)
    values.setdefault("model", {})
    if args.quiet:
        values["progress"] = False
    return TrainConfig(**values), args.resume or resume


def _cmd_train(args) -> int:
    from .loop import train

    config, resume = _config_from_args(args, args.parser)
    train(config, resume=resume)
    return 0


def _cmd_evaluate(args) -> int:
    from .checkpoint import load_checkpoint
    from .evaluation import evaluate, figure_rows, format_metrics
    from .pipeline import load_data
    from .runtime import start, stop

    overrides = {"backend": args.backend, "device": args.device}
    if args.data:
        overrides["data"] = args.data
    for name in ("data_root", "train_split", "eval_split", "depth_root", "dtype"):
        if getattr(args, name, None):
            overrides[name] = getattr(args, name)
    runtime = start(args.device)  # under torchrun each rank evaluates its share of the images
    try:
        overrides["device"] = str(runtime.device)
        task, config, _ = load_checkpoint(args.checkpoint, **overrides)
        _, eval_set, eval_dataset = load_data(config)
        metrics = evaluate(task, eval_set, config, eval_dataset, runtime.device, runtime, limit=args.limit)
    finally:
        stop(runtime)
    if not runtime.main:
        return 0
    print(f"{metrics['images']} images of {config.data}: {format_metrics(metrics)}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"checkpoint": args.checkpoint, "data": config.data, "metrics": metrics}, f, indent=1)
    if args.figure:
        from .figures import training_figure

        rows = figure_rows(task, eval_set, config, eval_dataset, runtime.device, keep=3)
        training_figure(rows, path=args.figure, title=f"{args.checkpoint} on {config.data}")
    return 0


def _cmd_predict(args) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from .checkpoint import load_checkpoint
    from .evaluation import predict_image
    from .figures import save_depth_png

    task, config, _ = load_checkpoint(args.checkpoint, device=args.device)
    os.makedirs(args.out, exist_ok=True)
    for path in args.images:
        rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
        depth = predict_image(task, config, torch.from_numpy(rgb).permute(2, 0, 1))
        out = os.path.join(args.out, os.path.splitext(os.path.basename(path))[0] + "_depth.png")
        save_depth_png(depth, out, vmin=args.vmin, vmax=args.vmax)
        if args.npy:
            np.save(os.path.splitext(out)[0] + ".npy", depth.numpy())
        print(f"{path}: depth {float(depth.min()):.2f}-{float(depth.max()):.2f} m -> {out}")
    return 0


def _cmd_compare(args) -> int:
    """The same training run with the compiled kernels, the reference losses and the reference from weights
    one ulp away (see ``experiments.compare``)."""
    from .experiments import compare

    out = args.out or os.path.join("runs", "compare-" + time.strftime("%Y%m%d-%H%M%S"))
    compare(args.steps, args.seed, out, args.dtype, args.train_args)
    return 0


def _cmd_ablate(args) -> int:
    from .experiments import ablate
    from .runtime import start, stop

    config, _ = _config_from_args(args, args.parser)
    runtime = start(config.device)  # under torchrun: every rank runs the sweep, each run on all ranks
    try:
        ablate(config, args.seeds, args.weights, args.out or os.path.join("runs", "ablate"), runtime)
    finally:
        stop(runtime)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .. import BACKENDS, __version__
    from .config import DTYPES

    parser = argparse.ArgumentParser(
        prog="depthmetric", description="Train, evaluate and run depth models with depthmetric's fused losses.")
    parser.add_argument("--version", action="version", version=f"depthmetric {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a depth model (no arguments: the main job on the NYU samples)")
    _add_train_arguments(p)
    p.set_defaults(func=_cmd_train, parser=p)

    p = sub.add_parser("evaluate", help="metrics of a checkpoint on a data set")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", default=None, help="nyu | kitti | synthetic | <path> (default: the checkpoint's)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--eval-split", default=None, help="with --data-root: split file of the evaluation images")
    p.add_argument("--depth-root", default=None)
    p.add_argument("--backend", default="auto", choices=BACKENDS)
    p.add_argument("--device", default="cpu")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N images only")
    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help="precision of the evaluation (default: the checkpoint's)")
    p.add_argument("--out", default=None, help="write the metrics as JSON here")
    p.add_argument("--figure", default=None, help="write a PNG of the first predictions here")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("predict", help="coloured depth PNG of images")
    p.add_argument("images", nargs="+", help="RGB image files")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", default=os.path.join("runs", "predict"),
                   help="output folder of <image>_depth.png (default: %(default)s)")
    p.add_argument("--npy", action="store_true", help="also write the depth in metres as .npy")
    p.add_argument("--vmin", type=float, default=None, help="colour range (default: robust range of the map)")
    p.add_argument("--vmax", type=float, default=None)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("compare", help="the same run with the compiled kernels and the reference losses: loss "
                                       "curves, time and peak memory")
    p.add_argument("--steps", type=int, default=100, help="default: %(default)s")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="precision of the runs (float64: the backends' curves agree to ~1e-9) (default: %(default)s)")
    p.add_argument("--out", default=None, help="default: runs/compare-<timestamp>")
    p.add_argument("train_args", nargs=argparse.REMAINDER,
                   help="further arguments for both train runs (after --), e.g. -- --data synthetic")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("ablate", help="the paper's ablation of the regulariser (none, uniform, multi-range, "
                                      "optionally a weight sweep) over seeds, on held-out data")
    _add_train_arguments(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="default: %(default)s")
    p.add_argument("--weights", type=float, nargs="*", default=[],
                   help="also multi-range with these --metric-weight values, e.g. 0.1 0.3")
    p.set_defaults(func=_cmd_ablate, parser=p, steps=200)
    return parser


def _passive_openmp(argv: list[str] | None) -> None:
    """Re-run the command with ``OMP_WAIT_POLICY=PASSIVE`` unless the user set it (only from the real command
    line, ``argv=None``). OpenMP's default spinning workers lose their time slices on a shared machine:
    on 2 cores shared with other jobs a training step took 6.4 s with spinning and 0.7 s without. The
    variable must be set before torch loads OpenMP, hence a fresh process."""
    if argv is not None or "OMP_WAIT_POLICY" in os.environ or os.environ.get("DEPTHMETRIC_NO_REEXEC"):
        return
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "DEPTHMETRIC_NO_REEXEC": "1"}
    os.execve(sys.executable, [sys.executable, "-m", "depthmetric", *sys.argv[1:]], env)


def main(argv: list[str] | None = None) -> int:
    _passive_openmp(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "train_args", None) and args.train_args[0] == "--":
        args.train_args = args.train_args[1:]
    try:
        return args.func(args)
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] in ("depthmetric", "torch"):
            raise
        print(f"depthmetric {args.command}: the training application needs the [train] extra (missing module "
              f"{error.name!r}): pip install 'depthmetric[train]'", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as error:
        from .config import MissingLabels
        from .data.samples import SamplesNotInstalled  # loaded by now: the command got as far as its data

        if not isinstance(error, (SamplesNotInstalled, MissingLabels)):
            raise
        print(f"depthmetric: {error}", file=sys.stderr)  # a set-up step, not a bug: one line, no traceback
        return 2


if __name__ == "__main__":
    sys.exit(main())
