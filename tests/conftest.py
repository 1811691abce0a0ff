import os
import pathlib

import pytest

from .registry import CUDA, ROOT

# Real RGB-D samples live beside the checkout (../shared/data); DEPTHMETRIC_SHARED_DATA overrides.
SHARED_DATA = pathlib.Path(os.environ.get("DEPTHMETRIC_SHARED_DATA", ROOT.parent / "shared" / "data"))


def pytest_collection_modifyitems(config, items):
    """Without a GPU, every CUDA variant (a ``cuda`` marker, or a parameter that is "cuda") is skipped, not
    left out, so ``N passed, M skipped`` says what was not checked here."""
    if CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        params = getattr(item, "callspec", None)
        if "cuda" in item.keywords or (params is not None and "cuda" in map(str, params.params.values())):
            item.add_marker(skip)


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
