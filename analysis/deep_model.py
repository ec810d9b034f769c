"""Beyond one layer: layers, expert placement, zero-computation experts, hash routing.

The script prints

1. **a 16-layer model** (``examples/deep_model.toml``: Zipf popularity,
   each layer in its own order, layer correlation 0.5, a sign controller per
   layer, 8 expert-parallel ranks): median, 90th percentile and maximum over
   layers of the per-step MaxVio and of the rank straggler ratio, at a few
   steps and over the last half of the run;
2. **the straggler ratio** (max / mean rank load per computation batch of
   ``micro_batch_size x ep_size`` sequences) at ``ep_size`` 4, 8 and 32 for
   a skewed scenario without a controller (N = 64, K = 4, Zipf exponent 1):
   contiguous placement and EPLB-style replication (``ep_size`` redundant
   slots, greedy packing), simulation beside the theory
   (:func:`routesim.theory.expected_straggler` on the load map and the
   selection covariance) and the counting-noise floor of balanced routing
   (:func:`routesim.theory.counting_straggler`);
3. **zero-computation experts** (LongCat-Flash: 64 FFN + 32 zero experts,
   K = 8): the realised FFN experts per token under the ``zero_budget`` law
   for budgets 4 and 6, and the FFN experts' MaxVio;
4. **hash routing**: the long-window MaxVio of a Zipf-token hash table
   beside the table's own limit and the bound ``N f_max / K - 1``.

Usage::

    python analysis/deep_model.py [--steps 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np

from routesim import config_from_dict, load_config, simulate
from routesim.placement import contiguous_map, placement_matrix, plan_placement
from routesim.routing.hash import hash_table, token_frequencies
from routesim.theory import (counting_straggler, expected_straggler, hash_balance_limit,
                             hash_table_maxvio, load_map, selection_covariance)
from routesim.traffic import popularity

ROOT = pathlib.Path(__file__).resolve().parent.parent


def layers(steps: int, seed: int) -> None:
    """Per-layer percentiles of a 16-layer run."""
    cfg = load_config(ROOT / "examples" / "deep_model.toml").replace(
        **{"run.steps": steps, "run.seed": seed})
    ds = simulate(cfg, progress=False)
    print(f"1. {cfg.model.num_layers} layers, N={cfg.router.num_experts}, "
          f"K={cfg.router.topk}, ep_size={cfg.placement.ep_size}, computation batch "
          f"{ds.attrs['computation_batch_sequences']} sequences, sign u="
          f"{cfg.controller.bias_update_rate:g}")
    print(f"   {'step':>6s} | {'MaxVio median':>13s} {'p90':>7s} {'max':>7s} | "
          f"{'straggler median':>16s} {'p90':>7s} {'max':>7s} | {'planned median':>14s}")
    mv = ds["maxvio_batch_across_layers"].values[:, 0, 0]
    st = ds["rank_straggler_across_layers"].values[:, 0, 0]
    pl = ds["rank_straggler_planned_across_layers"].values[:, 0, 0]
    for s in (0, steps // 4, steps // 2, steps - 1):
        print(f"   {s:6d} | {mv[s, 0]:13.3f} {mv[s, 1]:7.3f} {mv[s, 2]:7.3f} | "
              f"{st[s, 0]:16.3f} {st[s, 1]:7.3f} {st[s, 2]:7.3f} | {pl[s, 0]:14.3f}")
    h = slice(steps // 2, None)
    print(f"   {'late':>6s} | {mv[h, 0].mean():13.3f} {mv[h, 1].mean():7.3f} "
          f"{mv[h, 2].mean():7.3f} | {st[h, 0].mean():16.3f} {st[h, 1].mean():7.3f} "
          f"{st[h, 2].mean():7.3f} | {pl[h, 0].mean():14.3f}")
    tokens = ds.attrs["computation_batch_sequences"] * cfg.batch.seq_length
    floor = float(counting_straggler(cfg.router.num_experts, cfg.router.topk,
                                     cfg.placement.ep_size, tokens))
    print(f"   counting-noise floor of the straggler ratio ({tokens} tokens): {floor:.3f}")


def stragglers(steps: int, seed: int) -> None:
    """Straggler ratio at ep_size 4, 8, 32 with and without replication, sim and theory."""
    n, k, length, a = 64, 4, 256, 1.0
    mu = popularity("zipf", n, zipf_exponent=a)
    p, sigma = load_map(mu, topk=k), selection_covariance(mu, topk=k)
    print(f"\n2. straggler ratio, N={n}, K={k}, Zipf({a:g}) popularity, no controller, "
          f"micro-batch 1 x {length} tokens; simulation mean [theory] over {steps} steps")
    print(f"   {'ep_size':>7s} {'batch tokens':>12s} | {'contiguous':>20s} | "
          f"{'replicated (+ep)':>20s} | {'counting floor':>14s}")
    for ep in (4, 8, 32):
        cfg = config_from_dict({
            "run": {"steps": steps, "seed": seed},
            "router": {"num_experts": n, "topk": k},
            "traffic": {"skew": "zipf", "zipf_exponent": a}, "controller": {"type": "none"},
            "batch": {"num_sequences": 32, "seq_length": length, "micro_batch_size": 1},
            "placement": {"ep_size": ep, "optimise": "greedy", "replicate_hottest": ep}})
        ds = simulate(cfg, progress=False)
        tokens = ep * length
        base = placement_matrix(contiguous_map(n, ep), ep)
        th_base, _ = expected_straggler(p, sigma, base, tokens=tokens, topk=k)
        th_rep, _ = expected_straggler(p, sigma, plan_placement(tokens * p, ep, ep),
                                       tokens=tokens, topk=k)
        sim_base = float(ds["rank_straggler"].mean())
        sim_rep = float(ds["rank_straggler_planned"].mean())
        floor = float(counting_straggler(n, k, ep, tokens))
        print(f"   {ep:7d} {tokens:12d} | {sim_base:9.3f} [{float(th_base):7.3f}] | "
              f"{sim_rep:9.3f} [{float(th_rep):7.3f}] | {floor:14.3f}")


def zero_experts(steps: int, seed: int) -> None:
    """The zero_budget law reaching its budget."""
    print(f"\n3. zero-computation experts: 64 FFN + 32 zero experts, K=8, zero_budget law "
          f"(u=0.01), last half of {steps} steps")
    print(f"   {'budget':>6s} | {'FFN experts/token':>17s} {'(sd)':>7s} | {'MaxVio FFN':>10s} "
          f"| {'no controller: FFN/token':>24s}")
    for budget in (4.0, 6.0):
        out = []
        for ctrl in ({"type": "zero_budget", "bias_update_rate": 0.01,
                      "params": {"ffn_budget": budget}}, {"type": "none"}):
            cfg = config_from_dict({
                "run": {"steps": steps, "seed": seed},
                "router": {"num_experts": 96, "zero_experts": 32, "topk": 8},
                "traffic": {"skew": "zipf", "zipf_exponent": 0.5}, "controller": ctrl,
                "batch": {"num_sequences": 8, "seq_length": 128}})
            late = simulate(cfg, progress=False).isel(step=slice(steps // 2, None))
            out.append(late)
        f = out[0]["ffn_per_token"].values.ravel()
        print(f"   {budget:6.1f} | {f.mean():17.3f} {f.std():7.3f} | "
              f"{float(out[0]['maxvio_ffn'].mean()):10.3f} | "
              f"{float(out[1]['ffn_per_token'].mean()):24.3f}")


def hashing(steps: int, seed: int) -> None:
    """Hash routing's balance limit."""
    print(f"\n4. hash routing, Zipf(1) token ids over 32768 ids, {steps} steps of 4096 tokens")
    print(f"   {'N':>4s} {'K':>2s} {'f_max':>7s} {'K/N':>7s} | {'MaxVio run':>10s} "
          f"{'table limit':>11s} {'bound':>7s}")
    f = token_frequencies(32768, 1.0)
    for n, k in ((64, 6), (256, 8)):
        cfg = config_from_dict({
            "run": {"steps": steps, "seed": seed},
            "router": {"num_experts": n, "topk": k, "router_type": "hash",
                       "hash_vocab_size": 32768, "hash_zipf_exponent": 1.0},
            "controller": {"type": "none"}, "batch": {"num_sequences": 16, "seq_length": 256}})
        ds = simulate(cfg, progress=False)
        limit = hash_table_maxvio(f, hash_table(32768, n, k, seed), n)
        print(f"   {n:4d} {k:2d} {f[0]:7.4f} {k / n:7.4f} | "
              f"{ds['maxvio_global_run'].item():10.3f} {limit:11.3f} "
              f"{hash_balance_limit(f, n, k):7.3f}")


def main() -> None:
    """Print the four tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    t0 = time.perf_counter()
    layers(args.steps, args.seed)
    stragglers(args.steps, args.seed)
    zero_experts(args.steps, args.seed)
    hashing(min(args.steps, 50), args.seed)
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
