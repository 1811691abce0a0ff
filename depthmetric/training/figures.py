"""Figures of the training loop and colour maps for depth (matplotlib, Agg backend; no screen needed)."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

__all__ = ["colorize", "save_depth_png", "training_figure"]

DEPTH_CMAP = "turbo_r"  # near = red, far = blue; perceptually ordered and readable in print
ERROR_CMAP = "inferno"
INVALID_RGB = (0.55, 0.55, 0.55)  # grey for pixels without ground truth


def _numpy_map(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    return x.reshape(x.shape[-2:]) if x.ndim > 2 else x


def _valid(x: np.ndarray) -> np.ndarray:
    return np.isfinite(x) & (x > 0)


def depth_range(*maps, percentile: float = 1.0) -> tuple[float, float]:
    """A shared colour range over the valid pixels of the maps (robust ``percentile``..``100-percentile``)."""
    values = np.concatenate([m[_valid(m)] for m in map(_numpy_map, maps)] or [np.zeros(0)])
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [percentile, 100 - percentile])
    return float(lo), float(max(hi, lo + 1e-6))


def colorize(depth, vmin: float | None = None, vmax: float | None = None, cmap: str = DEPTH_CMAP,
             invalid=INVALID_RGB) -> np.ndarray:
    """``H,W`` (or ``1,H,W``) map -> ``H,W,3`` uint8 RGB with ``cmap`` over ``[vmin, vmax]`` (robust range of the
    valid pixels when not given); pixels ``<= 0``, NaN or Inf get the ``invalid`` colour."""
    import matplotlib

    d = _numpy_map(depth)
    valid = _valid(d)
    if vmin is None or vmax is None:
        lo, hi = depth_range(d)
        vmin, vmax = (lo if vmin is None else vmin), (hi if vmax is None else vmax)
    t = np.clip((np.where(valid, d, vmin) - vmin) / max(vmax - vmin, 1e-12), 0, 1)
    rgb = matplotlib.colormaps[cmap](t)[..., :3]
    rgb[~valid] = invalid
    return (rgb * 255 + 0.5).astype(np.uint8)


def save_depth_png(depth, path: str, vmin: float | None = None, vmax: float | None = None,
                   cmap: str = DEPTH_CMAP) -> str:
    """Write a coloured depth map to ``path`` (PNG) and return the path."""
    from PIL import Image

    Image.fromarray(colorize(depth, vmin, vmax, cmap)).save(path)
    return path


def _image_hwc(image) -> np.ndarray:
    x = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, np.float32)
    if x.ndim == 3 and x.shape[0] in (1, 3):
        x = x.transpose(1, 2, 0)
    return np.clip(x, 0, 1)


def training_figure(
    rows: Sequence[dict],
    history: dict | None = None,
    path: str | None = None,
    title: str | None = None,
    eval_history: Sequence[dict] | None = None,
    error_max: float = 0.5,
):
    """The summary figure of a run.

    ``rows``: dicts with ``image`` (``3,H,W`` in [0, 1]), ``pred`` (``H,W`` metres) and optionally ``gt``
    (``H,W``, 0 = invalid), ``range`` (the evaluation's ``(min_depth, max_depth)``) and ``label``; each becomes
    a row RGB | GT | prediction | error, where the error is ``|pred - gt| / gt`` (AbsRel per pixel, clipped at
    ``error_max``) and GT and prediction share the ground truth's colour range. ``history``: ``{"step": [...], name: [...]}`` loss curves drawn below (log scale when positive);
    ``eval_history``: ``[{"step": s, "AbsRel": ..., ...}]`` drawn as AbsRel/delta1 markers on a second axis.
    Saves a PNG to ``path`` when given; returns the matplotlib figure.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib import gridspec

    n = len(rows)
    first = _numpy_map(rows[0]["pred"]) if n else np.zeros((3, 4))
    aspect = first.shape[0] / first.shape[1]
    panel_w = 3.4
    fig_w = 4 * panel_w
    curves = bool(history and len(history.get("step", [])) > 0)
    heights = [panel_w * aspect] * n + ([3.2] if curves else [])
    fig = plt.figure(figsize=(fig_w, sum(heights) + 0.6 + 0.3 * n), dpi=110, layout="constrained")
    grid = gridspec.GridSpec(len(heights), 1, height_ratios=heights, figure=fig)
    for r, row in enumerate(rows):
        cells = gridspec.GridSpecFromSubplotSpec(1, 4, subplot_spec=grid[r], wspace=0.02)
        pred = _numpy_map(row["pred"])
        gt = _numpy_map(row["gt"]) if row.get("gt") is not None else None
        # Both panels on the ground truth's range (the prediction's can be far wider, e.g. a median-scaled
        # self-supervised one), within the evaluation's depth range when the row gives it.
        vmin, vmax = depth_range(gt) if gt is not None and _valid(gt).any() else depth_range(pred)
        if row.get("range"):
            vmin, vmax = max(vmin, row["range"][0]), min(vmax, row["range"][1])
        panels = [("RGB", _image_hwc(row["image"])),
                  ("ground truth", colorize(gt, vmin, vmax) if gt is not None else None),
                  ("prediction", colorize(pred, vmin, vmax))]
        error_text = "error |pred - gt| / gt"
        if gt is not None:
            valid = _valid(gt) & (pred.shape == gt.shape)
            err = np.where(valid, np.abs(pred - gt) / np.where(valid, gt, 1), np.nan)
            error_text += f"  (AbsRel {np.nanmean(err):.3f})" if valid.any() else ""
            panels.append((error_text, colorize(np.where(valid, np.minimum(err, error_max) + 1e-9, 0), 0,
                                                 error_max, ERROR_CMAP)))
        else:
            panels.append((error_text, None))
        for c, (name, img) in enumerate(panels):
            ax = fig.add_subplot(cells[c])
            ax.set_xticks([]), ax.set_yticks([])
            if img is None:
                ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", transform=ax.transAxes)
                ax.set_facecolor(INVALID_RGB)
            else:
                ax.imshow(img, interpolation="nearest")
            label = name if r == 0 or c == 3 else ""
            if c == 0 and row.get("label"):
                ax.set_ylabel(row["label"], fontsize=9)
            if label:
                ax.set_title(label, fontsize=9)
            if c in (1, 2) and r == 0:
                ax.set_title(f"{name} ({vmin:.1f}-{vmax:.1f} m)", fontsize=9)
            elif c in (1, 2):
                ax.set_title(f"{vmin:.1f}-{vmax:.1f} m", fontsize=8)
    if curves:
        ax = fig.add_subplot(grid[n])
        steps = np.asarray(history["step"])
        for name, values in history.items():
            if name in ("step", "lr", "time"):
                continue
            values = np.asarray(values, dtype=np.float64)
            if values.size != steps.size or not np.isfinite(values).any():
                continue
            ax.plot(steps, values, lw=0.6, alpha=0.35)
            window = max(1, min(25, values.size // 10))
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1:], smooth, lw=1.6, color=ax.lines[-1].get_color(), label=name)
        positive = all(np.nanmin(np.asarray(v, np.float64)) > 0 for k, v in history.items()
                       if k not in ("step", "lr", "time") and len(v))
        if positive:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3, which="both")
        handles, labels = ax.get_legend_handles_labels()
        if eval_history:
            ax2 = ax.twinx()
            es = [e["step"] for e in eval_history]
            for key, style in (("AbsRel", "o-"), ("delta1", "s--")):
                if all(key in e for e in eval_history):
                    ax2.plot(es, [e[key] for e in eval_history], style, color="k" if key == "AbsRel" else "0.45",
                             ms=4, lw=1, label=f"eval {key}")
            ax2.set_ylabel("eval AbsRel / delta1")
            h2, l2 = ax2.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        ax.legend(handles, labels, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=max(1, len(labels)),
                  frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path, bbox_inches="tight")
        plt.close(fig)
    return fig

