"""What a run leaves behind: the environment it ran in, the table (text and Markdown), the JSON, the plot."""
from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import re
import subprocess

import torch

from benchmarks.harness import Roofline

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
SCHEMA_VERSION = 1


def cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def device_slug(device: torch.device) -> str:
    """File name stem for ``benchmarks/results``: ``nvidia-h100-80gb-hbm3``, ``cpu-amd-epyc-2c``."""
    def slug(text: str) -> str:
        return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")

    if device.type == "cuda":
        return slug(device_name(device))
    return f"cpu-{slug(cpu_model())}-{os.cpu_count()}c"


def git_commit() -> str:
    """HEAD of the checkout, or DEPTHMETRIC_COMMIT where the tree was copied without .git (a lent GPU)."""
    if os.environ.get("DEPTHMETRIC_COMMIT"):
        return os.environ["DEPTHMETRIC_COMMIT"]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def environment(device: torch.device, run_set: str, roofline: Roofline) -> dict:
    import depthmetric

    return {
        "schema_version": SCHEMA_VERSION,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "python_version": platform.python_version(),
        "device": device.type,
        "device_name": device_name(device),
        "device_slug": device_slug(device),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "run_set": run_set,
        "copy_bandwidth_gbs": roofline.bandwidth / 1e9,
        "matmul_gflops": roofline.flop_rate / 1e9,
        "depthmetric_build": depthmetric.build_info(),
    }


# ------------------------------------------------------------------------------------------------ table

COLUMNS = ("op", "shape", "dtype", "device", "backend", "fwd ms (IQR)", "fwd+bwd ms (IQR)", "peak MiB",
           "speed-up", "mem ratio", "roofline")

LEGEND = (
    "Times: median over repeats with the interquartile range; fwd runs with autograd recording (a training "
    "forward). peak MiB: peak memory allocated during one call beyond its inputs (CUDA: "
    "max_memory_allocated delta; CPU: allocator events recorded by torch.profiler). speed-up and mem ratio: "
    "the reference's time and peak divided by this row's (above 1 = faster / lighter; no mem ratio where this "
    "row's peak is under 0.1 MiB). roofline: the case's floor over the median time (100% = at the "
    "machine's limit), the floor being the larger of the time to move the op's bytes (inputs read once, "
    "outputs and gradients written once) at the copy bandwidth and the time to do its floating-point "
    "operations (counted per op in its bench file) at the rate of a large fp32 matmul, both measured in the "
    "same run; mem or flop says which limit binds. peak, speed-up, mem ratio and roofline are of fwd+bwd, "
    "or of fwd for forward-only ops."
)


def _load(env: dict) -> str:
    load = env.get("load_average")
    return f", load average {load[0]:.1f} before / {load[1]:.1f} after" if load else ""


def _main_mode(row: dict) -> dict | None:
    return row["fwd_bwd"] or row["fwd"]


def _time(stats: dict | None) -> str:
    if not stats:
        return "-"
    median, iqr = stats["median_ms"], stats["q3_ms"] - stats["q1_ms"]
    digits = 3 if median < 1 else 2 if median < 100 else 0
    return f"{median:.{digits}f} ({iqr:.{digits}f})"


def _ratio(x) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _roofline(stats: dict) -> str:
    return f"{100 * stats['roofline_fraction']:.1f}% ({'mem' if stats['bound'] == 'memory' else 'flop'})"


def table_rows(rows: list[dict]) -> list[tuple[str, ...]]:
    out = []
    for row in rows:
        if row["status"] != "ok":
            continue
        main = _main_mode(row)
        out.append((row["op"], row["shape"], row["dtype"], row["device"], row["backend"], _time(row["fwd"]),
                    _time(row["fwd_bwd"]), f"{main['peak_mib']:.1f}", _ratio(main["speedup"]),
                    _ratio(main["mem_ratio"]), _roofline(main)))
    return out


def not_run(rows: list[dict]) -> list[str]:
    """Skipped and failed rows, one line per (op, status, reason) with the backends and shapes it covers."""
    grouped: dict[tuple, tuple[dict, dict]] = {}
    for row in rows:
        if row["status"] != "ok":
            backends, shapes = grouped.setdefault((row["op"], row["status"], row["reason"]), ({}, {}))
            backends[row["backend"]] = shapes[row["shape"]] = None
    return [f"{op} [{', '.join(backends)}] {status} ({', '.join(shapes)}): {reason}"
            for (op, status, reason), (backends, shapes) in grouped.items()]


