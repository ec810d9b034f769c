"""Write docs/configuration.md from the config dataclasses' docstrings.

    python docs/make_config_doc.py

The test suite checks that the file is up to date.
"""

import dataclasses
import inspect
import math
import re
import sys
from pathlib import Path

from routesim import config as C

OUT = Path(__file__).with_name("configuration.md")


def _attributes(cls) -> dict[str, str]:
    doc = inspect.getdoc(cls) or ""
    m = re.search(r"Attributes\n-+\n(.*)", doc, re.S)
    if not m:
        return {}
    out: dict[str, str] = {}
    names: list[str] = []
    for line in m.group(1).splitlines():
        if line and not line.startswith(" "):
            names = [n.strip() for n in line.split(":")[0].split(",")]
            for n in names:
                out[n] = ""
        elif names:
            for n in names:
                out[n] = (out[n] + " " + line.strip()).strip()
    return out


def render() -> str:
    lines = ["# Configuration reference", "",
             "Generated from the dataclasses in `routesim/config/` by "
             "`python docs/make_config_doc.py`. Every field can be set in a TOML section of the "
             "same name; unknown keys are refused.", "",
             "A field that would have no effect in the chosen mode is refused too, naming the "
             "field and why (`controller.momentum` with `type = \"sign\"`, `traffic.drift_std` "
             "without `drift = \"random_walk\"`, `penalty.alpha` without `penalty.type`, a "
             "`run.kernel` that cannot run the config; the rules are in "
             "`routesim/config/_ignored.py`). In a TOML file a written field counts as set even "
             "at its default value; built in Python or from a dict (such as a config stored in "
             "results) a field counts as set when it differs from its default. A swept field "
             "counts as set at every point, and a field is refused only when no point of the "
             "sweep uses it. An empty file is refused. A `traffic.trace` file is read and "
             "checked when the config is read: an `.npz` archive holding a finite real array "
             "`logits` of shape (steps, tokens, experts), with the batch's tokens per step and "
             "`router.num_experts` experts.", ""]
    for section, cls in C._SECTIONS.items():
        lines += [f"## `[{section}]`", "", (inspect.getdoc(cls) or "").split("\n")[0], "",
                  "| field | default | meaning |", "|---|---|---|"]
        attrs = _attributes(cls)
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = ""
            if isinstance(default, float) and math.isinf(default):
                default = "inf"
            text = attrs.get(f.name, "").replace("|", "\\|")
            lines.append(f"| `{f.name}` | `{default!r}` | {text} |")
        lines.append("")
    lines += ["## Sweepable fields", "",
              ", ".join(f"`{k}`" for k in sorted(C.SWEEPABLE)), "",
              "and every parameter of a registered law, `controller.params.NAME` "
              "(see [controllers.md](controllers.md)).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}", file=sys.stderr)
