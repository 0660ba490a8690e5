"""H200 diagnostic (issue 17): where the forward's time goes (Llama-3-8B heads, bf16, batch 1, sliding 64).

    python3 results/kernels/profile_fwd.py

1. GPU time per kernel (torch.profiler) at T = 2K, 8K, 32K, and the forward's median time (events, do_bench).
2. Host time per forward call at 2K (wall clock of 200 calls without synchronizing, queue kept short) and a
   cProfile of those calls (top entries by own time).
3. Host cost of one Triton launch through the JIT (kernel[grid](...)) against the CompiledKernel's runner.
"""

import cProfile
import inspect
import io
import pstats
import sys
import time

import torch
import triton
import triton.testing
from lolsearch.kernels import _bench_impls as bi
from lolsearch.kernels import hybrid_attention
from torch.profiler import ProfilerActivity, profile

sh = bi.SHAPES["llama3-8b"]


def fwd(x, layout="sliding"):
    return hybrid_attention(x["q"], x["k"], x["v"], x["phi_q"], x["phi_k"], x["gamma"], 64, layout)


for t in (2048, 8192, 32768):
    x = bi.make_prefill(sh, t, grad=False)
    fwd(x)
    torch.cuda.synchronize()
    ms = triton.testing.do_bench(lambda x=x: fwd(x), warmup=25, rep=200, return_mode="median")
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(20):
            fwd(x)
        torch.cuda.synchronize()
    rows = {}
    for e in prof.key_averages():
        if e.device_type.name == "CUDA" if hasattr(e.device_type, "name") else True:
            us = getattr(e, "device_time_total", getattr(e, "cuda_time_total", 0)) / 20
            if us > 0:
                rows[e.key[:40]] = us
    print(f"T={t}: forward median {ms * 1e3:.1f} us; GPU us per call:",
          ", ".join(f"{k} {v:.1f}" for k, v in sorted(rows.items(), key=lambda kv: -kv[1])), flush=True)

# host time per call at 2K
x = bi.make_prefill(sh, 2048, grad=False)
for _ in range(10):
    fwd(x)
torch.cuda.synchronize()
n = 200
t0 = time.perf_counter()
for i in range(n):
    fwd(x)
    if i % 20 == 19:
        torch.cuda.synchronize()
torch.cuda.synchronize()
print(f"host+GPU per call at 2K (sync every 20): {(time.perf_counter() - t0) / n * 1e6:.1f} us", flush=True)
pr = cProfile.Profile()
pr.enable()
for i in range(n):
    fwd(x)
    if i % 20 == 19:
        torch.cuda.synchronize()
pr.disable()
s = io.StringIO()
pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(25)
print(s.getvalue()[:6000], flush=True)

# one launch: JIT path against the CompiledKernel runner
from lolsearch.kernels._fwd import scan_kernel  # noqa: E402

st = torch.zeros(1, 2, 1024, device="cuda")  # a tiny launch: host cost dominates
ck = scan_kernel[(1, 1)](st, 2, 1024, REVERSE=False, BLOCK=1024, ZERO_FIRST=False, num_warps=4)
print("JITFunction.run source has:", [k for k in ("bound_args.values()", "non_constexpr", "knobs.runtime.launch_enter_hook",
                                                  "CompiledKernel.launch_enter_hook") if k in inspect.getsource(type(scan_kernel).run)])
print("CompiledKernel:", type(ck).__name__, "has __getitem__", hasattr(ck, "__getitem__"),
      "signature", getattr(getattr(ck, "src", None), "signature", None))
for label, launch in (("jit", lambda: scan_kernel[(1, 1)](st, 2, 1024, REVERSE=False, BLOCK=1024, ZERO_FIRST=False, num_warps=4)),
                      ("runner(all args)", lambda: ck[(1, 1, 1)](st, 2, 1024, False, 1024))):
    try:
        for _ in range(5):
            launch()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(500):
            launch()
            if i % 50 == 49:
                torch.cuda.synchronize()
        torch.cuda.synchronize()
        print(f"launch {label}: {(time.perf_counter() - t0) / 500 * 1e6:.1f} us per launch (incl. GPU)", flush=True)
    except Exception as err:  # noqa: BLE001
        print(f"launch {label}: {type(err).__name__}: {err}", flush=True)
sys.exit(0)
