"""Pure-PyTorch twins of every compiled kernel: the oracle for tests and ``backend="reference"``.

Each twin is written as plainly as the spec reads (rolled copies, unfold, per-step tensors), trading
memory and speed for obviousness. Each returns what the kernel returns, minus saved-for-backward state.
"""
