"""The suite's cases under pytest-benchmark (see conftest.py); ``python -m benchmarks`` is the main runner."""
import itertools

import pytest

from benchmarks import harness


def test_bench(benchmark, bench_case, bench_device, bench_settings):
    module, case, backend, mode = bench_case
    fn = harness.resolve(module, case, backend, bench_device)
    if isinstance(fn, str):
        pytest.skip(fn)
    sets = harness.make_input_sets(module, case, bench_device, bench_settings)
    calls = harness.mode_calls(fn, case, sets)
    if mode not in calls:
        pytest.skip(f"{case.op} has no input that needs a gradient")
    call = calls[mode]
    for i in range(bench_settings.warmup):
        call(sets[i % len(sets)])
    peak, _ = harness.peak_extra_bytes(call, sets[0], bench_device)
    benchmark.extra_info.update(op=case.op, shape=case.shape, dtype=case.dtype, backend=backend, mode=mode,
                                peak_mib=peak / 2**20, input_sets=len(sets))
    rotation = itertools.cycle(sets)

    def timed(inputs):
        call(inputs)
        harness.synchronize(bench_device)

    benchmark.pedantic(timed, setup=lambda: ((next(rotation),), {}), rounds=bench_settings.min_repeats,
                       iterations=1)
