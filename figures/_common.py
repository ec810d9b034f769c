"""Shared by the figure scripts: arguments, cached results, figures, numbers and tables.

Every script is ``python figures/fig_NAME.py [--quick] [--out DIR]
[--generated DIR] [--cache DIR]``. It simulates what it needs through
:meth:`Context.simulate` (or computes it through :meth:`Context.cached`),
writes ``DIR/NAME.{pdf,png}`` and its numbers as LaTeX macros
(``generated/numbers/NAME.tex``, gathered into ``generated/numbers.tex``)
and its tables (``generated/tab_*.tex``).

Results are cached under ``results/figure-cache/`` keyed by a hash of the
config (or the computation's parameters), of the routesim version and of
every source file of ``routesim/`` (and, for computations done in the
scripts, of the script itself and ``analysis/``): a changed config or changed code
is a different key, so a cached result is never stale.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the repository's routesim, also without an install
    sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import xarray as xr  # noqa: E402

from routesim import __version__, load, save, simulate  # noqa: E402
from routesim.plot import save_figure, use_paper_style  # noqa: E402

#: Default output folders.
FIGURES_OUT = ROOT / "figures" / "out"
GENERATED = ROOT / "paper" / "generated"
CACHE = ROOT / "results" / "figure-cache"


def _tree_hash(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.relative_to(ROOT)).encode())
        h.update(b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def routesim_hash() -> str:
    """Hash of the routesim version and every source file that results depend on.

    The drawing code (``routesim/plot/``, ``routesim/cli.py``) is left out: it
    changes figures, not results (the code stamp of the numbers covers it).
    """
    pkg = ROOT / "routesim"
    files = [p for p in pkg.rglob("*") if p.suffix in (".py", ".npz")
             and "__pycache__" not in p.parts
             and not p.is_relative_to(pkg / "plot") and p != pkg / "cli.py"]
    return hashlib.sha256((__version__ + _tree_hash(files)).encode()).hexdigest()


def scripts_hash() -> str:
    """Hash of the figure scripts and the analysis scripts they import."""
    files = sorted((ROOT / "figures").glob("*.py")) + sorted((ROOT / "analysis").glob("*.py"))
    return _tree_hash(files)


def code_stamp() -> str:
    """Version stamp of the code that made a result: ``VERSION+HASH`` (12 hex digits)."""
    files = [p for p in (ROOT / "routesim").rglob("*.py") if "__pycache__" not in p.parts]
    h = hashlib.sha256((routesim_hash() + _tree_hash(files) + scripts_hash()).encode()).hexdigest()
    return f"{__version__}+{h[:12]}"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


#: A value written by :func:`fmt` or :func:`fmt_rate` (set in math mode).
_NUMBER = re.compile(r"-?(\d+(\.\d+)?(\\times10\^\{-?\d+\})?|10\^\{-?\d+\}|\\infty)")


def fmt(x: float, digits: int = 2) -> str:
    """``x`` to ``digits`` significant digits, plain (no exponent) when sensible, for LaTeX."""
    x = float(x)
    if not math.isfinite(x):
        return r"\infty" if x > 0 else ("-" if math.isnan(x) else r"-\infty")
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    if mag < -3 or mag >= 6:
        mant = round(x / 10 ** mag, digits - 1)
        return f"{mant:g}\\times10^{{{mag}}}"
    dec = max(0, digits - 1 - mag)
    return f"{round(x, dec):.{dec}f}"


def fmt_rate(x: float) -> str:
    """A rate such as 1e-3 as ``10^{-3}`` or ``3\\times10^{-3}`` (math mode)."""
    mag = math.floor(math.log10(abs(x)))
    mant = round(x / 10 ** mag, 2)
    return f"10^{{{mag}}}" if mant == 1 else f"{mant:g}\\times10^{{{mag}}}"


@dataclass(frozen=True)
class Context:
    """Where one figure script reads and writes, and how large it runs."""

    name: str
    quick: bool
    out: Path
    generated: Path
    cache: Path

    def _key(self, payload: Any, scripts: bool) -> str:
        text = json.dumps(payload, sort_keys=True, default=str)
        extra = ""
        if scripts:  # the script that computes, and the analysis scripts it may import
            own = ROOT / "figures" / f"fig_{self.name}.py"
            files = [own] if own.exists() else []
            extra = _tree_hash(files + sorted((ROOT / "analysis").glob("*.py")))
        return hashlib.sha256((text + routesim_hash() + extra).encode()).hexdigest()[:24]

    def simulate(self, cfg: Any) -> xr.Dataset:
        """Results of ``cfg``, from the cache when the config and routesim are unchanged."""
        path = self.cache / f"sim-{self._key(cfg.to_json(), scripts=False)}.nc"
        if path.exists():
            return load(path)
        ds = simulate(cfg, progress=False)
        save(ds, path)
        return ds

    def cached(self, label: str, params: dict, compute: Callable[[], dict]) -> dict:
        """A JSON-able computation, cached by its parameters and the code it may use.

    The key covers routesim's source, this figure's script and ``analysis/``.
    """
        path = self.cache / f"{label}-{self._key({'label': label, **params}, scripts=True)}.json"
        if path.exists():
            return json.loads(path.read_text())
        value = compute()
        _write_atomic(path, json.dumps(value))
        return value

    def save(self, fig: Any, stem: str | None = None) -> list[Path]:
        """Write the figure as ``out/STEM.pdf`` and ``out/STEM.png`` (default stem: the name)."""
        paths = save_figure(fig, self.out / (stem or self.name))
        import matplotlib.pyplot as plt

        plt.close(fig)
        return paths

    def numbers(self, values: dict[str, str]) -> Path:
        """Write the script's macros and regather ``generated/numbers.tex``.

        ``values`` maps a macro name (letters only, prefixed ``rs`` when
        written) to its LaTeX text.
        """
        lines = [f"% generated by figures/fig_{self.name}.py; do not edit",
                 f"% code {code_stamp()}", f"% mode {'quick' if self.quick else 'full'}"]
        for key, text in values.items():
            if not key.isalpha():
                raise ValueError(f"macro name {key!r}: letters only")
            if _NUMBER.fullmatch(text):  # a minus sign, not a hyphen, in running text
                text = f"\\ensuremath{{{text}}}"
            lines.append(f"\\newcommand{{\\rs{key}}}{{{text}}}")
        path = self.generated / "numbers" / f"{self.name}.tex"
        _write_atomic(path, "\n".join(lines) + "\n")
        gather_numbers(self.generated)
        return path

    def table(self, stem: str, tex: str) -> Path:
        """Write a generated table ``generated/STEM.tex``."""
        path = self.generated / f"{stem}.tex"
        _write_atomic(path, f"% generated by figures/fig_{self.name}.py; code {code_stamp()}\n"
                      + tex)
        return path


def gather_numbers(generated: Path) -> Path:
    """Concatenate every ``numbers/*.tex`` into ``numbers.tex`` with the stamp and mode macros."""
    parts = sorted((generated / "numbers").glob("*.tex"))
    texts = [p.read_text() for p in parts]
    modes = {line.split()[-1] for t in texts for line in t.splitlines()
             if line.startswith("% mode ")}
    stamps = {line.split()[-1] for t in texts for line in t.splitlines()
              if line.startswith("% code ")}
    head = ["% generated by figures/_common.py from numbers/*.tex; do not edit",
            f"\\newcommand{{\\rsCodeStamp}}{{{'/'.join(sorted(stamps)) or code_stamp()}}}",
            f"\\newcommand{{\\rsMode}}{{{'quick' if 'quick' in modes else 'full'}}}"]
    path = generated / "numbers.tex"
    _write_atomic(path, "\n".join(head) + "\n" + "".join(texts))
    return path


def setup(name: str, doc: str, argv: list[str] | None = None) -> Context:
    """Parse the common arguments; set the paper style; return the script's Context."""
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small runs (seconds), for tests and drafts")
    parser.add_argument("--out", type=Path, default=FIGURES_OUT, help="folder of the figures")
    parser.add_argument("--generated", type=Path, default=GENERATED,
                        help="folder of the generated LaTeX (numbers, tables)")
    parser.add_argument("--cache", type=Path, default=CACHE, help="folder of cached results")
    args = parser.parse_args(argv)
    use_paper_style()
    return Context(name, args.quick, args.out, args.generated, args.cache)


def settling_step(trace, level: float, start: float, fraction: float = 0.1,
                  smooth: int = 5) -> float:
    """First step from which the trailing mean of ``trace`` stays within ``fraction`` of the way
    from ``level`` to ``start`` (inf if it never does)."""
    import numpy as np

    y = np.asarray(trace, float)
    kernel = np.ones(smooth) / smooth
    ys = np.convolve(y, kernel, mode="full")[: y.size]
    ys[: smooth - 1] = np.cumsum(y[: smooth - 1]) / np.arange(1, smooth)
    band = level + fraction * abs(start - level)
    outside = ys > band
    if not outside.any():
        return 0.0
    last = int(np.flatnonzero(outside)[-1])
    return float(last + 1) if last + 1 < y.size else math.inf


class Timer:
    """Prints the script's wall time to stderr on exit."""

    def __init__(self, name: str):
        self.name, self.t0 = name, time.perf_counter()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        print(f"[{time.perf_counter() - self.t0:5.1f} s] fig_{self.name}", file=sys.stderr)
        return False
