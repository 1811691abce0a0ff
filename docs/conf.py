"""Sphinx configuration of depthmetric's API reference.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (and ``-b doctest`` for the
examples), from the repository root, with the extension built in place (``scripts/bootstrap.sh``).
Only Sphinx's built-in extensions are used.
"""
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)  # the in-place build (depthmetric/_C*.so) is the one documented and doctested

import depthmetric  # noqa: E402

project = "depthmetric"
author = "depthmetric contributors"
release = version = depthmetric.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build", "_generated"]
html_theme = "alabaster"
html_static_path = []

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = True

# Examples run with the doctest builder; each page's examples share one namespace.
doctest_global_setup = """
import torch
import depthmetric
torch.manual_seed(0)
"""


def _write_cli_help(app):
    """``depthmetric --help`` and each command's help, written at build time so the page never drifts."""
    from depthmetric.training.cli import build_parser

    out = os.path.join(app.srcdir, "_generated")
    os.makedirs(out, exist_ok=True)
    os.environ.setdefault("COLUMNS", "110")
    parser = build_parser()
    texts = {"depthmetric": parser.format_help()}
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        texts[name] = p.format_help()
    for name, text in texts.items():
        path = os.path.join(out, f"cli-{name}.txt")
        old = open(path).read() if os.path.exists(path) else None
        if old != text:  # rewrite only on change, so Sphinx does not rebuild the page every time
            with open(path, "w") as f:
                f.write(text)


def setup(app):
    app.connect("builder-inited", _write_cli_help)
# The docstrings' >>> examples run too (group "default"); the pages' examples run in one group per page.
