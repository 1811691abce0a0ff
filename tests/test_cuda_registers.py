"""No CUDA kernel spills registers: every csrc/*/cuda/*.cu file compiled for sm_90 with ptxas -v (the
extension's flags, device code only, no GPU needed) reports 0 bytes of spill stores and loads for every
kernel instantiation. benchmarks/results/cuda-kernels-sm90.md has the registers and occupancy per kernel."""
import concurrent.futures

import pytest
import torch

from benchmarks import cuda_resources

NVCC = cuda_resources.find_nvcc()
pytestmark = pytest.mark.skipif(
    NVCC is None or torch.version.cuda is None,
    reason="needs nvcc (CUDA_HOME, /usr/local/cuda/bin or PATH) and a CUDA build of torch with its headers",
)
SOURCES = cuda_resources.cuda_sources()


@pytest.fixture(scope="module")
def reports():
    """ptxas -v of each source at sm_90, two nvcc at a time."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        texts = pool.map(lambda path: cuda_resources.compile_with_ptxas(path, "sm_90", NVCC), SOURCES)
        return dict(zip(SOURCES, texts))


@pytest.mark.parametrize("source", SOURCES, ids=[p.parent.parent.name for p in SOURCES])
def test_no_kernel_spills_at_sm90(reports, source):
    rows = cuda_resources.parse_ptxas(reports[source])
    assert rows, f"ptxas reported no kernel for {source.name}"
    spills = [f"{r['kernel']}: {r['spill_stores']} bytes spill stores, {r['spill_loads']} bytes spill loads "
              f"({r['registers']} registers)" for r in rows if r["spill_stores"] or r["spill_loads"]]
    assert not spills, f"{source.name} spills at sm_90:\n" + "\n".join(spills)


def test_parse_ptxas_reads_every_figure():
    text = (
        "ptxas info    : Compiling entry function '_Z6kernelPf' for 'sm_90'\n"
        "ptxas info    : Function properties for _Z6kernelPf\n"
        "    40 bytes stack frame, 104 bytes spill stores, 72 bytes spill loads\n"
        "ptxas info    : Used 64 registers, used 1 barriers, 640 bytes smem, 536 bytes cmem[0]\n"
    )
    [row] = cuda_resources.parse_ptxas(text)
    assert row["kernel"] in ("kernel", "_Z6kernelPf")  # demangled when a demangler is found
    assert (row["arch"], row["registers"], row["smem"]) == ("sm_90", 64, 640)
    assert (row["stack"], row["spill_stores"], row["spill_loads"]) == (40, 104, 72)


def test_occupancy_follows_the_calculator():
    # 96 registers: 3072 per warp, 21 warps' worth of registers, 2 blocks of 8 warps.
    assert cuda_resources.occupancy(96, 0, 256, "sm_90")["occupancy"] == 0.25
    # 64 registers, 256 threads: 4 blocks by registers (32 warps, 50%).
    assert cuda_resources.occupancy(64, 0, 256, "sm_90")["blocks"] == 4
    # 40 KB static shared memory (+1 KB reserved): 5 blocks at sm_90 (228 KB), 4 at sm_80 (164 KB).
    assert cuda_resources.occupancy(32, 40 * 1024, 256, "sm_90")["blocks"] == 5
    assert cuda_resources.occupancy(32, 40 * 1024, 256, "sm_80")["blocks"] == 4
