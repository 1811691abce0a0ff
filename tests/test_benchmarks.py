"""The benchmark suite runs and writes well-formed output. No timing is asserted here: speed targets
live in benchmarks/results, not in tests."""
import json
import math
import pathlib
import subprocess
import sys
import time

import pytest
import torch

from benchmarks import harness, report

ROOT = pathlib.Path(__file__).resolve().parents[1]

ENV_KEYS = {"date", "git_commit", "torch_version", "device", "device_name", "device_slug", "cpu_model",
            "cpu_cores", "torch_threads", "run_set", "copy_bandwidth_gbs", "matmul_gflops",
            "depthmetric_build"}
STAT_KEYS = {"median_ms", "q1_ms", "q3_ms", "min_ms", "max_ms", "repeats", "peak_mib", "bytes", "flops", "floor_ms",
             "bound", "roofline_fraction", "speedup", "mem_ratio"}


def positive_finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """``python -m benchmarks --quick`` on CPU, as a user runs it, with its JSON and plot."""
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--device", "cpu", "--json", str(out / "quick.json"),
         "--plot", str(out / "quick.png")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    return proc, out


def test_quick_run_exits_cleanly(quick_run):
    proc, _ = quick_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "fwd+bwd ms (IQR)" in proc.stdout


def test_quick_json_schema(quick_run):
    _, out = quick_run
    data = json.loads((out / "quick.json").read_text())
    env, rows = data["environment"], data["results"]
    assert ENV_KEYS <= env.keys()
    assert env["device"] == "cpu" and env["run_set"] == "quick"
    assert positive_finite(env["copy_bandwidth_gbs"]) and positive_finite(env["matmul_gflops"])

    ops_expected = set(harness.op_names(harness.load_groups()))
    assert ops_expected == {r["op"] for r in rows}, "every op of every bench file has rows"
    for row in rows:
        assert row["status"] in ("ok", "skipped"), f"{row['op']} {row['backend']}: {row['reason']}"
        if row["status"] == "skipped":
            assert row["reason"], "a skipped row says why"
            continue
        assert row["fwd"] is not None
        for mode in harness.MODES:
            stats = row[mode]
            if stats is None:
                continue
            assert STAT_KEYS <= stats.keys()
            assert stats["repeats"] >= 3
            assert 0 < stats["min_ms"] <= stats["q1_ms"] <= stats["median_ms"] <= stats["q3_ms"] <= stats["max_ms"]
            assert stats["peak_mib"] >= 0 and math.isfinite(stats["peak_mib"])
            assert stats["bytes"] > 0 and positive_finite(stats["flops"])
            assert positive_finite(stats["roofline_fraction"]) and stats["bound"] in ("memory", "compute")
            floor, _ = harness.Roofline(env["copy_bandwidth_gbs"] * 1e9, env["matmul_gflops"] * 1e9).floor(
                stats["bytes"], stats["flops"])
            assert stats["floor_ms"] == pytest.approx(floor * 1e3)
            for ratio in ("speedup", "mem_ratio"):
                assert stats[ratio] is None or positive_finite(stats[ratio]), (row, ratio)
            if row["backend"] == "reference":
                assert stats["speedup"] == 1.0


def test_multi_range_contrastive_measured_both_ways(quick_run):
    """The op on main is measured by kernel and reference, and the reference holds more memory."""
    _, out = quick_run
    rows = {r["backend"]: r for r in json.loads((out / "quick.json").read_text())["results"]
            if r["op"] == "multi_range_contrastive"}
    assert rows["reference"]["status"] == "ok"
    if rows["kernel"]["status"] == "skipped":  # the extension was not built
        pytest.skip(rows["kernel"]["reason"])
    assert rows["kernel"]["fwd_bwd"]["speedup"] is not None
    assert rows["reference"]["fwd_bwd"]["peak_mib"] > rows["kernel"]["fwd_bwd"]["peak_mib"]


