"""Command line of the benchmark suite: ``python -m benchmarks`` or ``python benchmarks/run.py``.

Default sizes per device: ``--device cpu`` runs the CPU set (the smaller realistic sizes, see each
bench file's docstring), ``--device cuda`` the GPU set (the training sizes of the ops' papers); ``--all-sizes`` runs both
sets; ``--quick`` runs tiny sizes with few repeats (the smoke test).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shlex
import sys

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks import harness, report  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=harness.DEVICES, default=None,
                        help="where to run (default: cuda when available, else cpu)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few repeats (smoke test)")
    parser.add_argument("--all-sizes", action="store_true", help="run the CPU and the GPU size sets")
    parser.add_argument("--ops", default=None,
                        help="comma-separated ops or groups, e.g. multi_range_contrastive,ssim,depth_losses")
    parser.add_argument("--json", type=pathlib.Path, default=None, help="write the results as JSON here")
    parser.add_argument("--plot", type=pathlib.Path, default=None, help="write a PNG plot here")
    parser.add_argument("--results", action="store_true",
                        help="write <out-dir>/<device-slug>.json, .md and .png")
    parser.add_argument("--out-dir", type=pathlib.Path, default=report.RESULTS_DIR,
                        help="folder for --results (default: benchmarks/results)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's, one per core; --quick: 1, so that tiny ops "
                             "do not wait at thread barriers on a busy machine)")
    parser.add_argument("--list", action="store_true", help="list the selected cases and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    threads = args.threads or (1 if args.quick else None)
    if threads:
        torch.set_num_threads(threads)
    run_set = "quick" if args.quick else device.type
    sets = {"cpu", "cuda"} if args.all_sizes and not args.quick else {run_set}
    groups = harness.load_groups()
    ops = args.ops.split(",") if args.ops else None
    pairs = harness.select(groups, sets, ops)
    if ops and not pairs:
        raise SystemExit(f"--ops {args.ops}: no such op or group; ops: {', '.join(harness.op_names(groups))}")
    if args.list:
        for module, case in pairs:
            print(f"{harness.group_name(module):<24} {case.op:<24} {case.shape:<20} {case.dtype:<9} "
                  f"{','.join(case.backends)}")
        return 0

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    load_before = os.getloadavg()[0]
    roofline, rows = harness.run(pairs, device, harness.Settings.for_run(device, args.quick), log)
    env = report.environment(device, "+".join(sorted(sets)), roofline)
    env["load_average"] = [load_before, os.getloadavg()[0]]  # 1-minute, before and after: others' load
    env["command"] = "python -m benchmarks " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    print(report.render_text(rows, env))

    if args.json:
        report.write_json(args.json, rows, env)
    if args.plot:
        report.plot(args.plot, rows, env)
    if args.results:
        stem = args.out_dir / env["device_slug"]
        report.write_json(stem.with_suffix(".json"), rows, env)
        stem.with_suffix(".md").write_text(report.render_markdown(rows, env))
        report.plot(stem.with_suffix(".png"), rows, env)
        log(f"wrote {stem}.json, .md, .png")
    return 1 if any(r["status"] == "error" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
