"""Random calls of the Triton hybrid op with autograd in the interpreter (CPU, fp32) against the PyTorch reference:
the output and the gradients asked for, off the tests' grid. Each case draws the schedule (walks with 1 to 8 chunks
per segment, parallel with 1 to 4, quadratic), the length (1 to 300), layout and window, GQA, head and feature
sizes, which inputs want gradients (all six, attention transfer's φq, φk, γ, or another subset), o token-major or
not, o's rounding residual saved or not, and (walks only) an initial state. ``torch.empty`` returns NaN-filled
tensors, so an element a kernel forgets to write shows up. Prints one line per case, stops at the first mismatch.

    TRITON_INTERPRET=1 PYTHONPATH=tests/kernels .venv/bin/python results/kernels/fuzz_20261208/fuzz_grads.py CASES SEED
"""

from __future__ import annotations

import os
import random
import sys

import torch
from kernel_testlib import GRAD_NAMES, assert_close_grads, make_inputs, nan_filled, reference_and_grads, rel_err

from lolsearch.attention.chunked import LinearState, expand_kv, hybrid_attention_chunked

TOL = 1e-4
SUBSETS = [GRAD_NAMES, ("phi_q", "phi_k", "gamma"), ("q", "k", "v"), ("v",), ("q", "phi_k"), ("k", "gamma")]


def nan_empty() -> None:
    real_empty, real_like = torch.empty, torch.empty_like
    torch.empty = lambda *a, **k: nan_filled(real_empty(*a, **k))
    torch.empty_like = lambda *a, **k: nan_filled(real_like(*a, **k))


def main() -> int:
    cases, seed = int(sys.argv[1]), int(sys.argv[2])
    import lolsearch.kernels.hybrid as hy
    from lolsearch.kernels import _schedule, hybrid_attention

    nan_empty()
    rng = random.Random(seed)
    for i in range(cases):
        mode = rng.choice(["walk", "walk", "parallel", "quadratic"])
        t = rng.choice([1, 63, 64, 65, 128, 129, rng.randint(2, 300)])
        layout = rng.choice(["sliding", "terrace", "linear"])
        w = rng.choice([0, 1, 7, 33, 64, 65, 100, 256])
        h, hkv = rng.choice([(2, 1), (4, 2), (3, 3), (4, 1)])
        d, f = rng.choice([(16, 16), (32, 16), (16, 32)])
        want = rng.choice(SUBSETS)
        tok_o = rng.random() < 0.3
        hy.FORCE_SAVE_LO = rng.random() < 0.3
        with_s0 = mode == "walk" and rng.random() < 0.3
        seg = rng.choice([1, 2, 3, 5, 8]) if mode == "walk" else rng.choice([1, 2, 3, 4])
        hy.SEGMENT_CHUNKS = seg if mode == "walk" else None
        os.environ["LOLSEARCH_KERNELS_QUADRATIC_T"] = str(1 << 30) if mode == "quadratic" else "0"
        os.environ["LOLSEARCH_KERNELS_PARALLEL_T"] = str(1 << 30) if mode == "parallel" else "0"
        os.environ["LOLSEARCH_KERNELS_PARALLEL_SEG"] = str(seg)
        _schedule.PARALLEL_MAX_D = 64
        inputs = make_inputs(1 + (i % 2), h, hkv, t, d, f, seed=seed * 1000 + i)
        gen = torch.Generator().manual_seed(i)
        b = inputs[0].shape[0]
        s0 = LinearState(torch.rand(b, h, f, d, generator=gen), torch.rand(b, h, f, generator=gen) * 5) if with_s0 else None
        leaves = [x.clone().requires_grad_(n in want) for n, x in zip(GRAD_NAMES, inputs, strict=True)]
        label = (f"{mode} L={seg} T={t} {layout} w={w} B={b} H={h}/{hkv} D={d} F={f} grads={','.join(want)} "
                 f"tok_o={tok_o} lo={hy.FORCE_SAVE_LO} s0={with_s0}")
        try:
            if s0 is None:
                o = hybrid_attention(*leaves, w, layout, token_major_out=tok_o)
            else:
                o = hybrid_attention(*leaves, w, layout, initial_state=s0, return_state=True, token_major_out=tok_o)[0]
            do = torch.randn(o.shape, generator=gen)
            grads = torch.autograd.grad(o, [x for x in leaves if x.requires_grad], do)
            if s0 is None:
                o_ref, ref_grads = reference_and_grads(inputs, w, layout, do)
            else:
                ref = [x.clone().requires_grad_(True) for x in inputs]
                o_ref = hybrid_attention_chunked(ref[0], expand_kv(ref[1], h), expand_kv(ref[2], h), *ref[3:], w, layout,
                                                 state=s0)
                ref_grads = torch.autograd.grad(o_ref, ref, do)
            assert torch.isfinite(o).all(), "non-finite output"
            assert rel_err(o, o_ref) <= TOL, f"output error {rel_err(o, o_ref):.1e}"
            assert_close_grads(grads, ref_grads, TOL, label, names=tuple(n for n in GRAD_NAMES if n in want))
        except AssertionError as err:
            print(f"BAD {label}: {err}", flush=True)  # noqa: T201
            return 1
        print(f"ok  {label}", flush=True)  # noqa: T201
    print(f"{cases} cases ok")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
