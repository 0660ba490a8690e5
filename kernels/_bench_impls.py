"""Benchmark cells: timing helpers and the implementations compared by ``lolsearch.kernels.bench``."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lolsearch.attention import hybrid_attention_chunked, hybrid_attention_reference
from lolsearch.attention.chunked import expand_kv

WINDOW = 64
DEVICE = "cuda"  # the CPU smoke test of the bench switches these two
DTYPE = torch.bfloat16


@dataclass(frozen=True)
class Shape:
    name: str
    h: int
    hkv: int
    d: int
    f: int


SHAPES = {
    "llama3-8b": Shape("llama3-8b", 32, 8, 128, 128),
    "smollm2": Shape("smollm2", 9, 3, 64, 128),
}


class Skip(Exception):
    """A cell that is not run (reason in the message)."""


def sync() -> None:
    torch.cuda.synchronize()


def time_ms(fn: Callable[[], object], rep_ms: float, grad_to_none=None) -> float:
    """Median ms of fn on the current CUDA stream. The first call (compile / autotune) is not timed;
    slow cells (> 20 ms) get at most 3 timed calls, the rest triton's do_bench with a short rep."""
    import triton.testing

    fn()
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    once = (time.perf_counter() - t0) * 1e3
    if once > 20:
        times = []
        for _ in range(max(1, min(3, int(3 * rep_ms // once)))):
            if grad_to_none:
                for x in grad_to_none:
                    x.grad = None
            ev0, ev1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            ev0.record()
            fn()
            ev1.record()
            sync()
            times.append(ev0.elapsed_time(ev1))
        return sorted(times)[len(times) // 2]
    return float(triton.testing.do_bench(fn, warmup=max(5, rep_ms / 4), rep=rep_ms, grad_to_none=grad_to_none,
                                         return_mode="median"))


def make_prefill(shape: Shape, t: int, grad: bool, dtype=None, seed=0) -> dict:
    """Inputs of one prefill cell (B = 1): q [1,H,T,D], k/v [1,Hkv,T,D], phi_q/phi_k [1,H,T,F], gamma [H]."""
    dev, dtype = DEVICE, dtype or DTYPE
    gen = torch.Generator(dev).manual_seed(seed)

    def rnd(*s):
        return torch.randn(*s, device=dev, generator=gen, dtype=dtype)

    def feats(*s):  # positive, Hedgehog-like (each half sums to 1)
        x = torch.randn(*s[:-1], 2, s[-1] // 2, device=dev, generator=gen, dtype=torch.float32)
        return x.softmax(-1).flatten(-2).to(dtype)

    x = dict(q=rnd(1, shape.h, t, shape.d), k=rnd(1, shape.hkv, t, shape.d), v=rnd(1, shape.hkv, t, shape.d),
             phi_q=feats(1, shape.h, t, shape.f), phi_k=feats(1, shape.h, t, shape.f),
             gamma=torch.full((shape.h,), 0.1, device=dev))
    if grad:
        for v in x.values():
            v.requires_grad_(True)
    x["do"] = rnd(1, shape.h, t, shape.d)
    return x


def _with_bwd(run: Callable[[], torch.Tensor], x: dict, leaves: list, do: torch.Tensor | None = None):
    """fwd or fwd+bwd closure and the tensors whose .grad to reset between calls."""
    if do is None:
        return run, None
    return (lambda: run().backward(do)), leaves


def ours(x: dict, layout: str, bwd: bool):
    from lolsearch.kernels import hybrid_attention

    def run():
        return hybrid_attention(x["q"], x["k"], x["v"], x["phi_q"], x["phi_k"], x["gamma"], WINDOW, layout)

    return _with_bwd(run, x, [x[n] for n in ("q", "k", "v", "phi_q", "phi_k", "gamma")], x["do"] if bwd else None)


def chunked(x: dict, bwd: bool):
    def run():
        return hybrid_attention_chunked(x["q"], x["k"], x["v"], x["phi_q"], x["phi_k"], x["gamma"], WINDOW, "sliding")

    return _with_bwd(run, x, [x[n] for n in ("q", "k", "v", "phi_q", "phi_k", "gamma")], x["do"] if bwd else None)


def reference(x: dict, bwd: bool):
    h = x["q"].shape[1]
    ke = expand_kv(x["k"].detach(), h).requires_grad_(bwd)
    ve = expand_kv(x["v"].detach(), h).requires_grad_(bwd)

    def run():
        return hybrid_attention_reference(x["q"], ke, ve, x["phi_q"], x["phi_k"], x["gamma"], WINDOW, "sliding")

    return _with_bwd(run, x, [x["q"], ke, ve, x["phi_q"], x["phi_k"], x["gamma"]], x["do"] if bwd else None)


SDPA_BACKENDS = {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION", "efficient": "EFFICIENT_ATTENTION"}


def sdpa(x: dict, backend: str, bwd: bool, causal: bool = True):
    """Causal SDPA forced to one backend; GQA natively (enable_gqa) or, if the backend refuses, on expanded k/v."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    be = getattr(SDPBackend, SDPA_BACKENDS[backend])
    q, k, v = x["q"], x["k"], x["v"]
    h = q.shape[1]

    def call(kk, vv, gqa):
        with sdpa_kernel([be]):
            return F.scaled_dot_product_attention(q, kk, vv, is_causal=causal, enable_gqa=gqa)

    do = x["do"] if bwd else None
    fn, leaves = _with_bwd(lambda: call(k, v, True), x, [q, k, v], do)
    try:
        fn()  # probe: some backends refuse GQA (or its backward)
        return fn, leaves, "enable_gqa"
    except RuntimeError:
        pass
    ke = expand_kv(k.detach(), h).requires_grad_(bwd)
    ve = expand_kv(v.detach(), h).requires_grad_(bwd)
    fn, leaves = _with_bwd(lambda: call(ke, ve, False), x, [q, ke, ve], do)
    try:
        fn()
    except RuntimeError as err:
        raise Skip(f"backend {backend} unavailable: {str(err).splitlines()[0][:120]}") from err
    return fn, leaves, "k/v expanded to H heads"


def fla_pair(x: dict, bwd: bool):
    """fla's chunk_linear_attn (normalized, scale 1) + parallel_attn(window_size=64): the two halves of the
    hybrid as separate ops (fla has no fused linear+SWA op); seq-first layout, v expanded for the linear op."""
    try:
        from fla.ops.attn import parallel_attn
        from fla.ops.linear_attn import chunk_linear_attn
    except ImportError as err:
        raise Skip("fla is not installed") from err
    except Exception as err:  # noqa: BLE001 - e.g. an fla built for another triton
        raise Skip(f"fla failed to import: {type(err).__name__}: {str(err)[:120]}") from err
    h = x["q"].shape[1]
    sf = {n: x[n].detach().transpose(1, 2).contiguous().requires_grad_(bwd) for n in ("q", "k", "v", "phi_q", "phi_k")}
    ve = expand_kv(x["v"].detach(), h).transpose(1, 2).contiguous().requires_grad_(bwd)
    do = x["do"].transpose(1, 2).contiguous()

    def run():
        o_lin, _ = chunk_linear_attn(sf["phi_q"], sf["phi_k"], ve, scale=1.0, normalize=True)
        o_swa = parallel_attn(sf["q"], sf["k"], sf["v"], window_size=WINDOW)
        return o_lin + o_swa

    return _with_bwd(run, x, [*sf.values(), ve], do if bwd else None)


def make_decode(shape: Shape, batch: int, ctx: int, dtype=None) -> dict:
    """One decode step at position ``ctx`` for ``batch`` sequences: sliding window 64 (ring buffer full,
    one key absorbed per step) and the SDPA KV cache of ``ctx + 1`` positions."""
    dev, dtype = DEVICE, dtype or DTYPE
    gen = torch.Generator(dev).manual_seed(0)
    b, h, hkv, d, f = batch, shape.h, shape.hkv, shape.d, shape.f

    def rnd(*s):
        return torch.randn(*s, device=dev, generator=gen, dtype=dtype)

    cap = WINDOW
    slot_pos = torch.tensor([ctx - ((ctx - s) % cap) for s in range(cap)], device=dev, dtype=torch.int64)
    return dict(
        q=rnd(b, h, d), phi_q=rnd(b, h, f).abs(), k_cache=rnd(b, hkv, cap, d), v_cache=rnd(b, hkv, cap, d),
        slot_pos=slot_pos, S=torch.rand(b, h, f, d, device=dev, generator=gen), z=torch.rand(b, h, f, device=dev, generator=gen) + 1,
        gamma=torch.full((h,), 0.1, device=dev), window=WINDOW, layout="sliding", pos=ctx,
        phi_k_absorb=rnd(b, h, 1, f).abs(), v_absorb=rnd(b, hkv, 1, d),
    )


def decode_ours(args: dict, torch_twin: bool = False):
    from lolsearch.kernels import hybrid_decode_step, hybrid_decode_step_torch

    fn = hybrid_decode_step_torch if torch_twin else hybrid_decode_step
    return lambda: fn(**args)


def decode_sdpa(shape: Shape, batch: int, ctx: int, backend: str, dtype=None):
    """SDPA for one new query over a KV cache of ctx + 1 positions (GQA natively or expanded)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    be = getattr(SDPBackend, SDPA_BACKENDS[backend])
    dtype = dtype or DTYPE
    gen = torch.Generator(DEVICE).manual_seed(0)
    q = torch.randn(batch, shape.h, 1, shape.d, device=DEVICE, dtype=dtype, generator=gen)
    kc = torch.randn(batch, shape.hkv, ctx + 1, shape.d, device=DEVICE, dtype=dtype, generator=gen)
    vc = torch.randn_like(kc)

    def call(gqa, kk, vv):
        with sdpa_kernel([be]):
            return F.scaled_dot_product_attention(q, kk, vv, enable_gqa=gqa)

    try:
        call(True, kc, vc)
        return (lambda: call(True, kc, vc)), "enable_gqa"
    except RuntimeError:
        pass
    ke, ve = expand_kv(kc, shape.h), expand_kv(vc, shape.h)
    try:
        call(False, ke, ve)
    except RuntimeError as err:
        raise Skip(f"backend {backend} unavailable: {str(err).splitlines()[0][:120]}") from err
    return (lambda: call(False, ke, ve)), "k/v cache expanded to H heads"


def time_graph_ms(fn: Callable[[], object]) -> tuple[float, str]:
    """CUDA-graph replay timing (launch-bound decode), falling back to do_bench."""
    import triton.testing

    fn()
    sync()
    with contextlib.suppress(Exception):
        return float(triton.testing.do_bench_cudagraph(fn, rep=20, return_mode="median")), "cuda graph"
    return float(triton.testing.do_bench(fn, warmup=5, rep=20, return_mode="median")), "do_bench"
