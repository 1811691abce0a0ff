"""What ptxas makes of the CUDA kernels: registers, shared memory, spills and stack frame per kernel and
dtype, the theoretical occupancy that follows at sm_90 and sm_80, and the bytes each GPU benchmark case must
move. No GPU is needed, only nvcc (tests/test_cuda_registers.py fails on any spill at sm_90).

    python -m benchmarks.cuda_resources                     # print the report
    python -m benchmarks.cuda_resources --write --before REV # write benchmarks/results/cuda-kernels-sm90.md,
                                                             # with REV's figures beside (default HEAD)
"""
from __future__ import annotations

import argparse
import ast
import concurrent.futures
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "cuda-kernels-sm90.md"

# Documented per-SM limits (CUDA C++ Programming Guide, compute capabilities table; the occupancy
# calculator's register allocation unit of 256 per warp and 1 KB of shared memory reserved per block).
LIMITS = {
    "sm_90": dict(regs=65536, threads=2048, warps=64, blocks=32, smem=228 * 1024, smem_block=227 * 1024),
    "sm_80": dict(regs=65536, threads=2048, warps=64, blocks=32, smem=164 * 1024, smem_block=163 * 1024),
}
REG_UNIT = 256  # registers are allocated per warp in units of 256
SMEM_UNIT = 128  # shared memory is allocated per block in units of 128 bytes
SMEM_RESERVED = 1024  # per block, by the CUDA runtime (sm_80 and later)
MAX_REGS_PER_THREAD = 255


def setup_constants() -> dict:
    """TORCH_TARGET, DEFAULT_CUDA_ARCHS and the nvcc flags of setup.py, read without running it."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("TORCH_TARGET", "DEFAULT_CUDA_ARCHS"):
                found[node.targets[0].id] = ast.literal_eval(node.value)
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "nvcc":
                    found["nvcc_flags"] = ast.literal_eval(value)
    return found


def newest_arch() -> str:
    """The newest architecture of setup.py's DEFAULT_CUDA_ARCHS, as sm_XY."""
    archs = [a.replace("+PTX", "") for a in setup_constants()["DEFAULT_CUDA_ARCHS"].split(";")]
    return "sm_" + max(archs, key=float).replace(".", "")


