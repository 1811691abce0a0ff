"""Timing and memory machinery of the benchmark suite.

A bench file ``benchmarks/bench_<group>.py``, one per op (named as the op's module in ``depthmetric``),
declares:

- ``CASES``: a table of :class:`Case` (op, shape label, dims, dtype, backends, the run sets it belongs to);
- ``make_inputs(case, device, generator) -> dict``: fresh random inputs (never zeros); tensors that need a
  gradient are leaves with ``requires_grad=True`` (lists of tensors are allowed as values);
- ``make_fn(case, backend, device) -> callable | str``: the op as ``fn(inputs) -> output`` (a scalar for
  ops with a backward), or a string saying why ``backend`` is skipped (a peer not installed, CUDA only...);
- ``flops(case, mode) -> float``: the floating-point operations the op must do in ``mode`` ("fwd" or
  "fwd_bwd"), counted analytically beside CASES (the count is the op's, not a backend's: a backend that
  recomputes or materialises more does more than this).

How it measures (per case, per backend, per mode "fwd" and "fwd_bwd"):

- Several input sets are built per case (enough that their total size passes a few hundred MiB, at least
  2) and calls rotate through them, so no call finds its inputs already in cache. Every backend of a case
  sees the same sets.
- Warm-up calls first (on CUDA; on CPU the memory call below is the warm-up), then repeats until both a
  minimum count and a time budget are reached (capped; past a patience limit 3 repeats are enough, for a
  slow reference on 2 CPU cores); we report the median with the interquartile range and min/max. CUDA: CUDA events around each call,
  synchronised after it, so the time includes launch gaps a real training step would see. CPU:
  ``time.perf_counter`` around the call.
- "fwd" runs the op with autograd recording (a training forward: what the backward needs is saved);
  "fwd_bwd" runs it and ``torch.autograd.grad`` of the output with respect to every leaf input.
- Peak extra memory is measured in a separate call before timing. CUDA: ``torch.cuda.max_memory_allocated``
  after ``reset_peak_memory_stats``, minus what was allocated before the call. CPU: the allocator's own
  allocation/free events recorded by ``torch.profiler`` (``profile_memory=True``): every CPU tensor
  allocation and free goes through c10's CPU allocator and is recorded with its size and time; the running
  sum's maximum is the peak extra memory of the call. (tracemalloc cannot see these allocations and RSS
  high-water marks are blurred by the malloc arena and need a process per case.) Scratch memory a kernel
  takes outside the tensor allocator (a small ``std::vector`` per thread) is not counted, on either device.
- The roofline floor of a case: the larger of the memory time, the bytes the op must move (each input
  tensor read once, each output and, for fwd_bwd, each input gradient written once) over the bandwidth of
  a large device-to-device tensor copy (``dst.copy_(src)``, read + write counted), and the compute time,
  the bench file's ``flops`` over the rate of a large fp32 ``torch.mm`` (2 n^3 operations, TF32 off), both
  measured in the same run with the run's threads. ``roofline_fraction = floor / median``: 1.0 would mean
  the op runs at copy speed or at matmul speed, whichever binds (``bound``: "memory" or "compute").
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import pkgutil
import statistics
import sys
import time
import zlib
from typing import Any, Callable, Iterable, Mapping

import torch

MODES = ("fwd", "fwd_bwd")
DEVICES = ("cpu", "cuda")
RUN_SETS = ("quick", *DEVICES)


@dataclasses.dataclass(frozen=True, eq=False)
class Case:
    """One row of a bench file's table: an op at one size, run by several backends.

    ``sets`` names the run sets the case belongs to: ``"quick"`` (tiny, for the smoke test), ``"cpu"`` (the
    CPU default) and ``"cuda"`` (the GPU default). ``backends`` are ``"kernel"`` (the compiled kernel of the
    run's device), ``"reference"`` (the pure-PyTorch twin), ``"pytorch"`` (an op without a kernel, run as
    it is: there is nothing to compare it with) or a peer package's name.
    """

    op: str
    shape: str
    dims: Mapping[str, Any]
    sets: tuple[str, ...]
    backends: tuple[str, ...] = ("kernel", "reference")
    dtype: str = "float32"
    backward: bool = True

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


@dataclasses.dataclass(frozen=True)
class Settings:
    warmup: int  # calls before the memory call (which is itself a warm-up for the timed calls)
    min_repeats: int
    max_repeats: int
    budget_s: float  # per (case, backend, mode), after warm-up
    patience_s: float  # past this, 3 repeats are enough (a slow reference on 2 CPU cores)
    max_sets: int
    set_target_bytes: int  # input sets are added until together they pass this size (at least 2)
    copy_bytes: int  # size of the bandwidth copy
    mm_size: int  # n of the n x n fp32 matmul that gives the flop rate

    @staticmethod
    def for_run(device: torch.device, quick: bool) -> "Settings":
        if quick:
            return Settings(0, 3, 3, 0.0, 0.0, 2, 0, 32 << 20, 256)
        if device.type == "cuda":
            return Settings(5, 30, 300, 0.4, 5.0, 8, 512 << 20, 1 << 30, 8192)
        return Settings(0, 5, 25, 1.5, 4.0, 4, 256 << 20, 256 << 20, 2048)


# --------------------------------------------------------------------------------------------- bench files

# the table's order; others follow by name
GROUP_ORDER = ("multi_range_contrastive", "ssim", "min_reprojection", "smoothness", "depth_losses", "depth_metric_sums")


def load_groups() -> list:
    """Every ``benchmarks/bench_*.py`` module, the flagship op first."""
    package = importlib.import_module("benchmarks")
    names = [m.name for m in pkgutil.iter_modules(package.__path__) if m.name.startswith("bench_")]
    rank = {f"bench_{g}": i for i, g in enumerate(GROUP_ORDER)}
    names.sort(key=lambda n: (rank.get(n, len(rank)), n))
    return [importlib.import_module(f"benchmarks.{name}") for name in names]


def backend_arg(backend: str, device: torch.device) -> str:
    """The ``backend=`` argument of a depthmetric op for a bench backend name: ``kernel`` is the compiled
    kernel of the run's device (asked for by name, so a missing build raises instead of falling back)."""
    return device.type if backend == "kernel" else backend


