"""Figure: MaxVio_batch of the quickstart's four controllers against step.

Reads results/quickstart/results.nc (simulating examples/quickstart.toml if it
is missing) and writes figures/out/quickstart_maxvio_batch.{png,pdf}.

    python figures/fig_quickstart.py
"""

import matplotlib

matplotlib.use("Agg")

from _common import ROOT, results_for  # noqa: E402
from routesim.plot import maxvio_plot, save_figure  # noqa: E402


def main() -> None:
    ax = maxvio_plot(results_for("quickstart"))
    for p in save_figure(ax.figure, ROOT / "figures" / "out" / "quickstart_maxvio_batch"):
        print(p)


if __name__ == "__main__":
    main()
