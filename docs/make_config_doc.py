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
from routesim.theory import critical_rate, effective_gain

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
    lines += _gains()
    lines += ["## Sweepable fields", "",
              ", ".join(f"`{k}`" for k in sorted(C.SWEEPABLE)), "",
              "and every parameter of a registered law, `controller.params.NAME` "
              "(see [controllers.md](controllers.md)).", ""]
    return "\n".join(lines)


#: (law, update near balance, gain g of one mode in the first window, bias step per
#: window under a sustained error e, critical rate u_c). ``e = (mean c - c) / mean c``.
GAINS = [
    ("proportional", "`b += u e`", "`u lambda`", "`u e`", "`2 / lambda_max`"),
    ("ema", "`m = beta m + (1 - beta) F`, `b -= u (m - 1/N)` (centred)",
     "`u (1 - beta) lambda / N`", "`u e / N`", "`2 (1 + beta) N / ((1 - beta) lambda_max)`"),
    ("momentum_tanh", "`v = beta v + (1 - beta) tanh(e / s)`, `b += u v` (centred)",
     "`u (1 - beta) lambda / s`", "`u e / s` (for `abs(e) << s`; at most `u`)",
     "`2 (1 + beta) s / ((1 - beta) lambda_max)`"),
    ("sign, sign_centred", "`b += u sign(e)`", "none: a relay, step `u` whatever `e`",
     "`u sign(e)`", "none: a period-2 cycle at every rate, load amplitude about `2 lambda u / pi`"),
    ("rms", "`b -= u (F - 1/N) / RMS(F - 1/N)`", "none: steps of RMS `u` whatever `e`",
     "`u e / RMS(e)`", "none predicted"),
    ("quantile", "`b = q b + (1 - q) b_hat`", "`1 - q` towards the window's dual estimate "
     "(`u` unused)", "-", "none predicted"),
]


def _gains() -> list[str]:
    """The loop gain of every law and the conversion between their rates."""
    n, beta, s = 64, 0.9, 0.1
    prop = float(effective_gain("proportional", 1.0, 1.0, num_experts=n))
    ema = float(effective_gain("ema", 1.0, 1.0, num_experts=n, momentum=beta))
    tanh = float(effective_gain("momentum_tanh", 1.0, 1.0, num_experts=n, momentum=beta,
                                tanh_scale=s))
    uc = {law: float(critical_rate(law, 1.0, num_experts=n, momentum=beta, tanh_scale=s))
          for law in ("proportional", "ema", "momentum_tanh")}
    lines = ["## Loop gains of the laws", "",
             "The same `bias_update_rate` means very different loops under different laws. "
             "Near the equilibrium `b*` a bias offset `x` moves the relative load error "
             "`e = (mean c - c) / mean c` by `-A x`, `A = (N/K) dp/db`; along an eigenvector "
             "of `A` with loop gain `lambda` the linear laws follow "
             "`z^2 - (1 + beta - g) z + beta = 0` with the gain `g` below (`beta = momentum`, "
             "0 for the proportional law; `s = tanh_scale`; `F = c / sum c`; "
             "docs/theory.md). They are stable while `0 < g < 2 (1 + beta)` for the largest "
             "`lambda`, which gives `u_c`.", "",
             "| law | update near balance | gain `g` of a mode (first window) | bias step "
             "per window under a sustained error `e` | critical rate `u_c` |",
             "|---|---|---|---|---|"]
    for row in GAINS:
        lines.append("| " + " | ".join(row) + " |")
    lines += ["",
              f"So at one nominal rate the EMA law's first-window gain is `(1 - beta) / N` of "
              f"the proportional law's (1/{prop / ema:.0f} for N = {n}, beta = {beta}) and "
              f"its sustained gain `1 / N`; momentum-tanh's is `(1 - beta) / s` times it "
              f"({tanh / prop:g} for s = {s}). An EMA rate `u` has the first-window gain of "
              "a proportional rate `u (1 - beta) / N`, but the filter adds a pole at `beta`, "
              f"so the stability limits differ by more: u_c is {uc['ema'] / uc['proportional']:.0f} "
              f"times the proportional law's for EMA and {uc['momentum_tanh'] / uc['proportional']:g} "
              "times for momentum-tanh at these settings.", "",
              "To compare laws at the same distance from their stability limit, give the rate "
              "in units of the critical rate predicted for the point's own scenario: "
              "`bias_update_rate = \"0.5 u_c\"` (or a sweep, "
              "`\"controller.bias_update_rate\" = [\"0.25 u_c\", \"0.5 u_c\", \"2 u_c\"]`). "
              "Before the run the expression is resolved to a number with "
              "`routesim.theory.critical_rates` (the point's equilibrium and loop gains) and "
              "stored in `sweep.resolved`, so a run of the stored config repeats the same "
              "numbers; the labels and the `controller.bias_update_rate` coordinate keep the "
              "expression, the coordinate `controller.bias_update_rate.resolved` holds the "
              "number. It is refused for the laws without a critical rate (the sign laws "
              "oscillate at every rate; rms and quantile have no linear analysis) and where "
              "the loop gain is not modelled: traffic other than popularity, drifting "
              "popularity, Expert Choice, group-limited top-K, a capacity factor, a learning "
              "router, an additive bias on softmax probabilities. `routesim.predict(config)` "
              "gives each point's `u_c` with the other predictions.", ""]
    return lines


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}", file=sys.stderr)
