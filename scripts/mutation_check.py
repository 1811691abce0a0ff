#!/usr/bin/env python3
"""Mutation check: do the tests notice when a kernel, a twin or the training loop is subtly wrong?

Each entry of scripts/mutations.json is a one-line change (an off-by-one boundary, a constant, a gradient
scaled by 1.01, a restore skipped) and the test files that should catch it. The script copies the tracked
files (``git ls-files``) into a scratch folder, builds the CPU extension there once, then per mutation
applies the change, rebuilds when it touched ``csrc/`` (ninja: only what changed), runs the covering tests
with ``-x -q`` and puts the line back. A mutation is *caught* (a test failed: pytest exit 1), *survived*
(exit 0: the tests cannot tell the mutant from the real code) or *error* (build failure, timeout, other exit).

When to run it: before resolving an issue that touches a kernel, its math header, its twin or the tests that
guard them, so that a weakened test or a new blind spot shows up as a survivor. It rebuilds the extension
and runs for tens of minutes, so it is not part of CI. Run it from the repository root with the venv's
python, at low priority:

    nice -n 15 .venv/bin/python scripts/mutation_check.py               # all, report in scripts/
    .venv/bin/python scripts/mutation_check.py --list                    # the mutations
    .venv/bin/python scripts/mutation_check.py --only ssim-kernel-c2,minrep-kernel-tie --scratch /tmp/mut

``--scratch DIR`` keeps (and reuses) the scratch copy and its build folder, so a second run rebuilds only
what changed. Exit status: 0 all caught, 1 a mutation survived (so it can gate), 2 an error or a bad list.
A survivor is a finding for whoever owns the tests, not something this script fixes. Standard library only.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LIST = ROOT / "scripts" / "mutations.json"
DEFAULT_REPORT = ROOT / "scripts" / "mutation_report.md"
# The build of the README/bootstrap, CPU kernels only: the CUDA kernels are not what the CPU tests exercise,
# and compiling them would multiply every rebuild.
BUILD_ENV = {"DEPTHMETRIC_WITH_CUDA": "0", "MAX_JOBS": "2"}
FIELDS = ("id", "file", "find", "replace", "tests", "why")


def load_mutations(path: Path) -> list[dict]:
    mutations = json.loads(path.read_text())
    seen = set()
    for m in mutations:
        missing = [f for f in FIELDS if f not in m]
        if missing:
            raise SystemExit(f"{path}: entry {m.get('id', '?')} lacks {missing}")
        if m["id"] in seen:
            raise SystemExit(f"{path}: duplicate id {m['id']}")
        seen.add(m["id"])
    return mutations


def check_entry(m: dict, tree: Path) -> str | None:
    """Why the entry cannot be applied to tree, or None. The text must be one line found exactly once, so
    the change is unambiguous and the report's 'find' is the line that was mutated."""
    if "\n" in m["find"] or "\n" in m["replace"]:
        return "find/replace must be a single line"
    if m["find"] == m["replace"]:
        return "replace equals find"
    path = tree / m["file"]
    if not path.is_file():
        return f"{m['file']} does not exist"
    n = path.read_text().count(m["find"])
    if n != 1:
        return f"text found {n} times in {m['file']} (must be exactly once)"
    for t in m["tests"]:
        if not (tree / t).is_file():
            return f"test file {t} does not exist"
    return None


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def sync_tree(scratch: Path) -> None:
    """Copy the tracked files into scratch, skipping those already identical: an untouched file keeps its
    mtime, so a reused scratch folder's ninja build stays incremental."""
    names = [n for n in git("ls-files", "-z").split("\0") if n]
    for name in names:
        src, dst = ROOT / name, scratch / name
        if not src.is_file() or src.is_symlink():
            continue  # deleted in the work tree, or a link: nothing to build from
        if dst.is_file() and dst.stat().st_size == src.stat().st_size and dst.read_bytes() == src.read_bytes():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def build(scratch: Path, python: str, log: Path) -> bool:
    # setuptools skips an extension whose .cpp sources are older than its library and does not look at
    # headers, so a header-only mutation would run against the old library: remove it; ninja still
    # recompiles only the objects whose sources or headers changed.
    for so in list((scratch / "depthmetric").glob("_C*.so")) + list((scratch / "build").glob("lib*/depthmetric/_C*.so")):
        so.unlink()
    env = {**os.environ, **BUILD_ENV}
    with log.open("a") as f:
        f.write(f"\n=== build {datetime.datetime.now().isoformat(timespec='seconds')}\n")
        f.flush()
        r = subprocess.run([python, "setup.py", "-q", "build_ext", "--inplace"], cwd=scratch, env=env,
                           stdout=f, stderr=subprocess.STDOUT)
    return r.returncode == 0 and any((scratch / "depthmetric").glob("_C*.so"))


def first_failure(output: str) -> str:
    """The first FAILED/ERROR line of pytest's short summary (-x: the only one), without its message."""
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return re.split(r" - ", line, maxsplit=1)[0]
    return "(no FAILED line; see the log)"


