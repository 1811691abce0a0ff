"""The spread of several full runs: ``python -m benchmarks.spread RUN.json RUN.json RUN.json [--md OUT]``.

One run on a shared machine says little (its speed moves between runs by up to a third), so the README's
claims quote the median and the range over several runs of the suite. Per case and backend: the kernel's
fwd+bwd time (fwd where the case has no backward), the other backend's, and their ratio, each as the median
over the runs with its lowest and highest value; the ratio is taken within each run (both sides measured
in the same run), then summarised.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys

from benchmarks.report import _main_mode


def _ms(row: dict) -> float | None:
    stats = _main_mode(row) if row["status"] == "ok" else None
    return stats["median_ms"] if stats else None


def spread(runs: list[dict]) -> list[dict]:
    """Rows ``{op, shape, backend, kernel_ms, other_ms, ratio}``, each value ``(median, low, high)`` over the
    runs that measured both the kernel and ``backend`` for the case (a case: its bench group, op and shape);
    cases in the first run's order."""
    cases: dict[tuple[str, str, str], dict[str, list]] = {}
    for run in runs:
        by_backend: dict[tuple[str, str, str], dict[str, float]] = {}
        for row in run["results"]:
            ms = _ms(row)
            if ms is not None:
                by_backend.setdefault((row["group"], row["op"], row["shape"]), {})[row["backend"]] = ms
        for case, times in by_backend.items():
            if "kernel" not in times:
                continue
            for backend, ms in times.items():
                if backend != "kernel":
                    pairs = cases.setdefault(case, {}).setdefault(backend, [])
                    pairs.append((times["kernel"], ms))

    def summary(values: list[float]) -> tuple[float, float, float]:
        return statistics.median(values), min(values), max(values)

    return [{"op": op, "shape": shape, "backend": backend, "runs": len(pairs),
             "kernel_ms": summary([k for k, _ in pairs]), "other_ms": summary([o for _, o in pairs]),
             "ratio": summary([o / k for k, o in pairs])}
            for (_, op, shape), backends in cases.items() for backend, pairs in backends.items()]


def _cell(value: tuple[float, float, float], unit: str = "", digits: int = 1) -> str:
    median, low, high = value
    return f"{median:.{digits}f}{unit} ({low:.{digits}f}-{high:.{digits}f})"


def render_markdown(rows: list[dict], runs: list[dict]) -> str:
    envs = [run["environment"] for run in runs]
    lines = [f"{len(runs)} runs on {envs[0]['device_name']} ({envs[0]['cpu_cores']} cores, torch "
             f"{envs[0]['torch_version']}, {envs[0]['torch_threads']} threads), commits "
             f"{', '.join(sorted({e['git_commit'][:7] for e in envs}))}; per run date and load average "
             "(before / after): "
             + "; ".join(f"{e['date']} {e['load_average'][0]:.1f} / {e['load_average'][1]:.1f}"
                         if e.get("load_average") else e["date"] for e in envs),
             "",
             "median (lowest-highest) over the runs; ratio = the other backend's time over the kernel's, per run",
             "",
             "| op | shape | vs | kernel ms | other ms | ratio |",
             "|---|---|---|---:|---:|---:|"]
    lines += [f"| {r['op']} | {r['shape']} | {r['backend']} | {_cell(r['kernel_ms'])} | {_cell(r['other_ms'])} | "
              f"{_cell(r['ratio'], 'x')} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.spread", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=pathlib.Path, help="JSON files of `python -m benchmarks --json`")
    parser.add_argument("--md", type=pathlib.Path, help="write the Markdown table here too")
    args = parser.parse_args(argv)
    runs = [json.loads(path.read_text()) for path in args.runs]
    text = render_markdown(spread(runs), runs)
    if args.md:
        args.md.write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
