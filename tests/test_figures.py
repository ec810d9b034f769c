"""Figures and paper stay fresh: every figure script runs (quick mode), main.tex is complete.

The scripts run once, in this process, into temporary folders (figures,
generated LaTeX, an empty cache), so nothing stale can be read. Then:
at least ten figures in PDF and PNG, fonts embedded (no Type 3); every
``\\rs...`` macro that ``paper/main.tex`` uses is defined by the generated
``numbers.tex``; every table it inputs and every figure it includes was
written; every generated file carries the stamp of the current code.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "figures"
MAIN_TEX = ROOT / "paper" / "main.tex"


def _load(path: Path):
    if str(FIGURES) not in sys.path:
        sys.path.insert(0, str(FIGURES))
    spec = importlib.util.spec_from_file_location(f"_figure_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _common():
    """The figure scripts' shared module (the same object they import)."""
    if str(FIGURES) not in sys.path:
        sys.path.insert(0, str(FIGURES))
    return importlib.import_module("_common")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Run every figure script in quick mode; return (out, generated) folders."""
    base = tmp_path_factory.mktemp("figures")
    out, gen, cache = base / "out", base / "generated", base / "cache"
    scripts = sorted(FIGURES.glob("fig_*.py"))
    for script in scripts:
        rc = _load(script).main(["--quick", "--out", str(out), "--generated", str(gen),
                                 "--cache", str(cache)])
        assert rc == 0, f"{script.name} exited with {rc}"
    return out, gen, scripts


def defined_macros(numbers_tex: str) -> set[str]:
    """Names defined by ``\\newcommand{\\NAME}`` in a generated numbers file."""
    return set(re.findall(r"\\newcommand\{\\(rs[A-Za-z]+)\}", numbers_tex))


def used_macros(tex: str) -> set[str]:
    """Generated-number macros (``\\rs...``) a LaTeX source uses, comments removed."""
    text = re.sub(r"(?<!\\)%.*", "", tex)
    return set(re.findall(r"\\(rs[A-Z][A-Za-z]*)", text))


def missing_inputs(tex: str, generated: Path, figures: Path) -> list[str]:
    """Tables (``\\input{generated/...}``) and figures (``\\includegraphics{...}``) not written."""
    text = re.sub(r"(?<!\\)%.*", "", tex)
    missing = []
    for name in re.findall(r"\\input\{generated/([^}]+)\}", text):
        path = generated / (name if name.endswith(".tex") else f"{name}.tex")
        if not path.exists():
            missing.append(str(path))
    for name in re.findall(r"\\includegraphics(?:\[[^]]*\])?\{([^}]+)\}", text):
        path = figures / (name if name.endswith(".pdf") else f"{name}.pdf")
        if not path.exists():
            missing.append(str(path))
    return missing


def test_every_script_writes_a_pdf_and_png(built):
    out, _, scripts = built
    assert len(scripts) >= 10
    pngs, pdfs = sorted(out.glob("*.png")), sorted(out.glob("*.pdf"))
    assert len(pngs) >= 10 and len(pdfs) >= 10
    assert {p.stem for p in pngs} == {p.stem for p in pdfs}
    assert {p.stem for p in pdfs} >= {s.stem.removeprefix("fig_") for s in scripts}


def test_pdf_fonts_are_embedded_truetype_not_type3(built):
    out, _, _ = built
    for pdf in out.glob("*.pdf"):
        data = pdf.read_bytes()
        assert b"/Type3" not in data, f"{pdf.name}: Type 3 fonts"
        assert b"/FontFile2" in data, f"{pdf.name}: no embedded TrueType font"


def test_main_tex_uses_only_defined_macros(built):
    _, gen, _ = built
    tex = MAIN_TEX.read_text()
    used = used_macros(tex)
    assert len(used) >= 20, "main.tex should take its numbers from generated macros"
    undefined = used - defined_macros((gen / "numbers.tex").read_text())
    assert not undefined, f"main.tex uses undefined macros: {sorted(undefined)}"


def test_the_macro_check_catches_a_missing_macro(built):
    _, gen, _ = built
    numbers = (gen / "numbers.tex").read_text()
    broken = MAIN_TEX.read_text() + "\n\\rsNoSuchNumber\n"
    assert used_macros(broken) - defined_macros(numbers) == {"rsNoSuchNumber"}
    # a macro written by a script but dropped from numbers.tex is caught too
    some = sorted(defined_macros(numbers) & used_macros(MAIN_TEX.read_text()))[0]
    stripped = re.sub(rf"\\newcommand\{{\\{some}\}}.*\n", "", numbers)
    assert used_macros(MAIN_TEX.read_text()) - defined_macros(stripped) == {some}


def test_main_tex_inputs_and_figures_exist(built):
    out, gen, _ = built
    tex = MAIN_TEX.read_text()
    assert re.search(r"\\includegraphics", tex) and re.search(r"\\input\{generated/", tex)
    assert not missing_inputs(tex, gen, out)
    assert missing_inputs(tex + "\\includegraphics{no_such_figure}", gen, out) == [
        str(out / "no_such_figure.pdf")]


def test_generated_numbers_carry_the_current_code_stamp(built):
    _, gen, scripts = built
    stamp = _common().code_stamp()
    fragments = sorted((gen / "numbers").glob("*.tex"))
    assert {f.stem for f in fragments} == {s.stem.removeprefix("fig_") for s in scripts}
    for frag in fragments:
        assert f"% code {stamp}\n" in frag.read_text(), f"{frag.name}: stale or unstamped"
    assert f"\\newcommand{{\\rsCodeStamp}}{{{stamp}}}" in (gen / "numbers.tex").read_text()
    for table in gen.glob("tab_*.tex"):
        assert table.read_text().splitlines()[0].endswith(f"code {stamp}")


def test_cache_key_changes_with_config_and_code(monkeypatch, tmp_path):
    common = _common()
    ctx = common.Context("x", True, tmp_path, tmp_path, tmp_path)
    key = ctx._key({"a": 1}, scripts=False)
    assert ctx._key({"a": 2}, scripts=False) != key
    monkeypatch.setattr(common, "routesim_hash", lambda: "changed code")
    assert ctx._key({"a": 1}, scripts=False) != key