def run_tests(scratch: Path, python: str, tests: list[str], timeout: float, log: Path) -> tuple[int | None, str]:
    env = {**os.environ, "PYTHONPATH": str(scratch)}  # the scratch package, not an installed/checkout one
    cmd = [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        r = subprocess.run(cmd, cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout)
        code, out = r.returncode, r.stdout + r.stderr
    except subprocess.TimeoutExpired as e:
        code, out = None, (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
    with log.open("a") as f:
        f.write(f"\n=== {' '.join(cmd)} -> {code}\n{out}")
    return code, out


def write_report(path: Path, results: list[dict], started: datetime.datetime, elapsed: float, commit: str,
                 dirty: bool, python: str) -> None:
    order = {"survived": 0, "error": 1, "caught": 2}
    counts = {k: sum(r["result"] == k for r in results) for k in order}
    lines = [
        "# Mutation check report",
        "",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Commit: `{commit}`" + (" (work tree had uncommitted changes)" if dirty else ""),
        f"- Python: `{python}`; CPU-only build; run time {elapsed / 60:.1f} min",
        f"- Result: {counts['caught']} caught, {counts['survived']} survived, {counts['error']} error"
        f" (of {len(results)})",
        "- Produced by `scripts/mutation_check.py` from `scripts/mutations.json`; survivors first.",
        "",
    ]
    survivors = [r for r in results if r["result"] == "survived"]
    lines += ["## Survivors", ""]
    if survivors:
        lines += [f"- **{r['id']}** (`{r['file']}`): {r['why']}. Tests run: "
                  f"{', '.join(f'`{t}`' for t in r['tests'])}." for r in survivors]
    else:
        lines.append("None: every mutation was caught.")
    lines += ["", "## All mutations", "",
              "| Mutation | File | Change | Result | Caught by | Time (s) |",
              "|---|---|---|---|---|---|"]

    def cell(s: str) -> str:
        return s.replace("|", "\\|")

    for r in sorted(results, key=lambda r: order[r["result"]]):
        change = f"`{cell(r['find'])}` → `{cell(r['replace'])}`"
        lines.append(f"| {r['id']} | `{r['file']}` | {change} | {r['result']} | {cell(r['detail'])} "
                     f"| {r['seconds']:.0f} |")
    lines += ["", "## Why each mutation matters", ""]
    lines += [f"- {r['id']}: {r['why']} (tests: {', '.join(r['tests'])})" for r in results]
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--list", action="store_true", help="print the mutations and exit")
    p.add_argument("--only", help="comma-separated ids to run")
    p.add_argument("--mutations", type=Path, default=DEFAULT_LIST)
    p.add_argument("--scratch", type=Path, help="scratch folder (kept and reused); default a temporary one")
    p.add_argument("--report", type=Path, default=DEFAULT_REPORT)
    p.add_argument("--python", default=sys.executable, help="interpreter with torch and pytest (the venv's)")
    p.add_argument("--timeout", type=float, default=600, help="seconds of tests per mutation")
    args = p.parse_args()

    mutations = load_mutations(args.mutations)
    if args.only:
        wanted = args.only.split(",")
        unknown = set(wanted) - {m["id"] for m in mutations}
        if unknown:
            raise SystemExit(f"unknown ids: {sorted(unknown)}")
        mutations = [m for m in mutations if m["id"] in wanted]
    if args.list:
        for m in mutations:
            print(f"{m['id']:32s} {m['file']}\n    {m['why']}\n    tests: {' '.join(m['tests'])}")
        return 0
    bad = [(m["id"], why) for m in mutations if (why := check_entry(m, ROOT))]
    if bad:  # checked against the repository before any build, so a stale entry costs nothing
        for mid, why in bad:
            print(f"bad entry {mid}: {why}", file=sys.stderr)
        return 2

    started, t0 = datetime.datetime.now(datetime.timezone.utc), time.monotonic()
    commit, dirty = git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="depthmetric-mutation-"))
    scratch.mkdir(parents=True, exist_ok=True)
    scratch = scratch.resolve()
    log = scratch / "mutation_check.log"
    print(f"scratch {scratch} (log {log})", flush=True)
    sync_tree(scratch)
    if not build(scratch, args.python, log):
        print(f"the unmutated build failed; see {log}", file=sys.stderr)
        return 2
    print(f"built in {time.monotonic() - t0:.0f} s", flush=True)

    results, stale = [], False  # stale: the library was built from a mutant since restored
    for i, m in enumerate(mutations, 1):
        t = time.monotonic()
        path = scratch / m["file"]
        original = path.read_text()
        kernel = m["file"].startswith("csrc/")
        result, detail = "error", ""
        try:
            path.write_text(original.replace(m["find"], m["replace"], 1))
            # A Python mutation after a kernel one needs the restored library; a kernel mutation's own
            # build recompiles the restored file too, so the rebuild back is done lazily, once.
            if (kernel or stale) and not build(scratch, args.python, log):
                detail = "build failed"
            else:
                stale = kernel
                code, out = run_tests(scratch, args.python, m["tests"], args.timeout, log)
                if code == 1:
                    result, detail = "caught", first_failure(out)
                elif code == 0:
                    result, detail = "survived", "all covering tests passed"
                elif code is None:
                    detail = f"timed out after {args.timeout:.0f} s"
                else:
                    detail = f"pytest exit {code}"
        finally:
            path.write_text(original)  # restored even when interrupted, so a reused scratch stays clean
            if kernel:
                stale = True
        results.append({**m, "result": result, "detail": detail, "seconds": time.monotonic() - t})
        print(f"[{i}/{len(mutations)}] {m['id']}: {result} {detail} ({time.monotonic() - t:.0f} s)", flush=True)

    elapsed = time.monotonic() - t0
    write_report(args.report, results, started, elapsed, commit, dirty, args.python)
    print(f"report {args.report}; {elapsed / 60:.1f} min", flush=True)
    if any(r["result"] == "survived" for r in results):
        return 1
    return 2 if any(r["result"] == "error" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
