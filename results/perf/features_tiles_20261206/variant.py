"""Runs ``python -m lolsearch.perf`` with the fused feature maps' forward and frozen-map dx kernels at the configs
the probe found best (a probe.py JSON) or at the old ones (``old``: R 64 / 4 warps / 3 stages forward, R 32 / 8 warps
/ 2 stages dx), for side-by-side rows on one machine:

    python3 results/perf/features_tiles_20261206/variant.py {probe.json,old} <perf arguments>
"""

from __future__ import annotations

import json
import re
import sys

from lolsearch.kernels import featuremap

from lolsearch import perf


def config(name: str) -> dict:
    r, w, s = (int(x) for x in re.fullmatch(r"R(\d+)w(\d+)s(\d+)", name).groups())
    return dict(R=r, num_warps=w, num_stages=s)


if __name__ == "__main__":
    which, args = sys.argv[1], sys.argv[2:]
    if which == "old":
        featuremap.FWD.update(R=64, num_warps=4, num_stages=3)
        featuremap.DX.update(R=32, num_warps=8, num_stages=2)
    else:
        with open(which) as fh:
            best = json.load(fh)
        featuremap.FWD.update(config(best["best_fwd"]))
        featuremap.DX.update(config(best["best_dx"]))
    print(f"feature-map configs: forward {featuremap.FWD}, dx {featuremap.DX}", flush=True)  # noqa: T201
    sys.exit(perf.main(args))
