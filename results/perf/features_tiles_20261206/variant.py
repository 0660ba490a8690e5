"""Runs ``python -m lolsearch.perf`` with the fused feature maps at the configs the probe found best (a probe.py
JSON; the committed kernels, W[h] loaded once per program) or as they were (``old``: forward R 64 / 4 warps / 3 stages
one tile per program, dx and parameter-gradient R 32 / 8 warps / 2 stages, the parameter-gradient kernel reloading
W[h] per tile, ``old_bwd.py``), for side-by-side rows on one machine:

    python3 results/perf/features_tiles_20261206/variant.py {probe.json,old} <perf arguments>
"""

from __future__ import annotations

import json
import re
import sys

from lolsearch.kernels import featuremap

from lolsearch import perf

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from old_bwd import old_features_bwd_kernel  # noqa: E402


def config(name: str) -> dict:
    """``R64L2w4s3`` (L optional) as launch settings."""
    r, lt, w, s = re.fullmatch(r"(?:new)?R(\d+)(?:L(\d+))?w(\d+)s(\d+)", name).groups()
    return dict(R=int(r), num_warps=int(w), num_stages=int(s), **({"L": int(lt)} if lt else {}))


if __name__ == "__main__":
    which, args = sys.argv[1], sys.argv[2:]
    if which == "old":
        featuremap.FWD.update(R=64, L=1, num_warps=4, num_stages=3)
        featuremap.DX.update(R=32, num_warps=8, num_stages=2)
        featuremap.BWD.update(R=32, num_warps=8, num_stages=2)
        featuremap.features_bwd_kernel = old_features_bwd_kernel
    else:
        with open(which) as fh:
            best = json.load(fh)
        featuremap.FWD.update(config(best["best_fwd"]))
        featuremap.DX.update(config(best["best_dx"]))
        featuremap.BWD.update(config(best["best_bwd"]))
    print(f"feature-map configs: forward {featuremap.FWD}, dx {featuremap.DX}, parameter-gradient {featuremap.BWD} "  # noqa: T201
          f"({featuremap.features_bwd_kernel.fn.__name__})", flush=True)
    sys.exit(perf.main(args))
