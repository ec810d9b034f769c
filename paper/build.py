"""Build the manuscript: run every script it quotes, then fill the template.

Every number and figure in ``paper.md`` comes from a command listed in
``SOURCES``; nothing is typed by hand. Each command's standard output is kept
in ``generated/<name>.txt`` (written atomically), and ``template.md``'s
``{{name}}`` markers are replaced by that output.

    python paper/build.py            # run everything (tens of minutes on 2 cores)
    python paper/build.py --only alpha_dilemma leakage
    python paper/build.py --render   # only re-render from generated/
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GENERATED = HERE / "generated"

#: name -> command (run from the repository root with this interpreter)
SOURCES: dict[str, list[str]] = {
    "quickstart": ["-m", "routesim", "run", "examples/quickstart.toml", "--out",
                   "results/quickstart", "--no-progress"],
    "quickstart_figure": ["figures/fig_quickstart.py"],
    "loss_free_rates": ["figures/fig_loss_free_rates.py"],
    "controllers_zoo": ["-m", "routesim", "run", "examples/controllers_zoo.toml", "--no-progress"],
    "theory_vs_sim": ["analysis/theory_vs_sim.py", "--quick"],
    "alpha_dilemma": ["-m", "routesim", "run", "examples/alpha_dilemma.toml", "--no-progress"],
    "noisy_topk": ["-m", "routesim", "run", "examples/noisy_topk.toml", "--no-progress"],
    "leakage": ["analysis/leakage.py"],
    "meanfield_vs_exact": ["analysis/meanfield_vs_exact.py", "--jobs", "2", "--only",
                           "sign/linear", "sign/seq-corr", "sign_centred/micro-batch"],
    "bench_engine": ["benchmarks/bench_engine.py"],
    "bench_meanfield": ["benchmarks/bench_meanfield.py"],
}


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def run_source(name: str) -> None:
    """Run one source command and keep its output."""
    cmd = [sys.executable, *SOURCES[name]]
    print(f"[{name}] {' '.join(SOURCES[name])}", file=sys.stderr)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"[{name}] failed with exit status {proc.returncode}")
    header = f"$ python {' '.join(SOURCES[name])}\n"
    _write_atomic(GENERATED / f"{name}.txt", header + proc.stdout)


def render() -> str:
    """The template with every marker replaced by its generated output."""
    text = (HERE / "template.md").read_text()

    def fill(m: re.Match) -> str:
        path = GENERATED / f"{m.group(1)}.txt"
        if not path.exists():
            return f"*(not generated yet: run `python paper/build.py --only {m.group(1)}`)*"
        return "```\n" + path.read_text().rstrip() + "\n```"

    return re.sub(r"\{\{(\w+)\}\}", fill, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(SOURCES), default=None)
    parser.add_argument("--render", action="store_true", help="do not run, only render")
    args = parser.parse_args()
    if not args.render:
        for name in args.only or SOURCES:
            run_source(name)
    _write_atomic(HERE / "paper.md", render())
    print(f"wrote {HERE / 'paper.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
