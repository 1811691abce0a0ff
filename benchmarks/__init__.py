"""depthmetric's benchmark suite: every op's kernel against its pure-PyTorch reference twin (and peers).

Run ``python -m benchmarks --help``. The machinery is in :mod:`benchmarks.harness`; each
``benchmarks/bench_<group>.py`` declares its cases in a table.
"""
