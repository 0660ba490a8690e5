"""The eager forward's host path on the CPU, with stand-in compiled kernels (2026-12-07).

    cd /tmp && PYTHONPATH=<tree> TRITON_INTERPRET=0 python <checkout>/results/perf/bench2k_20261207/host_cpu_ab.py LABEL H HKV T
    cd /tmp && PYTHONPATH=<tree> TRITON_INTERPRET=0 python <checkout>/results/perf/bench2k_20261207/host_cpu_ab.py --bwd LABEL H HKV T

Times ``hybrid_attention`` (H query / HKV kv heads, D = F = 128, bf16, T tokens, sliding window 64, no autograd) on
CPU tensors with the direct launches on and every Triton kernel replaced by a stand-in: its first
launch returns a compiled object whose launcher does nothing. What is timed is the Python that the GPU path runs
per forward: argument checks, the plan, allocations, the launch keys and the call into each launcher (the launcher's
own C work and the GPU's are not in it). Run in both trees with ``TRITON_INTERPRET=0``; one line per round, µs per
call over 2000 calls. Large shapes time the CPU allocator's system calls too (16 MB tensors at the Llama-3-8B 2K
shape), which the GPU's caching allocator does not make: small shapes take the same code path. ``--bwd``: the
forward + backward instead (``.backward(do)`` with q, k, v, the features and γ trainable; the backward's kernels
replaced too), 500 calls per round.
"""

from __future__ import annotations

import sys
import time
from types import SimpleNamespace

# An editable install of the checkout would supply lolsearch.kernels from there whatever PYTHONPATH says.
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in str(getattr(f, "__module__", ""))]

import torch  # noqa: E402
from lolsearch.kernels import _direct, hybrid, hybrid_attention  # noqa: E402


class Compiled:
    packed_metadata = None
    function = None

    def launch_metadata(self, grid, stream, *values):
        return None

    def run(self, *args):
        return None


class Kernel:
    """A stand-in for a jitted kernel with the real kernel's argument names."""

    def __init__(self, real):
        fn = real
        while not hasattr(fn, "arg_names"):
            fn = fn.fn
        self.arg_names = fn.arg_names

    def __getitem__(self, grid):
        return lambda *args, **kwargs: Compiled()


class Driver:
    def get_current_device(self):
        return 0

    def get_current_stream(self, device):
        return 0


def main() -> None:
    bwd = sys.argv[1] == "--bwd"
    argv = sys.argv[2:] if bwd else sys.argv[1:]
    label = argv[0]
    print(f"{label}: {hybrid.__file__}", flush=True)  # noqa: T201
    _direct.ENABLED = True
    _direct.driver = SimpleNamespace(active=Driver())
    for name in dir(hybrid):
        if name.endswith("_kernel"):
            setattr(hybrid, name, Kernel(getattr(hybrid, name)))
    gen = torch.Generator().manual_seed(0)
    h, hkv, t, bf16 = int(argv[1]), int(argv[2]), int(argv[3]), torch.bfloat16
    q = torch.randn(1, h, t, 128, generator=gen).to(bf16)
    k, v = (torch.randn(1, hkv, t, 128, generator=gen).to(bf16) for _ in range(2))
    fq, fk = (torch.rand(1, h, t, 128, generator=gen).to(bf16) for _ in range(2))
    gamma = torch.full((h,), 0.5)
    if bwd:
        x = [y.requires_grad_(True) for y in (q, k, v, fq, fk, gamma)]
        do = torch.randn(1, h, t, 128, generator=gen).to(bf16)
        for _ in range(50):
            hybrid_attention(*x, 64, "sliding").backward(do)
        for rnd in range(5):
            t0 = time.perf_counter()
            for _ in range(500):
                for y in x:
                    y.grad = None
                hybrid_attention(*x, 64, "sliding").backward(do)
            us = (time.perf_counter() - t0) / 500 * 1e6
            print(f"{label} round {rnd}: {us:.1f} us per forward + backward (host path, stand-in launchers)", flush=True)  # noqa: T201
        return
    with torch.no_grad():
        for _ in range(200):
            hybrid_attention(q, k, v, fq, fk, gamma, 64, "sliding")
        for rnd in range(5):
            t0 = time.perf_counter()
            for _ in range(2000):
                hybrid_attention(q, k, v, fq, fk, gamma, 64, "sliding")
            us = (time.perf_counter() - t0) / 2000 * 1e6
            print(f"{label} round {rnd}: {us:.1f} us per forward (host path, stand-in launchers)", flush=True)  # noqa: T201


if __name__ == "__main__":
    main()
