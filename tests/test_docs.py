"""Documentation stays true: config reference, documented parameters, README commands."""

import dataclasses
import doctest
import functools
import importlib
import inspect
import pkgutil
import re
import runpy
import sys
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


def _modules():
    """routesim and every module under it (a private module's ``__all__`` is API too)."""
    yield routesim
    for info in pkgutil.walk_packages(routesim.__path__, "routesim."):
        if not info.name.endswith("__main__"):
            yield importlib.import_module(info.name)


def _methods(cls):
    """The public methods a class defines itself (inherited ones are documented where defined).

    A dataclass field whose default is a function is an attribute, not a method.
    """
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else ()
    for name, value in vars(cls).items():
        fn = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
        if not name.startswith("_") and name not in fields and inspect.isfunction(fn):
            yield name, fn


def _public_objects():
    """(name, object, doctest name) of every public function, class and method, each once.

    Public: named in the ``__all__`` of routesim or of any module or package under it,
    wherever it is defined, and the public methods of those classes. The doctest name is
    the one ``--doctest-modules`` gives the object's examples in its defining module.
    """
    seen = set()
    for mod in _modules():
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name, None)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)) or id(obj) in seen:
                continue
            seen.add(id(obj))
            home = sys.modules[obj.__module__]
            key = next((k for k, v in vars(home).items() if v is obj), obj.__name__)
            yield f"{mod.__name__}.{name}", obj, f"{home.__name__}.{key}"
            if inspect.isclass(obj):
                for method, fn in _methods(obj):
                    if id(fn) not in seen:
                        seen.add(id(fn))
                        yield (f"{mod.__name__}.{name}.{method}", fn,
                               f"{home.__name__}.{key}.{method}")


_PUBLIC = list(_public_objects())
_CALLABLES = [(q, o) for q, o, _ in _PUBLIC if inspect.isfunction(o)]


def test_the_public_api_is_found():
    """The walk reaches the top-level exports, subpackage exports and methods."""
    names = {q for q, _, _ in _PUBLIC}
    assert {"routesim.simulate", "routesim.theory.load_map", "routesim.Config.replace",
            "routesim.testing.ControllerMachine.window"} <= names
    assert len(_PUBLIC) > 250


@pytest.mark.parametrize("qualname,fn", _CALLABLES, ids=[q for q, _ in _CALLABLES])
def test_documented_parameters_match_signature(qualname, fn):
    doc = inspect.getdoc(fn) or ""
    assert doc, f"{qualname} has no docstring"
    m = re.search(r"Parameters\n-+\n(.*?)(\n\n[A-Z][a-z]+\n-+|\Z)", doc, re.S)
    if not m:
        return  # no parameters (test_public_callables_have_parameters_and_returns)
    documented = set()
    for line in m.group(1).splitlines():
        if line and not line.startswith(" "):
            documented |= {n.strip().lstrip("*") for n in line.split(":")[0].split(",")}
    # ``xp`` (the array namespace) is the same everywhere and documented once per module.
    params = [p for p in inspect.signature(fn).parameters if p not in ("self", "cls", "xp")]
    missing = [p for p in params if p not in documented]
    assert not missing, f"{qualname}: parameters {missing} are not documented"
    extra = documented - set(params) - {"xp"}
    assert not extra, f"{qualname}: documents {sorted(extra)} which it does not take"


def _missing_sections(fn) -> list[str]:
    """The numpydoc sections ``fn`` needs and lacks: Parameters (when it takes any besides
    ``self``, ``cls`` and ``xp``) and Returns or Yields (when annotated to return something)."""
    doc = inspect.getdoc(fn) or ""
    sig = inspect.signature(fn)
    missing = []
    takes = [p for p in sig.parameters if p not in ("self", "cls", "xp")]
    if takes and not re.search(r"^Parameters\n-+\n", doc, re.M):
        missing.append("Parameters")
    returns = sig.return_annotation not in (None, "None", inspect.Signature.empty)
    if returns and not re.search(r"^(Returns|Yields)\n-+\n", doc, re.M):
        missing.append("Returns")
    return missing


@pytest.mark.parametrize("qualname,fn", _CALLABLES, ids=[q for q, _ in _CALLABLES])
def test_public_callables_have_parameters_and_returns(qualname, fn):
    """numpydoc Parameters and Returns (or Yields) sections wherever they apply."""
    missing = _missing_sections(fn)
    assert not missing, f"{qualname}: its docstring has no {' or '.join(missing)} section"


def _has_examples(obj) -> bool:
    return bool(re.search(r"^Examples\n-+\n", inspect.getdoc(obj) or "", re.M))


@functools.cache
def _collected_doctests(module_name: str) -> dict[str, int]:
    """Doctest name -> number of examples, as ``pytest --doctest-modules`` finds them."""
    mod = importlib.import_module(module_name)
    return {t.name: len(t.examples) for t in doctest.DocTestFinder().find(mod)}


@pytest.mark.parametrize("qualname,obj,doctest_name", _PUBLIC, ids=[q for q, _, _ in _PUBLIC])
def test_every_public_object_has_examples(qualname, obj, doctest_name):
    """Each public function, class and method shows a doctest example, and it is run.

    Checked for every object, with or without a docstring; ``--doctest-modules`` runs
    the examples of the module that defines the object, so they must be found there.
    """
    assert _has_examples(obj), f"{qualname} has no Examples section"
    assert ">>> " in inspect.getdoc(obj).split("Examples", 1)[1], f"{qualname}: empty Examples"
    assert _collected_doctests(obj.__module__).get(doctest_name, 0) > 0, (
        f"{qualname}: its examples are not collected from {obj.__module__}")


def test_readme_gives_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text
    assert "make test" in (ROOT / ".ci" / "run").read_text()
