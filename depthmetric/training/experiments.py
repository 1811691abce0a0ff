"""Experiments made of several training runs: ``compare`` (the compiled kernels against the reference
losses, beside the drift float32 rounding alone causes) and ``ablate`` (MetricDepth's ablation of the
regulariser over seeds, on a training and a held-out split)."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

import numpy as np

from ..metrics import METRICS

__all__ = ["compare", "ablate", "VARIANTS"]


def _run_child(argv: list[str]) -> dict:
    """Run ``python -m depthmetric train ...`` in a fresh process (clean peak RSS) and read its results."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "depthmetric", "train", *argv], check=True)
    wall = time.perf_counter() - start
    with open(os.path.join(argv[argv.index("--out") + 1], "metrics.json")) as f:
        results = json.load(f)
    results["timing"]["process_wall_seconds"] = wall
    return results


def _pair(a: dict, b: dict) -> dict:
    """How far two runs' loss curves are apart."""
    x, y = np.asarray(a["history"]["loss"]), np.asarray(b["history"]["loss"])
    rel = np.abs(x - y) / np.maximum(np.abs(y), 1e-300)
    return {"max_abs_loss_diff": float(np.abs(x - y).max()), "max_rel_loss_diff": float(rel.max()),
            "steps_within_rel_1e-4": int(np.argmax(rel > 1e-4)) if (rel > 1e-4).any() else int(x.size),
            "rel_loss_diff": rel.tolist()}


def compare(steps: int, seed: int, out: str, dtype: str, train_args: list[str]) -> dict:
    """The same run with the compiled kernels, with the reference losses, and with the reference losses from
    initial weights one ulp away: the third pair measures what float rounding alone does to a run."""
    runs = {}
    for name, extra in (("kernel", ["--backend", "auto"]), ("reference", ["--backend", "reference"]),
                        ("reference+1ulp", ["--backend", "reference", "--init-ulps", "1"])):
        argv = [*extra, "--out", os.path.join(out, name), "--seed", str(seed), "--steps", str(steps),
                "--eval-every", str(steps), "--dtype", dtype, *train_args]
        print(f"== {name}: python -m depthmetric train {' '.join(argv)}", flush=True)
        runs[name] = _run_child(argv)
    pairs = {"kernel vs reference": _pair(runs["kernel"], runs["reference"]),
             "reference vs reference+1ulp": _pair(runs["reference+1ulp"], runs["reference"])}
    tk, tr = runs["kernel"]["timing"], runs["reference"]["timing"]
    summary = {
        "steps": steps, "dtype": dtype,
        "pairs": pairs,
        "loss": {name: r["history"]["loss"] for name, r in runs.items()},
        "train_seconds": {"kernel": tk["train_seconds"], "reference": tr["train_seconds"]},
        "loss_seconds": {"kernel": tk["loss_seconds"], "reference": tr["loss_seconds"]},
        "peak_rss_mb": {"kernel": tk["peak_rss_mb"], "reference": tr["peak_rss_mb"]},
        "speedup_train": tr["train_seconds"] / tk["train_seconds"],
        "speedup_loss": tr["loss_seconds"] / tk["loss_seconds"],
        "metrics_after": {name: r["metrics_after"] for name, r in runs.items()},
        "device": runs["kernel"]["device"], "threads": tk["threads"], "torch": runs["kernel"]["torch"],
    }
    with open(os.path.join(out, "compare.json"), "w") as f:
        json.dump(summary, f, indent=1)
    _compare_figure(summary, os.path.join(out, "compare.png"))
    for name, pair in pairs.items():
        print(f"{name} ({dtype}, {steps} steps): max relative loss difference {pair['max_rel_loss_diff']:.2e}, the "
              f"first {pair['steps_within_rel_1e-4']} losses within 1e-4")
    print(f"training loop: kernel {tk['train_seconds']:.1f} s, reference {tr['train_seconds']:.1f} s "
          f"({summary['speedup_train']:.2f}x); losses alone (forward+backward): {tk['loss_seconds']:.2f} s vs "
          f"{tr['loss_seconds']:.2f} s ({summary['speedup_loss']:.2f}x)")
    print(f"wrote {os.path.join(out, 'compare.json')} and compare.png")
    return summary


