"""The API reference (docs/) documents every public name, and shows every public loss in a doctest example.

Cheap: reads the .rst sources, builds nothing (CI builds the pages with ``sphinx -W`` and runs their
examples with ``sphinx -b doctest``, see .ci/run)."""
import importlib
import inspect
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


# ---------------------------------------------------------------------------------------------------------
# Structured docstrings (Google style, rendered by sphinx.ext.napoleon): every public function lists each of
# its parameters under ``Args:`` and says what it gives under ``Returns:``; a class lists its constructor's
# parameters under ``Args:`` (in its own docstring or ``__init__``'s), a module's ``forward`` its parameters
# (in its docstring or the class's), and ``Returns:`` is in the class docstring or ``forward``'s; the public
# methods a class defines (``preset``, ``update``, ...) follow the function rule.

_SECTION = re.compile(r"^(\w[\w ]*):[ \t]*$", re.M)
_ENTRY = re.compile(r"^    \**(\w+)(?: \([^)]*\))?:", re.M)


def _sections(doc: str | None) -> dict[str, str]:
    """A cleaned docstring's sections by title (``Args``, ``Returns``, ...), each the text under it."""
    text = inspect.cleandoc(doc or "")
    heads = list(_SECTION.finditer(text))
    return {h.group(1): text[h.end():heads[i + 1].start() if i + 1 < len(heads) else len(text)]
            for i, h in enumerate(heads)}


def _listed(*docs: str | None) -> set[str]:
    """The parameter names listed under ``Args:`` in any of ``docs``."""
    return {name for doc in docs for name in _ENTRY.findall(_sections(doc).get("Args", ""))}


def _params(fn) -> list[str]:
    return [p.name for p in inspect.signature(fn).parameters.values()
            if p.name not in ("self", "cls") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _structured_problems(name: str, obj) -> list[str]:
    problems = []
    if inspect.isclass(obj):
        own = obj.__dict__
        init_doc = own["__init__"].__doc__ if "__init__" in own else None
        missing = set(_params(obj)) - _listed(obj.__doc__, init_doc)
        if missing:
            problems.append(f"{name}: Args: of the class docstring lacks {sorted(missing)}")
        forward = getattr(obj, "forward", None)
        returns = "Returns" in _sections(obj.__doc__)
        if forward is not None and callable(forward):
            missing = set(_params(forward)) - _listed(forward.__doc__, obj.__doc__)
            if missing:
                problems.append(f"{name}.forward: Args: lacks {sorted(missing)}")
            returns = returns or "Returns" in _sections(forward.__doc__)
        if not returns:
            problems.append(f"{name}: no Returns: in the class docstring or forward's")
        for attr, member in own.items():
            member = getattr(member, "__func__", member)  # classmethod, staticmethod
            if not attr.startswith("_") and attr not in ("forward", "extra_repr") and inspect.isfunction(member):
                problems += _structured_problems(f"{name}.{attr}", member)
        return problems
    missing = set(_params(obj)) - _listed(obj.__doc__)
    if missing:
        problems.append(f"{name}: Args: lacks {sorted(missing)}")
    if "Returns" not in _sections(obj.__doc__):
        problems.append(f"{name}: no Returns: section")
    return problems


def _public_callables() -> dict[str, object]:
    out = {}
    for module in (depthmetric, depthmetric.metrics, depthmetric.distributed):
        for n in module.__all__:
            obj = getattr(module, n)
            if callable(obj) and not inspect.ismodule(obj):
                out[f"{module.__name__}.{n}"] = obj
    return out


@pytest.mark.parametrize("name", sorted(_public_callables()))
def test_public_callable_has_structured_docstring(name):
    obj = _public_callables()[name]
    problems = _structured_problems(name, obj)
    assert not problems, "; ".join(problems)


def test_the_docstring_check_reads_sections():
    """The check is not vacuous: a parameter left out of Args:, or no Returns:, is found."""

    def documented(a, b=1):
        """Summary.

        Args:
            a: the first.
            b (int): the second.

        Returns:
            Nothing much.
        """

    def undocumented(a, b=1):
        """Summary.

        Args:
            a: the first.
        """

    assert _structured_problems("documented", documented) == []
    assert _structured_problems("undocumented", undocumented) == [
        "undocumented: Args: lacks ['b']", "undocumented: no Returns: section"]
