"""Figure: the sign rule's update-rate trade-off (Loss-Free Fig. 4 in miniature).

Top: MaxVio_batch against step for u = 1e-4, 1e-3, 1e-2 on drifting sigmoid
traffic. Bottom: the share of experts whose bias update reversed direction
(oscillation). Writes figures/out/loss_free_rates.{png,pdf}.

    python figures/fig_loss_free_rates.py
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from _common import ROOT, results_for  # noqa: E402
from routesim.plot import maxvio_plot, save_figure  # noqa: E402


def main() -> None:
    ds = results_for("loss_free_rates")
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 6.4), sharex=True)
    maxvio_plot(ds, ax=top, smooth=20)
    labels = [f"u = {u:g}" for u in ds["controller.bias_update_rate"].values]
    for line, label in zip(top.get_lines(), labels):
        line.set_label(label)
    top.legend(fontsize="small")
    flips = ds["flip_fraction"].mean("replica").rolling(step=20, min_periods=1).mean()
    for j, label in enumerate(labels):
        bottom.plot(ds["step"], flips.isel(point=j), label=label)
    bottom.set_ylabel("bias update reversals (share of experts)")
    bottom.set_xlabel("step")
    bottom.grid(alpha=0.3)
    tail = ds.isel(step=slice(-200, None)).mean(["step", "replica"])
    print("rate      MaxVio_batch (last 200 steps)  update reversals  steps to MaxVio_batch < 0.5")
    below = (ds["maxvio_batch"].mean("replica") < 0.5)
    for j, u in enumerate(ds["controller.bias_update_rate"].values):
        hit = below.isel(point=j).values
        first = int(hit.argmax()) if hit.any() else "never"
        print(f"{u:<9g} {float(tail['maxvio_batch'][j]):>29.4f}  "
              f"{float(tail['flip_fraction'][j]):>16.3f}  {first!s:>27}")
    for p in save_figure(fig, ROOT / "figures" / "out" / "loss_free_rates"):
        print(p)


if __name__ == "__main__":
    main()
