"""Sphinx configuration of the routesim documentation (``make docs``).

The guides are the Markdown files beside this one (read by myst-parser), the
API reference is generated from the numpydoc docstrings (autosummary), and the
gallery page is written from ``examples/`` by ``make_gallery.py`` at each build.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the routesim of this checkout
sys.path.insert(0, str(HERE))

import make_gallery  # noqa: E402

import routesim  # noqa: E402

project = "routesim"
author = "the routesim developers"
copyright = "2026, the routesim developers"
release = routesim.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md"]
templates_path = ["_templates"]

# API reference: one page per public module, its __all__ only.
autosummary_generate = True
autosummary_ignore_module_all = False
autosummary_imported_members = False
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "none"  # the numpydoc sections give the types
autodoc_mock_imports = ["cupy", "cupyx"]

numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()

myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath"]

html_theme = "alabaster"
html_title = f"routesim {release}"
html_static_path: list[str] = []

# The gallery page is generated from examples/ before the sources are read.
make_gallery.write(HERE / "generated" / "gallery.md")