def render_text(rows: list[dict], env: dict | None = None) -> str:
    body = table_rows(rows)
    widths = [max(len(c), *(len(r[i]) for r in body)) if body else len(c) for i, c in enumerate(COLUMNS)]
    numeric = set(range(5, len(COLUMNS)))

    def line(cells) -> str:
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    lines = []
    if env:
        lines.append(f"{env['device_name']} ({env['device']}, {env['cpu_cores']} cores, torch "
                     f"{env['torch_version']}, {env['torch_threads']} threads), copy bandwidth "
                     f"{env['copy_bandwidth_gbs']:.1f} GB/s, commit {env['git_commit'][:12]}, {env['date']}"
                     f"{_load(env)}")
    lines += [line(COLUMNS), line("-" * w for w in widths)]
    lines += [line(r) for r in body]
    skipped = not_run(rows)
    if skipped:
        lines += ["", "Not run:"] + [f"  {s}" for s in skipped]
    return "\n".join(lines)


def render_markdown(rows: list[dict], env: dict) -> str:
    lines = [
        f"# depthmetric benchmarks: {env['device_name']}",
        "",
        f"- date: {env['date']}",
        f"- git commit: `{env['git_commit']}`",
        f"- torch {env['torch_version']} (CUDA {env['cuda_version']}), Python {env['python_version']}",
        f"- device: {env['device_name']} ({env['device']}); CPU {env['cpu_model']}, {env['cpu_cores']} cores, "
        f"{env['torch_threads']} torch threads",
        f"- copy bandwidth (device-to-device `copy_`, read + write): {env['copy_bandwidth_gbs']:.1f} GB/s",
        f"- fp32 matmul rate (large `torch.mm`, TF32 off): {env['matmul_gflops']:.1f} GFLOP/s",
        f"- machine load (1-minute average, other users of the machine){_load(env).replace(', load average', ':')}",
        f"- run set: `{env['run_set']}`; command: `{env.get('command', 'python -m benchmarks')}`",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" if i < 5 else "---:" for i in range(len(COLUMNS))) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(rows)]
    lines += ["", LEGEND]
    skipped = not_run(rows)
    if skipped:
        lines += ["", "Not run:", ""] + [f"- {s}" for s in skipped]
    return "\n".join(lines) + "\n"


def write_json(path: pathlib.Path, rows: list[dict], env: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"environment": env, "results": rows}, indent=1) + "\n")


# ------------------------------------------------------------------------------------------------- plot

def plot(path: pathlib.Path, rows: list[dict], env: dict) -> bool:
    """Time and peak memory against problem size, one row of panels per op, one line per backend.
    Returns False (and writes nothing) when no row was measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ok = [r for r in rows if r["status"] == "ok"]
    ops = list(dict.fromkeys(r["op"] for r in ok))
    if not ops:
        return False
    fig, axes = plt.subplots(len(ops), 2, figsize=(12, 3.1 * len(ops) + 0.8), squeeze=False)
    for (ax_time, ax_mem), op in zip(axes, ops):
        op_rows = [r for r in ok if r["op"] == op]
        # sizes in the order of the bytes the op moves, so the x axis grows left to right
        shapes = sorted(dict.fromkeys(r["shape"] for r in op_rows),
                        key=lambda s: next(_main_mode(r)["bytes"] for r in op_rows if r["shape"] == s))
        mode = "fwd_bwd" if any(r["fwd_bwd"] for r in op_rows) else "fwd"
        for backend in dict.fromkeys(r["backend"] for r in op_rows):
            points = sorted((shapes.index(r["shape"]), r[mode]) for r in op_rows
                            if r["backend"] == backend and r[mode])  # joined left to right
            if not points:
                continue
            xs = [x for x, _ in points]
            style = dict(marker="o", linewidth=2.2 if backend in ("kernel", "reference") else 1.2,
                         linestyle="-" if backend in ("kernel", "reference", "pytorch") else "--")
            ax_time.plot(xs, [s["median_ms"] for _, s in points], label=backend, **style)
            ax_time.fill_between(xs, [s["q1_ms"] for _, s in points], [s["q3_ms"] for _, s in points], alpha=0.2)
            ax_mem.plot(xs, [max(s["peak_mib"], 1e-3) for _, s in points], label=backend, **style)
        floors = {}  # the case's roofline floor (the first backend's bytes: outputs differ by a scalar at most)
        for r in op_rows:
            if r[mode]:
                floors.setdefault(shapes.index(r["shape"]), r[mode]["floor_ms"])
        xs = sorted(floors)
        ax_time.plot(xs, [floors[x] for x in xs], color="0.4", linestyle=":", linewidth=1.5, label="roofline floor")
        label = "fwd+bwd" if mode == "fwd_bwd" else "fwd"
        ax_time.set_title(f"{op}: {label} time", fontsize=10)
        ax_mem.set_title(f"{op}: {label} peak extra memory", fontsize=10)
        ax_time.set_ylabel("ms (median, IQR band)")
        ax_mem.set_ylabel("MiB")
        for ax in (ax_time, ax_mem):
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 1, 2, 5, 10, 20, 50...
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_xticks(range(len(shapes)), shapes, fontsize=8)
            ax.set_xlim(-0.3, len(shapes) - 0.7)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(f"depthmetric on {env['device_name']} ({env['device']}), torch {env['torch_version']}, "
                 f"{env['date'][:10]}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))  # leave room for the title
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
