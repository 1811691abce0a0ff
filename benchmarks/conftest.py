"""``pytest benchmarks/ --benchmark-only`` runs the suite's cases under pytest-benchmark.

Options: ``--bench-device cpu|cuda`` (default: cuda when available) and ``--bench-set quick|cpu|cuda``
(default: the device's set, as ``python -m benchmarks`` uses). Peak extra memory goes to each
benchmark's ``extra_info``.
"""
import pytest
import torch

from benchmarks import harness


def pytest_addoption(parser):
    group = parser.getgroup("depthmetric benchmarks")
    group.addoption("--bench-device", choices=harness.DEVICES, default=None)
    group.addoption("--bench-set", choices=harness.RUN_SETS, default=None)


def _device(config) -> torch.device:
    return torch.device(config.getoption("--bench-device") or ("cuda" if torch.cuda.is_available() else "cpu"))


def pytest_generate_tests(metafunc):
    if "bench_case" not in metafunc.fixturenames:
        return
    device = _device(metafunc.config)
    run_set = metafunc.config.getoption("--bench-set") or device.type
    params = [
        pytest.param((module, case, backend, mode), id=f"{case.op}-{case.shape.replace(' ', '_')}-{backend}-{mode}")
        for module, case in harness.select(harness.load_groups(), run_set)
        for backend in case.backends
        for mode in harness.MODES
        if mode == "fwd" or case.backward
    ]
    metafunc.parametrize("bench_case", params)


@pytest.fixture
def bench_device(request) -> torch.device:
    device = _device(request.config)
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("--bench-device cuda: no CUDA device")
    return device


@pytest.fixture
def bench_settings(request, bench_device) -> harness.Settings:
    run_set = request.config.getoption("--bench-set") or bench_device.type
    return harness.Settings.for_run(bench_device, quick=run_set == "quick")
