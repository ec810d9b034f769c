"""Documentation stays true: config reference, documented parameters, README commands."""

import dataclasses
import importlib
import inspect
import pkgutil
import re
import runpy
from pathlib import Path

import pytest

import routesim
from routesim import config as C

ROOT = Path(__file__).parent.parent


def test_configuration_reference_is_current():
    render = runpy.run_path(str(ROOT / "docs" / "make_config_doc.py"))["render"]
    assert (ROOT / "docs" / "configuration.md").read_text() == render(), (
        "docs/configuration.md is stale: run python docs/make_config_doc.py")


@pytest.mark.parametrize("name", list(C._SECTIONS))
def test_every_config_field_is_documented(name):
    cls = C._SECTIONS[name]
    doc = inspect.getdoc(cls)
    for f in dataclasses.fields(cls):
        assert re.search(rf"^{f.name}\b|, {f.name}\b", doc, re.M), f"{name}.{f.name} undocumented"


def _public_functions():
    for info in pkgutil.walk_packages(routesim.__path__, "routesim."):
        if info.name.endswith("__main__"):
            continue
        mod = importlib.import_module(info.name)
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name, None)
            if inspect.isfunction(obj) and obj.__module__ == mod.__name__:
                yield f"{info.name}.{name}", obj


@pytest.mark.parametrize("qualname,fn", list(_public_functions()),
                         ids=[q for q, _ in _public_functions()])
def test_documented_parameters_match_signature(qualname, fn):
    doc = inspect.getdoc(fn) or ""
    assert doc, f"{qualname} has no docstring"
    m = re.search(r"Parameters\n-+\n(.*?)(\n\n[A-Z][a-z]+\n-+|\Z)", doc, re.S)
    if not m:
        return  # short helpers document their arguments in prose
    documented = set()
    for line in m.group(1).splitlines():
        if line and not line.startswith(" "):
            documented |= {n.strip().lstrip("*") for n in line.split(":")[0].split(",")}
    # ``xp`` (the array namespace) is the same everywhere and documented once per module.
    params = [p for p in inspect.signature(fn).parameters if p not in ("self", "xp")]
    missing = [p for p in params if p not in documented]
    assert not missing, f"{qualname}: parameters {missing} are not documented"
    extra = documented - set(params) - {"xp"}
    assert not extra, f"{qualname}: documents {sorted(extra)} which it does not take"


def _public_objects():
    """(module name, qualified name, object) of every public function and class."""
    for info in pkgutil.walk_packages(routesim.__path__, "routesim."):
        if info.name.endswith("__main__"):
            continue
        mod = importlib.import_module(info.name)
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name, None)
            if ((inspect.isfunction(obj) or inspect.isclass(obj))
                    and obj.__module__ == mod.__name__):
                yield info.name, f"{info.name}.{name}", obj


def _has_examples(obj) -> bool:
    return bool(re.search(r"^Examples\n-+\n", inspect.getdoc(obj) or "", re.M))


_REQUIRED = [(q, o) for _, q, o in _public_objects()]


@pytest.mark.parametrize("qualname,obj", _REQUIRED, ids=[q for q, _ in _REQUIRED])
def test_every_public_object_has_examples(qualname, obj):
    """Each public function and class shows a doctest example (run by --doctest-modules)."""
    assert _has_examples(obj), f"{qualname} has no Examples section"
    assert ">>> " in inspect.getdoc(obj).split("Examples", 1)[1], f"{qualname}: empty Examples"


def test_readme_gives_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text
    assert "make test" in (ROOT / ".ci" / "run").read_text()