def test_quick_plot_is_a_png(quick_run):
    _, out = quick_run
    assert (out / "quick.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_renders(quick_run):
    _, out = quick_run
    data = json.loads((out / "quick.json").read_text())
    env, rows = data["environment"], data["results"]
    text = report.render_text(rows, env)
    markdown = report.render_markdown(rows, env)
    header = text.splitlines()[1]
    for column in report.COLUMNS:
        assert column in header and f" {column} " in markdown
    for row in rows:
        assert row["op"] in (text if row["status"] == "ok" else text.split("Not run:")[-1])
    ok = [r for r in rows if r["status"] == "ok"]
    table_lines = [line for line in markdown.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table_lines) == 1 + len(ok)
    assert all(line.count("|") == len(report.COLUMNS) + 1 for line in table_lines)


def test_cpu_peak_memory_sees_torch_allocations():
    """The CPU peak comes from the allocator's events: a 16 MiB temporary inside the call is seen."""
    inputs = harness.InputSet({}, [])
    peak, out_bytes = harness.peak_extra_bytes(lambda _: torch.ones(4 << 20).sum(), inputs, torch.device("cpu"))
    assert 16 << 20 <= peak < 17 << 20
    assert out_bytes == 4


def test_roofline_floor_is_the_larger_limit():
    """Worked by hand: 10 GB/s and 100 GFLOP/s. 1 GB and 5 GFLOP: memory 0.1 s, compute 0.05 s -> 0.1 s,
    memory bound; 1 GB and 50 GFLOP: compute 0.5 s binds."""
    roofline = harness.Roofline(bandwidth=10e9, flop_rate=100e9)
    assert roofline.floor(1e9, 5e9) == (pytest.approx(0.1), "memory")
    assert roofline.floor(1e9, 50e9) == (pytest.approx(0.5), "compute")


def test_roofline_fraction_of_a_measured_case():
    """measure_backend turns the floor into the fraction of it reached: a call of about 20 ms whose floor
    is 10 ms (memory, 4 MiB at 400 MiB/s; its 1 MFLOP takes 1 ms at 1 GFLOP/s) reaches about half."""
    case = harness.Case("op", "shape", {}, sets=("quick",), backward=False)
    data = {"x": torch.zeros(1 << 20)}  # 4 MiB read; the output is 4 bytes
    sets = [harness.InputSet(data, [])] * 2
    settings = harness.Settings(0, 3, 3, 0.0, 0.0, 2, 0, 0, 0)
    roofline = harness.Roofline(bandwidth=((4 << 20) + 4) / 10e-3, flop_rate=1e9)

    def op(inputs):
        time.sleep(0.02)
        return inputs["x"][:1].sum()

    stats = harness.measure_backend(op, case, sets, torch.device("cpu"), settings, roofline, lambda mode: 1e6)["fwd"]
    assert stats["bound"] == "memory" and stats["floor_ms"] == pytest.approx(10.0)
    assert stats["roofline_fraction"] == pytest.approx(10.0 / stats["median_ms"])
    assert 0.3 < stats["roofline_fraction"] < 0.5


def test_every_case_counts_its_flops():
    """Each bench file counts the floating-point operations of every case, more with the backward."""
    for module in harness.load_groups():
        for case in module.CASES:
            fwd = module.flops(case, "fwd")
            assert positive_finite(fwd), (case.op, case.shape)
            if case.backward:
                assert module.flops(case, "fwd_bwd") > fwd, (case.op, case.shape)


def test_summary_statistics():
    stats = harness.summarize([0.004, 0.001, 0.003, 0.002, 0.005])
    assert stats["median_ms"] == pytest.approx(3.0)
    assert (stats["q1_ms"], stats["q3_ms"]) == (pytest.approx(2.0), pytest.approx(4.0))
    assert (stats["min_ms"], stats["max_ms"], stats["repeats"]) == (pytest.approx(1.0), pytest.approx(5.0), 5)


def test_ops_selection():
    groups = harness.load_groups()
    ops = {case.op for _, case in harness.select(groups, "quick", ["ssim"])}
    assert ops == {"ssim_box3", "ssim_gauss11"}
    losses = {case.op for _, case in harness.select(groups, "quick", ["depth_losses", "depth_metric_sums"])}
    assert {"silog", "trimmed_mae", "multiscale_derivative", "ssi", "metrics"} == losses
    assert not harness.select(groups, "quick", ["no_such_op"])


def test_every_op_has_two_realistic_sizes_per_device():
    for run_set in ("cpu", "cuda"):
        shapes: dict[str, set] = {}
        for _, case in harness.select(harness.load_groups(), run_set):
            shapes.setdefault(case.op, set()).add(case.shape)
        assert all(len(s) >= 2 for s in shapes.values()), (run_set, shapes)


def test_no_memory_ratio_against_a_near_zero_peak():
    def row(backend, peak_mib):
        return {"op": "op", "shape": "s", "dtype": "float32", "device": "cpu", "backend": backend, "status": "ok",
                "fwd": {"median_ms": 2.0, "peak_mib": peak_mib}, "fwd_bwd": None}

    ref, big, tiny = row("reference", 90.0), row("kernel", 3.0), row("kernel", 0.01)
    harness.add_ratios([ref, big, tiny])
    assert big["fwd"]["mem_ratio"] == 30.0 and ref["fwd"]["mem_ratio"] == 1.0
    assert tiny["fwd"]["mem_ratio"] is None and tiny["fwd"]["speedup"] == 1.0


def test_spread_of_runs_pairs_each_runs_kernel_with_its_own_reference():
    from benchmarks import spread

    def run(kernel_ms, reference_ms, load):
        def row(backend, ms, status="ok"):
            return {"group": "g", "op": "op", "shape": "B1", "backend": backend, "status": status,
                    "fwd": {"median_ms": ms}, "fwd_bwd": {"median_ms": 10 * ms}}
        rows = [row("kernel", kernel_ms), row("reference", reference_ms), row("peer", 1.0, status="skipped"),
                {**row("pytorch", 5.0), "group": "other"}]  # the same op and shape in another bench group
        env = {"device_name": "cpu", "cpu_cores": 2, "torch_version": "2.14", "torch_threads": 2, "git_commit": "abc1234",
               "date": "d", "load_average": [load, load]}
        return {"environment": env, "results": rows}

    runs = [run(1.0, 20.0, 0.5), run(2.0, 50.0, 1.5), run(1.5, 24.0, 0.7)]
    (only,) = spread.spread(runs)  # the skipped peer and the other group's case have no row
    assert (only["backend"], only["runs"]) == ("reference", 3)
    assert only["kernel_ms"] == (15.0, 10.0, 20.0)  # fwd+bwd where the case has it
    assert only["ratio"] == (20.0, 16.0, 25.0)  # per run 20x, 25x, 16x: not the ratio of the medians (16x)
    assert "| op | B1 | reference | 15.0 (10.0-20.0) | 240.0 (200.0-500.0) | 20.0x (16.0-25.0) |" in (
        spread.render_markdown(spread.spread(runs), runs))
