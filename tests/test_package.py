"""The package's shape: the library imports torch alone and never the training application, its
install_requires say exactly that, and the application's modules stay small, one job each."""
import ast
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "depthmetric"
if not PACKAGE.is_dir():  # the tests of an installed wheel
    import depthmetric

    PACKAGE = pathlib.Path(depthmetric.__file__).parent
APPLICATION = ("matplotlib", "tqdm", "PIL", "tensorboard", "yaml", "torchmetrics", "depthmetric.training")


def test_import_depthmetric_loads_no_application_module():
    code = ("import json, sys, torch; before = set(sys.modules); import depthmetric; "
            "print(json.dumps(sorted(set(sys.modules) - before)))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                       cwd=ROOT.parent).stdout)
    assert "depthmetric" in loaded
    assert [m for m in loaded if m.split(".")[0] in APPLICATION or m.startswith(APPLICATION)] == []


def library_modules():
    return [p for p in PACKAGE.rglob("*.py") if "training" not in p.relative_to(PACKAGE).parts
            and p.name != "_torchmetrics.py"]  # the optional torchmetrics adapter imports torchmetrics


def imported_top_level(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_library_imports_torch_alone():
    third_party = set()
    for path in library_modules():
        third_party |= imported_top_level(path) - set(sys.stdlib_module_names) - {"depthmetric"}
    assert third_party == {"torch"}


def test_install_requires_are_what_the_library_imports():
    setup = ROOT / "setup.py"
    if not setup.exists():
        return  # an installed wheel: its metadata was checked where it was built
    call = next(node for node in ast.walk(ast.parse(setup.read_text()))
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup")
    keywords = {k.arg: k.value for k in call.keywords}
    requires = ast.literal_eval(keywords["install_requires"])
    assert [r.split(">")[0].split("=")[0] for r in requires] == ["torch"]
    extras = ast.literal_eval(keywords["extras_require"])
    assert {"pillow", "tqdm", "matplotlib", "tensorboard", "pyyaml"} <= set(extras["train"])


def test_application_modules_stay_small():
    sizes = {p.name: len(p.read_text().splitlines()) for p in (PACKAGE / "training").rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 320} == {}
