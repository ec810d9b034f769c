"""Write the gallery page of the documentation from ``examples/``.

Each example (a TOML config or a Python script) gets a section with its title,
its own description (the leading comment block of a TOML file, the docstring of
a script), the command that runs it and the file itself. Run by ``docs/conf.py``
at every build; ``python docs/make_gallery.py OUT.md`` writes it by hand.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def describe(path: Path) -> tuple[str, str]:
    """Title and description of one example, from its own text.

    Parameters
    ----------
    path : Path
        A ``.toml`` or ``.py`` file of ``examples/``.

    Returns
    -------
    title, description : str
        The first sentence and the rest (Markdown), with command lines kept as code.

    Examples
    --------
    >>> title, text = describe(EXAMPLES / "quickstart.toml")
    >>> title
    'Quickstart: four controllers on skewed sigmoid traffic (N = 64, K = 6).'
    >>> describe(EXAMPLES / "controllers_zoo.toml")
    ('Every bias controller on the same skewed traffic with a regime switch at step 200 (the popular experts change).', 'One run, eight points.')
    """
    text = path.read_text()
    if path.suffix == ".py":
        doc = ast.get_docstring(ast.parse(text)) or ""
        lines = doc.splitlines()
    else:
        lines = []
        for line in text.splitlines():
            if not line.startswith("#"):
                break
            lines.append(line[1:].removeprefix(" "))
    while lines and not lines[-1].strip():
        lines.pop()
    def is_command(line: str) -> bool:
        return line.lstrip().startswith(("routesim ", "python "))

    # the first paragraph ends at a blank line or a command line
    end = next((i for i, line in enumerate(lines) if not line.strip() or is_command(line)),
               len(lines))
    first = " ".join(line.strip() for line in lines[:end])
    # its first sentence: up to a full stop not followed by a digit ("Fig. 4"), or the end
    m = re.match(r"(.+?[.!?])(?:\s+(?=\D)|$)", first)
    title = m.group(1) if m else first or path.stem
    rest = [first[len(title):].strip()] if first[len(title):].strip() else []
    for line in lines[end:]:  # command lines as indented code, after a blank line
        if is_command(line):
            if rest and rest[-1].strip():
                rest.append("")
            line = "    " + line.strip()
        rest.append(line)
    body = "\n".join(rest).strip("\n")
    return title, body.replace("::\n", ":\n")


def command(path: Path) -> str:
    """The command that runs an example.

    Examples
    --------
    >>> command(EXAMPLES / "quickstart.toml")
    'routesim run examples/quickstart.toml'
    """
    if path.suffix == ".py":
        return f"python examples/{path.name}"
    return f"routesim run examples/{path.name}"


def render(out: Path) -> str:
    """The gallery page (Markdown for myst-parser), file paths relative to ``out``."""
    parts = ["# Gallery of examples", "",
             "Every file of `examples/`, with its own description and the command that runs "
             "it. The TOML files are configs for `routesim run` (the test suite runs each "
             "of them); the Python files use the API.", ""]
    files = sorted(EXAMPLES.glob("*.toml")) + sorted(EXAMPLES.glob("*.py"))
    for path in files:
        title, body = describe(path)
        rel = Path(os.path.relpath(path, out.parent)).as_posix()
        lang = "toml" if path.suffix == ".toml" else "python"
        parts += [f"## `{path.name}`", "", f"**{title}**", ""]
        if body:
            parts += [body, ""]
        parts += ["```sh", command(path), "```", "",
                  f"```{{literalinclude}} {rel}", f":language: {lang}", "```", ""]
    return "\n".join(parts)


def write(out: Path) -> None:
    """Write the page to ``out`` (only when its text changed, so builds stay incremental)."""
    text = render(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists() or out.read_text() != text:
        out.write_text(text)


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("gallery.md"))
