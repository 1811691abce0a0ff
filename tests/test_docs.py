"""The API reference (docs/) documents every public name, and shows every public loss in a doctest example.

Cheap: reads the .rst sources, builds nothing (CI builds the pages with ``sphinx -W`` and runs their
examples with ``sphinx -b doctest``, see .ci/run)."""
import importlib
import pathlib
import re

import pytest

import depthmetric

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
DIRECTIVE = re.compile(r"^\s*\.\. (?:auto(?:function|class|data|module|exception)|py:(?:function|class|data|module))"
                       r"::\s*([\w.]+)", re.M)


def _sources() -> str:
    files = sorted(DOCS.glob("*.rst"))
    assert files, f"no .rst pages in {DOCS}"
    return "\n".join(f.read_text() for f in files)


def _documented() -> set[str]:
    return set(DIRECTIVE.findall(_sources()))


def _public() -> list[str]:
    names = [f"depthmetric.{n}" for n in depthmetric.__all__]
    for module in ("metrics", "distributed", "training"):
        mod = importlib.import_module(f"depthmetric.{module}")
        names += [f"depthmetric.{module}.{n}" for n in mod.__all__]
    return names


@pytest.mark.parametrize("name", _public())
def test_public_name_is_documented(name):
    assert name in _documented(), f"{name} has no autodoc/py directive in docs/*.rst"


def test_documented_names_exist():
    """No directive names something that is gone (Sphinx would only warn at build time)."""
    for name in _documented():
        module, _, attr = name.rpartition(".")
        try:
            importlib.import_module(name)
            continue
        except ImportError:
            pass
        obj = importlib.import_module(module)
        assert hasattr(obj, attr), f"docs/ documents {name}, which does not exist"


# Every public function and module of the losses and heads (not the helpers build_info / set_finite_checks)
# is called in a ``>>>`` line of the pages.
_EXAMPLE_EXEMPT = {"build_info", "set_finite_checks"}


@pytest.mark.parametrize("name", [n for n in depthmetric.__all__
                                  if callable(getattr(depthmetric, n)) and n not in _EXAMPLE_EXEMPT])
def test_public_callable_has_an_example(name):
    calls = re.compile(rf"^\s*(?:>>>|\.\.\.) .*\b{re.escape(name)}\(", re.M)
    assert calls.search(_sources()), f"depthmetric.{name} is not called in any doctest example of docs/"
