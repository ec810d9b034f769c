"""Record the built-in logit trace (routesim/data/trace_topics.npz).

The trace is recorded from routesim's own topic-mixture traffic (features
through fixed router weights), quantised to float16: 16 steps of 512 tokens
(2 sequences of 256) over 16 experts. It is small enough to ship and lets
``traffic.kind = "trace"`` be tested without downloads. Replace it with a
trace recorded from a real router (same layout: an array ``logits`` of shape
(steps, tokens, experts)) to replay real traffic.

    python examples/make_trace.py [OUT.npz]
"""

import sys

import numpy as np

from routesim import config_from_dict
from routesim.engines.exact import make_simulator  # noqa: F401  (documents the source)
from routesim import traffic
from routesim.rng import point_keys


def record(steps: int = 16) -> np.ndarray:
    cfg = config_from_dict({
        "run": {"steps": steps, "seed": 7},
        "batch": {"num_sequences": 2, "seq_length": 256},
        "router": {"num_experts": 16, "topk": 2},
        "traffic": {"kind": "features", "feature_dim": 8, "num_topics": 4,
                    "topic_spread": 0.7, "router_init_scale": 1.5},
    })
    params = traffic.make_traffic_params(cfg.points())
    keys = point_keys(cfg.run.seed, [0], 1)
    state = traffic.init_traffic(np, params, keys)
    out = [traffic.logits(np, params, state, keys, t, 0, cfg.batch.tokens_per_step)[0, 0]
           for t in range(steps)]
    return np.stack(out).astype(np.float16)


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else "routesim/data/trace_topics.npz"
    np.savez_compressed(path, logits=record())
    print(f"wrote {path}")