def _compare_figure(summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True, layout="constrained")
    for name, loss in summary["loss"].items():
        top.plot(np.arange(1, len(loss) + 1), loss, lw=1.2, label=name)
    top.set_ylabel("training loss")
    top.legend(frameon=False)
    for name, pair in summary["pairs"].items():
        rel = np.maximum(np.asarray(pair["rel_loss_diff"]), 1e-18)
        bottom.semilogy(np.arange(1, rel.size + 1), rel, lw=1.2, label=name)
    bottom.set_ylabel("relative loss difference")
    bottom.set_xlabel("step")
    bottom.grid(alpha=0.3, which="both")
    bottom.legend(frameon=False)
    fig.suptitle(f"kernel vs reference losses, and what one ulp of the initial weights does ({summary['dtype']})")
    fig.savefig(path, dpi=110)
    plt.close(fig)


# The paper's ablation (MetricDepth Tables I, VI, VII): no regulariser, the uniform strategy, multi-range.
VARIANTS = {
    "none": dict(metric_loss=False),
    "uniform": dict(metric_preset="uniform"),
    "multi-range": dict(),  # the data set's preset (nyu-lt / kitti-lt)
}


def ablate(base, seeds: list[int], weights: list[float], out: str, runtime) -> dict:
    """Every variant (and, for multi-range, every weight of ``weights``) trained with every seed; each run's
    held-out metrics, their mean and standard deviation per variant, as JSON and a bar plot. A run whose
    ``metrics.json`` exists is read instead of trained again, so an interrupted sweep resumes."""
    from .loop import train

    variants = dict(VARIANTS)
    for w in weights:
        variants[f"multi-range w={w:g}"] = dict(metric_weight=w)
    results: dict = {}
    for name, change in variants.items():
        for seed in seeds:
            folder = os.path.join(out, name.replace(" ", "_").replace("=", ""), f"seed{seed}")
            done = os.path.join(folder, "metrics.json")
            if os.path.exists(done):
                with open(done) as f:
                    run = json.load(f)
            else:
                config = dataclasses.replace(base, seed=seed, out=folder, eval_every=base.steps, figure=False,
                                             **change)
                run = train(config)
            results.setdefault(name, []).append({"seed": seed, **run["metrics_after"]})
    summary = {"config": dataclasses.asdict(base), "seeds": seeds, "runs": results,
               "mean": {v: {m: float(np.mean([r[m] for r in rs])) for m in METRICS} for v, rs in results.items()},
               "std": {v: {m: float(np.std([r[m] for r in rs], ddof=1)) if len(rs) > 1 else 0.0 for m in METRICS}
                       for v, rs in results.items()}}
    if runtime.main:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "ablation.json"), "w") as f:
            json.dump(summary, f, indent=1)
        _ablation_figure(summary, os.path.join(out, "ablation.png"))
        for variant in results:
            print(f"{variant:>20}: " + "  ".join(f"{m} {summary['mean'][variant][m]:.4f}±{summary['std'][variant][m]:.4f}"
                                                 for m in ("AbsRel", "RMSE", "delta1")))
        print(f"wrote {os.path.join(out, 'ablation.json')} and ablation.png")
    return summary


def _ablation_figure(summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    shown = ("AbsRel", "SqRel", "RMSE", "RMSE_log", "delta1")
    variants = list(summary["mean"])
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.6), layout="constrained")
    for ax, metric in zip(axes, shown):
        means = [summary["mean"][v][metric] for v in variants]
        stds = [summary["std"][v][metric] for v in variants]
        ax.bar(range(len(variants)), means, yerr=stds, capsize=4, color=[f"C{i}" for i in range(len(variants))])
        for i, v in enumerate(variants):
            ax.plot([i] * len(summary["runs"][v]), [r[metric] for r in summary["runs"][v]], "k.", ms=4)
        ax.set_xticks(range(len(variants)), variants, rotation=30, ha="right", fontsize=8)
        ax.set_title(metric + (" (higher is better)" if metric.startswith("delta") else ""), fontsize=9)
    fig.suptitle(f"held-out metrics, mean ± std over seeds {summary['seeds']} (dots: single runs)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
