"""What a release ships: setup.py finds the CUDA toolkit and runtime where they are (so `pip install .` works
with build isolation), the sdist carries every source and header, and the library's files carry no data."""
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (ROOT / "setup.py").exists() or not (ROOT / "depthmetric").is_dir(),
                                reason="needs the checkout (not an installed wheel's tests)")


@pytest.fixture(scope="module")
def setup_py():
    """setup.py as a module: its functions, without running setup()."""
    spec = importlib.util.spec_from_file_location("depthmetric_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def executable(path: pathlib.Path, text: str) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_cuda_home_from_the_environment_wins(setup_py):
    assert setup_py.find_cuda_home({"CUDA_HOME": "/opt/cuda-x"}, which=lambda _: "/usr/bin/nvcc") == "/opt/cuda-x"
    assert setup_py.find_cuda_home({"CUDA_PATH": "/opt/cuda-y"}, which=lambda _: None) == "/opt/cuda-y"


def test_cuda_home_of_a_wrapper_script_is_the_toolkit_nvcc_reports(setup_py, tmp_path):
    # Like /usr/local/bin/nvcc: a script in /usr/local/bin that runs the toolkit's nvcc (torch guesses /usr/local).
    toolkit = tmp_path / "cuda-13.0"
    real = executable(toolkit / "bin" / "nvcc", f'#!/bin/sh\necho "#$ TOP={toolkit}/bin/.." >&2\n')
    wrapper = executable(tmp_path / "bin" / "nvcc", f'#!/bin/sh\nexec {real} "$@"\n')
    assert setup_py.find_cuda_home({}, which=lambda _: str(wrapper)) == str(toolkit.resolve())


def test_cuda_home_of_a_symlinked_nvcc_is_its_target_toolkit(setup_py, tmp_path):
    toolkit = tmp_path / "cuda-13.0"
    real = executable(toolkit / "bin" / "nvcc", "#!/bin/sh\nexit 1\n")  # reports nothing: the link is followed
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvcc").symlink_to(real)
    assert setup_py.find_cuda_home({}, which=lambda _: str(tmp_path / "bin" / "nvcc")) == str(toolkit.resolve())


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc on PATH")
def test_cuda_home_of_the_nvcc_on_path_has_the_runtime_headers(setup_py):
    home = pathlib.Path(setup_py.find_cuda_home({}))
    assert list(home.glob("**/include/cuda_runtime.h")), home


def test_cuda_runtime_from_torchs_wheel_when_the_toolkit_lacks_it(setup_py, tmp_path):
    # torch's CUDA 13 wheels: site-packages/nvidia/cu13/{include,lib}, the runtime only as libcudart.so.13.
    site = tmp_path / "site-packages"
    runtime = site / "nvidia" / "cu13" / "lib" / "libcudart.so.13"
    runtime.parent.mkdir(parents=True)
    runtime.write_bytes(b"")
    (site / "nvidia" / "cu13" / "include").mkdir()
    toolkit = tmp_path / "cuda"
    (toolkit / "lib64").mkdir(parents=True)
    includes, library_dirs = setup_py.cuda_runtime_paths(str(toolkit), str(site), "13", str(tmp_path / "link"))
    assert includes == [str(site / "nvidia" / "cu13" / "include")]
    assert library_dirs == [str(tmp_path / "link")]
    assert (tmp_path / "link" / "libcudart.so").resolve() == runtime.resolve()  # what -lcudart looks for


def test_cuda_runtime_and_headers_of_the_toolkit_come_first(setup_py, tmp_path):
    # The wheel's headers may be of a newer CUDA release than the toolkit's nvcc (an isolated build met CUDA 13.2
    # headers beside nvcc 13.0, which CUDA's headers refuse): a complete toolkit's own are used alone.
    toolkit = tmp_path / "cuda"
    (toolkit / "lib64").mkdir(parents=True)
    (toolkit / "lib64" / "libcudart.so").write_bytes(b"")
    (toolkit / "include").mkdir()
    (toolkit / "include" / "cuda_runtime.h").write_bytes(b"")
    (tmp_path / "nvidia" / "cu13" / "lib").mkdir(parents=True)
    (tmp_path / "nvidia" / "cu13" / "include").mkdir()
    (tmp_path / "nvidia" / "cu13" / "lib" / "libcudart.so.13").write_bytes(b"")
    paths = setup_py.cuda_runtime_paths(str(toolkit), str(tmp_path), "13", str(tmp_path / "link"))
    assert paths == ([], [str(toolkit / "lib64")]) and not (tmp_path / "link").exists()


def test_no_cuda_runtime_anywhere_is_an_error_that_says_what_to_do(setup_py, tmp_path):
    with pytest.raises(RuntimeError, match="DEPTHMETRIC_WITH_CUDA=0"):
        setup_py.cuda_runtime_paths(str(tmp_path / "cuda"), str(tmp_path), "13", str(tmp_path / "link"))


def test_without_nvcc_the_build_says_in_one_line_it_builds_the_cpu_kernels(setup_py, monkeypatch, capsys):
    monkeypatch.delenv("DEPTHMETRIC_WITH_CUDA", raising=False)
    assert setup_py._with_cuda(None) is False
    assert capsys.readouterr().out.endswith("building the CPU kernels only\n")
    monkeypatch.setenv("DEPTHMETRIC_WITH_CUDA", "1")  # asked for: its absence is an error
    with pytest.raises(RuntimeError, match="DEPTHMETRIC_WITH_CUDA=1 but"):
        setup_py._with_cuda(None)


def run_setup(*args: str, cwd: pathlib.Path = ROOT) -> None:
    done = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def checkout_copy(dest: pathlib.Path) -> pathlib.Path:
    """The checkout's files (tracked, and new ones git does not ignore) without its build leftovers: an
    in-tree depthmetric.egg-info/SOURCES.txt would put files in the sdist that MANIFEST.in no longer names."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to list the checkout")
def test_sdist_carries_every_source_header_and_the_build_files(tmp_path):
    pytest.importorskip("build")
    source = checkout_copy(tmp_path / "checkout")
    run_setup("-m", "build", "--sdist", "--no-isolation", "--outdir", str(tmp_path), cwd=source)
    (sdist,) = tmp_path.glob("depthmetric-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    csrc = {str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*") if p.is_file()}
    assert csrc and csrc - names == set()
    assert {"setup.py", "pyproject.toml", "CMakeLists.txt", "LICENSE", "README.md", "CHANGELOG.md",
            "depthmetric/py.typed"} - names == set()
    assert [n for n in names if n.startswith(("samples/", "tests/")) or n.endswith(".so")] == []


def test_library_files_carry_no_data(tmp_path):
    # build_py lays out what the wheel holds besides the compiled libraries: Python files and package_data.
    run_setup("setup.py", "-q", "build_py", "--build-lib", str(tmp_path))
    files = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert "depthmetric/py.typed" in files and "depthmetric/training/data/samples.py" in files
    assert sorted(f for f in files if not f.endswith(".py")) == ["depthmetric/py.typed"]
