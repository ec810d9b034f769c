"""The documentation site: every guide and example reaches it, and Sphinx builds it warning-free."""

import doctest
import importlib.util
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
GALLERY = runpy.run_path(str(DOCS / "make_gallery.py"))
EXAMPLES = sorted((ROOT / "examples").glob("*.toml")) + sorted((ROOT / "examples").glob("*.py"))


def test_every_guide_is_in_the_table_of_contents():
    index = (DOCS / "index.md").read_text()
    entries = set(re.findall(r"^([\w/]+)$", index, re.M))
    guides = {p.stem for p in DOCS.glob("*.md") if p.stem != "index"}
    assert guides <= entries, f"guides missing from docs/index.md: {sorted(guides - entries)}"
    assert {"api", "generated/gallery"} <= entries


def test_every_public_module_is_in_the_api_reference():
    listed = set(re.findall(r"^   (\w+)$", (DOCS / "api.rst").read_text(), re.M))
    package = ROOT / "routesim"
    modules = {p.stem for p in package.glob("*.py")} | {
        p.parent.name for p in package.glob("*/__init__.py")}
    public = {m for m in modules if not m.startswith("_")}
    assert public <= listed, f"modules missing from docs/api.rst: {sorted(public - listed)}"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_describes_itself_in_the_gallery(path, tmp_path):
    title, body = GALLERY["describe"](path)
    assert title != path.stem and len(title) > 20, (
        f"{path.name}: start it with a comment (TOML) or docstring (Python) saying what it shows")
    page = GALLERY["render"](tmp_path / "gallery.md")
    section = page.split(f"## `{path.name}`", 1)[1].split("\n## ", 1)[0]
    assert title in section and GALLERY["command"](path) in section
    include = re.search(r"```\{literalinclude\} (\S+)", section).group(1)
    assert (tmp_path / include).resolve() == path.resolve()


def test_gallery_script_examples():
    spec = importlib.util.spec_from_file_location("make_gallery", DOCS / "make_gallery.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = doctest.testmod(module)
    assert result.attempted >= 3 and result.failed == 0


def test_sphinx_builds_the_site_without_warnings(tmp_path):
    """The whole site through Sphinx's reader (the dummy builder writes no HTML): the
    guides, the API pages generated from every docstring and the gallery. Any warning,
    Sphinx's or a Python warning printed on the way, fails the test."""
    for name in ("sphinx", "myst_parser", "numpydoc"):
        pytest.importorskip(name)
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "dummy",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "out")],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr[-3000:]
