"""Random calls of the walks' forward in the Triton interpreter (CPU, fp32) against the chunked reference: output,
final state (``return_state``) and an initial state, for random lengths, windows, layouts, GQA and forced segment
lengths (1, 2, 3, 5 or 8 chunks). The tests cover a fixed grid; this draws cases off it, aimed at the segment ends
that ``localwalk.diff`` adds (the last segment's state cover inside a tile, segments shorter than the window).

    cd <tree> && TRITON_INTERPRET=1 PYTHONPATH=$PWD python <checkout>/results/perf/localwalk_20261208/noedit.py \
        <checkout>/results/perf/localwalk_20261208/fuzz_cpu.py CASES SEED
"""

from __future__ import annotations

import os
import random
import sys

os.environ["LOLSEARCH_KERNELS_QUADRATIC_T"] = "0"  # every call walks
os.environ["LOLSEARCH_KERNELS_PARALLEL_T"] = "0"

import torch  # noqa: E402
from lolsearch.kernels import hybrid, hybrid_attention  # noqa: E402

from lolsearch.attention.chunked import LinearState, hybrid_attention_chunked  # noqa: E402


def rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-300)).item()


def main() -> int:
    cases, seed = int(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    print(hybrid.__file__, flush=True)  # noqa: T201
    worst = 0.0
    for i in range(cases):
        t = rng.choice([1, 63, 64, 65, 127, 128, 129, rng.randint(2, 700)])
        layout = rng.choice(["sliding", "terrace", "linear"])
        w = rng.choice([0, 1, 7, 33, 64, 65, 100, 128, 200, 256])
        h, hkv = rng.choice([(2, 1), (4, 2), (3, 3)])
        d, f = rng.choice([(16, 16), (32, 16), (16, 32)])
        seg = rng.choice([1, 2, 3, 5, 8])
        with_s0 = rng.random() < 0.5
        gen = torch.Generator().manual_seed(1000 * seed + i)
        q, k, v = (torch.randn(1, n, t, d, generator=gen) for n in (h, hkv, hkv))
        fq, fk = (torch.rand(1, h, t, f, generator=gen) for _ in range(2))
        gamma = torch.rand(h, generator=gen) * 0.4 + 0.1
        s0 = LinearState(torch.rand(1, h, f, d, generator=gen), torch.rand(1, h, f, generator=gen) * 3) if with_s0 else None
        hybrid.SEGMENT_CHUNKS = seg
        o, st, cov = hybrid_attention(q, k, v, fq, fk, gamma, w, layout, initial_state=s0, return_state=True)
        o_ref, st_ref, cov_ref = hybrid_attention_chunked(q, k, v, fq, fk, gamma, w, layout, state=s0, return_state=True)
        errs = [rel(o, o_ref), rel(st.S, st_ref.S) if st_ref.S.norm() > 0 else st.S.norm().item(),
                rel(st.z, st_ref.z) if st_ref.z.norm() > 0 else st.z.norm().item()]
        worst = max(worst, *errs)
        ok = cov == cov_ref and max(errs) < 1e-4
        print(f"{'ok ' if ok else 'BAD'} T={t} {layout} w={w} H={h}/{hkv} D={d} F={f} L={seg} s0={with_s0} "  # noqa: T201
              f"covered {cov}/{cov_ref} err o {errs[0]:.1e} S {errs[1]:.1e} z {errs[2]:.1e}", flush=True)
        if not ok:
            return 1
    print(f"{cases} cases ok, worst relative error {worst:.1e}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