def find_nvcc() -> str | None:
    """nvcc of CUDA_HOME, else /usr/local/cuda, else PATH."""
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (pathlib.Path(home) / "bin" / "nvcc").is_file():
            return str(pathlib.Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def cuda_sources(root: pathlib.Path = ROOT) -> list[pathlib.Path]:
    return sorted(root.glob("csrc/*/cuda/*.cu"))


def compile_with_ptxas(path: str | os.PathLike, arch: str, nvcc: str | None = None,
                       csrc: str | os.PathLike | None = None) -> str:
    """ptxas's -v report for one .cu file compiled for ``arch`` (``sm_90``) with the extension's flags
    (setup.py's nvcc flags, macros and include directories, torch's common nvcc flags; ``csrc`` the
    sources' include root, the checkout's by default). Device code only: ``--fatbin`` skips the host
    compiler. Raises RuntimeError when nvcc fails."""
    from torch.utils import cpp_extension

    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise RuntimeError("nvcc not found (CUDA_HOME, /usr/local/cuda/bin, PATH)")
    const = setup_constants()
    target = "0x{:02x}{:02x}000000000000".format(*const["TORCH_TARGET"])
    includes = [str(csrc or ROOT / "csrc"), os.path.join(sysconfig.get_paths()["purelib"], "nvidia", "cu13", "include"),
                *cpp_extension.include_paths("cuda")]
    number = arch.removeprefix("sm_")
    cmd = [nvcc, "--fatbin", "-o", os.devnull, f"-gencode=arch=compute_{number},code=sm_{number}", "-Xptxas", "-v",
           "-std=c++20", *cpp_extension.COMMON_NVCC_FLAGS, *const["nvcc_flags"], "-DDEPTHMETRIC_WITH_CUDA=1",
           f"-DTORCH_TARGET_VERSION={target}", *(f"-I{d}" for d in includes if os.path.isdir(d)), str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"nvcc failed on {path} for {arch}:\n{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


def demangle(names: list[str]) -> list[str]:
    """Readable kernel names (cu++filt, else c++filt; the mangled names when neither is found)."""
    tool = shutil.which("cu++filt") or next(
        (str(p) for p in [pathlib.Path(find_nvcc() or "/nonexistent").parent / "cu++filt"] if p.is_file()), None
    ) or shutil.which("c++filt")
    if tool is None or not names:
        return list(names)
    out = subprocess.run([tool], input="\n".join(names) + "\n", capture_output=True, text=True).stdout.splitlines()
    if len(out) != len(names):
        return list(names)
    return [re.sub(r"\(anonymous namespace\)::|depthmetric::", "", n).split("(")[0] for n in out]


def parse_ptxas(text: str) -> list[dict]:
    """One dict per kernel of a ptxas -v report: kernel (demangled), mangled, arch, registers, smem (static
    bytes), stack, spill_stores, spill_loads."""
    rows, current = [], None
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '(\S+)' for '(sm_\w+)'", line)
        if m:
            current = dict(mangled=m[1], arch=m[2], registers=0, smem=0, stack=0, spill_stores=0, spill_loads=0)
            rows.append(current)
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            current.update(stack=int(m[1]), spill_stores=int(m[2]), spill_loads=int(m[3]))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            current["registers"] = int(m[1])
            s = re.search(r"(\d+) bytes smem", line)
            current["smem"] = int(s[1]) if s else 0
    for row, name in zip(rows, demangle([r["mangled"] for r in rows])):
        row["kernel"] = name
    return rows


def block_threads(source: str, kernel: str) -> int:
    """Threads per block at launch, as the launch code sets them: kThreadsPerBlock (256) for
    multi_range_contrastive and depth_metric_sums but kBackwardThreads (128) for multi_range_contrastive's
    backward, kBlockW x kBlockH (32 x 8) for min_reprojection, and kTileW x tile_h<acc_t>() for ssim
    (32 x 16 with float32 accumulation, 32 x 8 with float64)."""
    if source == "ssim" and "double" not in kernel:
        return 32 * 16
    if source == "multi_range_contrastive" and "backward_kernel" in kernel:
        return 128
    return 256


def occupancy(registers: int, smem: int, threads: int, arch: str) -> dict:
    """Theoretical occupancy by the occupancy calculator's rules: resident blocks per SM are the fewest
    that registers (allocated per warp, rounded up to 256), shared memory (static + dynamic + 1 KB
    reserved, rounded up to 128 bytes), threads and the block limit allow."""
    lim = LIMITS[arch]
    warps = math.ceil(threads / 32)
    regs_per_warp = math.ceil(max(registers, 1) * 32 / REG_UNIT) * REG_UNIT
    by_regs = (lim["regs"] // regs_per_warp) // warps
    block_smem = math.ceil((smem + SMEM_RESERVED) / SMEM_UNIT) * SMEM_UNIT
    by_smem = lim["smem"] // block_smem if smem <= lim["smem_block"] else 0
    by_threads = lim["threads"] // threads
    blocks = min(by_regs, by_smem, by_threads, lim["blocks"])
    limiter = min((by_regs, "registers"), (by_smem, "shared memory"), (by_threads, "threads"),
                  (lim["blocks"], "blocks"))[1]
    return dict(blocks=blocks, warps=blocks * warps, occupancy=blocks * warps / lim["warps"], limiter=limiter)


def resources(archs=("sm_90",), jobs: int = 2, root: pathlib.Path = ROOT) -> list[dict]:
    """parse_ptxas rows of every CUDA source under ``root`` for every arch (at most ``jobs`` nvcc at a
    time), with the source's op name."""
    work = [(s, a) for s in cuda_sources(root) for a in archs]
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        texts = list(pool.map(lambda sa: compile_with_ptxas(*sa, csrc=root / "csrc"), work))
    rows = []
    for (source, _), text in zip(work, texts):
        for row in parse_ptxas(text):
            row["source"] = source.parent.parent.name
            rows.append(row)
    return rows


def resources_at(revision: str, archs) -> list[dict]:
    """resources() of the csrc tree of a git revision (for a before/after comparison)."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "csrc"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        return resources(archs, root=pathlib.Path(tmp))


def bench_bytes() -> list[dict]:
    """The bytes each GPU benchmark case of an op with CUDA kernels must move, per mode, as the harness
    counts them (harness.moved_bytes): one input set built by the bench file on the CPU and the op run by
    the CPU kernel for its outputs' sizes."""
    import torch

    from benchmarks import harness

    ops_with_kernels = {p.parent.parent.name for p in cuda_sources()}
    cpu = torch.device("cpu")
    rows = []
    for module in harness.load_groups():
        if harness.group_name(module) not in ops_with_kernels:
            continue
        for module_, case in harness.select([module], "cuda"):
            generator = torch.Generator(device=cpu).manual_seed(harness.seed_for(case.op, case.shape, 0))
            data = module.make_inputs(case, cpu, generator)
            sets = [harness.InputSet(data, [t for t in harness.tensors(data) if t.requires_grad])]
            fn = module.make_fn(case, "kernel", cpu)
            in_bytes, moved = harness.nbytes(data), {}
            for mode, call in harness.mode_calls(fn, case, sets).items():
                moved[mode] = harness.moved_bytes(mode, in_bytes, harness.nbytes(call(sets[0])), moved.get("fwd", 0))
            rows.append(dict(op=case.op, shape=case.shape, dtype=case.dtype, **moved))
    return rows


def table(rows: list[dict], before: list[dict]) -> list[str]:
    """One line per kernel: sm_90 and sm_80 figures and occupancy, and sm_90's before the change."""
    by_kernel, was = {}, {(r["source"], r["kernel"], r["arch"]): r for r in before}
    for row in rows:
        by_kernel.setdefault((row["source"], row["kernel"]), {})[row["arch"]] = row
    lines = ["| op | kernel (dtype instantiation) | block | sm_90 registers (before) | sm_90 spill st/ld B (before) "
             "| sm_90 stack B (before) | static smem B | sm_90 occupancy | sm_80 registers | sm_80 spill st/ld B "
             "| sm_80 stack B | sm_80 occupancy |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (source, kernel), archs in sorted(by_kernel.items()):
        a, b = archs["sm_90"], archs["sm_80"]
        old = was.get((source, kernel, "sm_90"), dict(registers="-", spill_stores="-", spill_loads="-", stack="-"))
        threads = block_threads(source, kernel)
        occ = {arch: occupancy(r["registers"], r["smem"], threads, arch) for arch, r in (("sm_90", a), ("sm_80", b))}
        fmt = lambda o: (f"{o['occupancy']:.1%} ({o['blocks']} block{'s' * (o['blocks'] != 1)}, "  # noqa: E731
                         f"{o['limiter']})")
        lines.append(f"| {source} | `{kernel}` | {threads} | {a['registers']} ({old['registers']}) | "
                     f"{a['spill_stores']}/{a['spill_loads']} ({old['spill_stores']}/{old['spill_loads']}) | "
                     f"{a['stack']} ({old['stack']}) | {a['smem']} | {fmt(occ['sm_90'])} | {b['registers']} | "
                     f"{b['spill_stores']}/{b['spill_loads']} | {b['stack']} | {fmt(occ['sm_80'])} |")
    return lines


def report(rows: list[dict], before: list[dict], revision: str, moved: list[dict], newest: str) -> str:
    def spilling(rs):
        return sum(1 for r in rs if r["spill_stores"] or r["spill_loads"])

    archs = ("sm_90", "sm_80", newest)
    lines = [
        "# CUDA kernels: registers, shared memory, spills and occupancy (ptxas, no GPU)",
        "",
        f"Generated by `python -m benchmarks.cuda_resources --write --before {revision}` (nvcc's ptxas -v with the "
        "extension's flags, device code only); \"(before)\" is the same for the csrc of that revision. "
        "tests/test_cuda_registers.py fails on any spill at sm_90.",
        "",
        f"Kernel compilations that spill ({', '.join(archs)}): {spilling(rows)} of {len(rows)} now, "
        f"{spilling(before)} of {len(before)} before.",
        "",
        "Occupancy is theoretical, by the occupancy calculator's rules: resident blocks per SM are the fewest "
        "that registers (allocated per warp in units of 256: warps by registers = floor(65536 / "
        "(ceil(regs x 32 / 256) x 256)), then whole blocks of the launch's warps), shared memory (static + "
        "dynamic + 1 KB reserved per block, in units of 128 bytes, of 228 KB per SM at sm_90 and 164 KB at "
        "sm_80), threads (2048 per SM) and the 32-block limit allow; occupancy = resident warps / 64. No launch "
        "sets dynamic shared memory (DM_LAUNCH passes 0), so the shared memory is ptxas's static figure. Block: "
        "threads per block at launch (kThreadsPerBlock = 256; multi_range_contrastive's backward 128; "
        "min_reprojection 32 x 8; ssim 32 x 16, 32 x 8 with float64). The kernels' comments say why occupancy "
        "is below 50% where it is.",
        "",
    ]
    lines += table([r for r in rows if r["arch"] in LIMITS], [r for r in before if r["arch"] == "sm_90"])
    was = {(r["source"], r["kernel"]): r for r in before if r["arch"] == newest}
    lines += ["", f"## {newest}, the newest architecture of setup.py's DEFAULT_CUDA_ARCHS", "",
              "| op | kernel | registers (before) | spill st/ld B (before) | stack B (before) |",
              "|---|---|---|---|---|"]
    for r in sorted((r for r in rows if r["arch"] == newest), key=lambda r: (r["source"], r["kernel"])):
        o = was.get((r["source"], r["kernel"]), dict(registers="-", spill_stores="-", spill_loads="-", stack="-"))
        lines.append(f"| {r['source']} | `{r['kernel']}` | {r['registers']} ({o['registers']}) | "
                     f"{r['spill_stores']}/{r['spill_loads']} ({o['spill_stores']}/{o['spill_loads']}) | "
                     f"{r['stack']} ({o['stack']}) |")
    lines += ["", "## Bytes each GPU benchmark case must move", "",
              "What the roofline floor's memory term divides by the copy bandwidth, as benchmarks/harness.py counts "
              "it (inputs read once; outputs and, for fwd_bwd, the input gradients written once), for the cases "
              "of the `cuda` run set of the ops with CUDA kernels.", "",
              "| op | shape | dtype | fwd bytes | fwd_bwd bytes |", "|---|---|---|---|---|"]
    lines += [f"| {m['op']} | {m['shape']} | {m['dtype']} | {m['fwd']:,} | "
              + (f"{m['fwd_bwd']:,} |" if "fwd_bwd" in m else "- |") for m in moved]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help=f"write {RESULT.relative_to(ROOT)}")
    parser.add_argument("--before", default="HEAD", help="git revision to compare with (default HEAD)")
    args = parser.parse_args(argv)
    newest = newest_arch()
    archs = ("sm_90", "sm_80", newest)
    text = report(resources(archs), resources_at(args.before, archs), args.before, bench_bytes(), newest)
    if args.write:
        RESULT.write_text(text)
        print(f"wrote {RESULT}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