def optional_import(name: str):
    """A peer package, or None when it is not installed (peers are optional, never required)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def group_name(module) -> str:
    return module.__name__.rsplit(".", 1)[-1][len("bench_"):]


def op_names(groups: Iterable) -> list[str]:
    seen: dict[str, None] = {}
    for module in groups:
        for case in module.CASES:
            seen.setdefault(case.op, None)
    return list(seen)


def select(groups: Iterable, run_set: str | Iterable[str], ops: Iterable[str] | None = None):
    """``(module, case)`` pairs of the run set(s), filtered by ``ops`` (an op name, a group name, or an op
    name's prefix up to an underscore: ``ssim`` selects ``ssim_box3`` and ``ssim_gauss11``)."""
    sets = {run_set} if isinstance(run_set, str) else set(run_set)
    wanted = None if ops is None else [o.strip() for o in ops if o.strip()]
    picked = []
    for module in groups:
        for case in module.CASES:
            if not sets.intersection(case.sets):
                continue
            if wanted is not None and not any(
                w in (case.op, group_name(module)) or case.op.startswith(w + "_") for w in wanted
            ):
                continue
            picked.append((module, case))
    return picked


# ---------------------------------------------------------------------------------------------- tensors

def tensors(obj) -> list[torch.Tensor]:
    """The tensors inside ``obj`` (a tensor, or dicts/lists/tuples of them)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, Mapping):
        return [t for v in obj.values() for t in tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in tensors(v)]
    return []


def nbytes(obj) -> int:
    return sum(t.numel() * t.element_size() for t in tensors(obj))


def seed_for(*parts) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


@dataclasses.dataclass
class InputSet:
    data: dict
    leaves: list[torch.Tensor]


def make_input_sets(module, case: Case, device: torch.device, settings: Settings) -> list[InputSet]:
    sets: list[InputSet] = []
    while True:
        generator = torch.Generator(device=device).manual_seed(seed_for(case.op, case.shape, len(sets)))
        data = module.make_inputs(case, device, generator)
        sets.append(InputSet(data, [t for t in tensors(data) if t.requires_grad]))
        total = sum(nbytes(s.data) for s in sets)
        if len(sets) >= settings.max_sets or (len(sets) >= 2 and total >= settings.set_target_bytes):
            return sets


# ------------------------------------------------------------------------------------------- measuring

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(call: Callable[[InputSet], Any], sets: list[InputSet], device: torch.device,
               settings: Settings) -> list[float]:
    """Seconds per call, rotating through ``sets`` (warm-up is the caller's)."""
    times: list[float] = []
    started = time.perf_counter()
    i = 0
    while len(times) < settings.max_repeats:
        elapsed = time.perf_counter() - started
        if len(times) >= settings.min_repeats and elapsed >= settings.budget_s:
            break
        if len(times) >= 3 and elapsed >= settings.patience_s:
            break
        inputs = sets[i % len(sets)]
        i += 1
        if device.type == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            call(inputs)
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            call(inputs)
            times.append(time.perf_counter() - t0)
    return times


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the profiler back end's start/stop lines, written by C++ straight to file descriptor 2."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_extra_bytes(call: Callable[[InputSet], Any], inputs: InputSet, device: torch.device) -> tuple[int, int]:
    """Peak memory allocated during one call beyond what was allocated before it (see module docstring),
    and the bytes of the call's output."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out_bytes = nbytes(call(inputs))
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base, out_bytes
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out_bytes = nbytes(call(inputs))
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())  # stable: record order kept for equal stamps
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak, out_bytes


def _median_seconds(call: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Median seconds of ``call`` after two warm-up calls."""
    for _ in range(2):
        call()
    settings = Settings(warmup=0, min_repeats=repeats, max_repeats=repeats, budget_s=0.0, patience_s=1e9,
                        max_sets=1, set_target_bytes=0, copy_bytes=0, mm_size=0)
    return statistics.median(time_calls(lambda _: call(), [InputSet({}, [])], device, settings))


def copy_bandwidth(device: torch.device, size_bytes: int, repeats: int = 10) -> float:
    """Bytes per second of a large device-to-device ``copy_`` (read + write counted)."""
    src = torch.rand(size_bytes // 4, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() * src.element_size() / _median_seconds(lambda: dst.copy_(src), device, repeats)


def matmul_rate(device: torch.device, n: int, repeats: int = 5) -> float:
    """Floating-point operations per second of an n x n fp32 ``torch.mm`` (2 n^3 per product: n^3
    multiply-adds), in full fp32 precision (TF32 would count a faster, less precise product)."""
    a, b = torch.rand(n, n, device=device), torch.rand(n, n, device=device)
    out = torch.empty(n, n, device=device)
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        return 2 * n**3 / _median_seconds(lambda: torch.mm(a, b, out=out), device, repeats)
    finally:
        torch.set_float32_matmul_precision(precision)


@dataclasses.dataclass(frozen=True)
class Roofline:
    """The machine's two limits, measured in the same run as the cases."""

    bandwidth: float  # bytes/s of a large copy, read + write
    flop_rate: float  # fp32 operations/s of a large matmul

    @staticmethod
    def measure(device: torch.device, settings: Settings) -> "Roofline":
        return Roofline(copy_bandwidth(device, settings.copy_bytes), matmul_rate(device, settings.mm_size))

    def floor(self, nbytes: float, flops: float) -> tuple[float, str]:
        """Seconds an op moving ``nbytes`` and doing ``flops`` needs at best, and which limit binds."""
        memory, compute = nbytes / self.bandwidth, flops / self.flop_rate
        return (memory, "memory") if memory >= compute else (compute, "compute")


def summarize(times: list[float]) -> dict:
    ms = sorted(t * 1e3 for t in times)
    if len(ms) >= 2:
        q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive")
    else:
        q1 = q3 = ms[0]
    return {"median_ms": statistics.median(ms), "q1_ms": q1, "q3_ms": q3, "min_ms": ms[0], "max_ms": ms[-1],
            "repeats": len(ms)}


# ------------------------------------------------------------------------------------------------ runs

def _row(module, case: Case, device: torch.device, backend: str, status: str, reason: str = "") -> dict:
    return {"group": group_name(module), "op": case.op, "shape": case.shape, "dims": dict(case.dims),
            "dtype": case.dtype, "device": device.type, "backend": backend, "status": status,
            "reason": reason, "input_sets": 0, "fwd": None, "fwd_bwd": None}


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def _free(device: torch.device) -> None:
    """Return cached blocks between cases (tensors themselves are freed by reference counting; a full
    ``gc.collect`` costs a quarter second with torch loaded)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def mode_calls(fn: Callable, case: Case, sets: list[InputSet]) -> dict[str, Callable[[InputSet], Any]]:
    """The calls timed per mode: ``fwd`` runs ``fn`` with autograd recording; ``fwd_bwd`` (for an op with
    a backward and inputs that need a gradient) also takes the gradient of every leaf input."""
    def forward(inputs: InputSet):
        return fn(inputs.data)

    def forward_backward(inputs: InputSet):
        return torch.autograd.grad(fn(inputs.data), inputs.leaves, allow_unused=True)

    calls = {"fwd": forward}
    if case.backward and sets[0].leaves:
        calls["fwd_bwd"] = forward_backward
    return calls


def moved_bytes(mode: str, in_bytes: int, out_bytes: int, fwd_bytes: int = 0) -> int:
    """The bytes a call must move: its inputs read once and its outputs written once. fwd_bwd's output is
    the input gradients; the forward's output (a scalar loss, usually: ``fwd_bytes - in_bytes``) is added."""
    return in_bytes + out_bytes + (fwd_bytes - in_bytes if mode == "fwd_bwd" else 0)


def measure_backend(fn: Callable, case: Case, sets: list[InputSet], device: torch.device,
                    settings: Settings, roofline: Roofline, flops: Callable[[str], float]) -> dict:
    """Both modes of one backend: peak extra memory, timing, bytes moved, flops (``flops(mode)``) and the
    fraction of the roofline floor reached.

    Per mode: ``settings.warmup`` calls, then the memory call (also a warm-up: nothing is timed before it
    has run once), then the timed calls.
    """
    in_bytes = nbytes(sets[0].data)
    results = {}
    for mode, call in mode_calls(fn, case, sets).items():
        for i in range(settings.warmup):
            call(sets[i % len(sets)])
        peak, out_bytes = peak_extra_bytes(call, sets[0], device)
        stats = summarize(time_calls(call, sets, device, settings))
        stats["peak_mib"] = peak / 2**20
        stats["bytes"] = moved_bytes(mode, in_bytes, out_bytes, results["fwd"]["bytes"] if results else 0)
        stats["flops"] = float(flops(mode))
        floor, stats["bound"] = roofline.floor(stats["bytes"], stats["flops"])
        stats["floor_ms"] = floor * 1e3
        stats["roofline_fraction"] = stats["floor_ms"] / stats["median_ms"]
        results[mode] = stats
    return results


def kernel_unavailable(device: torch.device) -> str | None:
    """Why the compiled kernels of ``device`` cannot run here (extension not built, built without CUDA)."""
    from depthmetric import _ext

    try:
        _ext.use_kernel(device.type, device)
    except (RuntimeError, ValueError) as error:
        return f"no compiled kernel: {_first_line(error)}"
    return None


def resolve(module, case: Case, backend: str, device: torch.device):
    """The bench file's callable for ``backend``, or a string saying why it is skipped."""
    if backend == "kernel":
        reason = kernel_unavailable(device)
        if reason:
            return reason
    return module.make_fn(case, backend, device)


def run_case(module, case: Case, device: torch.device, settings: Settings, roofline: Roofline,
             log: Callable[[str], None] = lambda _: None) -> list[dict]:
    rows = []
    try:
        sets = make_input_sets(module, case, device, settings)
    except Exception as error:  # a broken input builder is reported, and the run goes on
        return [_row(module, case, device, b, "error", _first_line(error)) for b in case.backends]
    for backend in case.backends:
        row = _row(module, case, device, backend, "ok")
        row["input_sets"] = len(sets)
        try:
            fn = resolve(module, case, backend, device)
            if isinstance(fn, str):
                row.update(status="skipped", reason=fn)
            else:
                row.update(measure_backend(fn, case, sets, device, settings, roofline,
                                           lambda mode: module.flops(case, mode)))
        except Exception as error:  # an op that fails (or runs out of memory) is reported, not fatal
            row.update(status="error", reason=_first_line(error))
        _free(device)
        rows.append(row)
        log(describe(row))
    del sets
    _free(device)
    return rows


def describe(row: dict) -> str:
    head = f"{row['op']:<24} {row['shape']:<20} {row['backend']:<15}"
    if row["status"] != "ok":
        return f"{head} {row['status']}: {row['reason']}"
    parts = [f"{m} {row[m]['median_ms']:.3f} ms, {row[m]['peak_mib']:.1f} MiB" for m in MODES if row[m]]
    return f"{head} " + "; ".join(parts)


MIN_PEAK_FOR_RATIO_MIB = 0.1  # below this a memory ratio only divides by allocator noise: none is given


def add_ratios(rows: list[dict]) -> list[dict]:
    """``speedup`` (reference time / time) and ``mem_ratio`` (reference peak / peak) per mode, against the
    reference row of the same op, shape, dtype and device; None where there is no reference to compare."""
    refs = {(r["op"], r["shape"], r["dtype"], r["device"]): r for r in rows
            if r["backend"] == "reference" and r["status"] == "ok"}
    for row in rows:
        ref = refs.get((row["op"], row["shape"], row["dtype"], row["device"]))
        for mode in MODES:
            stats = row[mode]
            if not stats:
                continue
            base = ref[mode] if ref else None
            stats["speedup"] = base["median_ms"] / stats["median_ms"] if base else None
            stats["mem_ratio"] = (base["peak_mib"] / stats["peak_mib"]
                                  if base and stats["peak_mib"] >= MIN_PEAK_FOR_RATIO_MIB else None)
    return rows


def run(pairs, device: torch.device, settings: Settings, log: Callable[[str], None] = lambda _: None):
    """Measure the roofline (copy bandwidth, matmul rate), then every ``(module, case)``; returns
    ``(roofline, rows)``."""
    roofline = Roofline.measure(device, settings)
    log(f"copy bandwidth on {device.type}: {roofline.bandwidth / 1e9:.1f} GB/s, fp32 matmul "
        f"{roofline.flop_rate / 1e9:.1f} GFLOP/s")
    rows: list[dict] = []
    for module, case in pairs:
        rows.extend(run_case(module, case, device, settings, roofline, log))
    return roofline, add_ratios(rows)
