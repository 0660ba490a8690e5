"""Decode step: the Triton kernel against its PyTorch twin, and the twin against the full reference."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from kernel_testlib import make_inputs, rel_err
from lolsearch.kernels import hybrid_decode_step_torch

from lolsearch.attention import hybrid_attention_reference
from lolsearch.attention.chunked import LinearState, expand_kv
from lolsearch.attention.layouts import get_layout

TOL = 1e-4


def decode_case(layout, window, pos, n_abs, d, f, device="cpu", dtype=torch.float32, b=2, h=4, hkv=2, seed=0):
    """Inputs of the decode step for the query at ``pos`` of a random sequence, plus the reference output.

    The state covers keys < softmax_start(pos) − n_abs; the decode absorbs the next n_abs keys; the ring
    buffer (capacity = the layout's window capacity) holds the latest positions at slot ``p % C`` (stale
    positions below the window and empty slots included).
    """
    t = pos + 1
    q, k, v, fq, fk, g = make_inputs(b, h, hkv, t, d, f, seed=seed)
    q, k, v, fq, fk = (x.to(dtype).float() for x in (q, k, v, fq, fk))  # reference sees the rounded inputs
    lay = get_layout("linear" if window == 0 else layout)
    start = max(int(lay.softmax_start(pos, window)), 0)
    c0 = start - n_abs
    assert c0 >= 0
    st = LinearState.zeros(b, h, f, d).absorb(fk[:, :, :c0], expand_kv(v, h)[:, :, :c0])
    cap = lay.window_capacity(window)
    slot_pos = torch.full((cap,), -1, dtype=torch.int64)
    k_cache = torch.zeros(b, hkv, cap, d)
    v_cache = torch.zeros(b, hkv, cap, d)
    for p in range(max(0, pos - cap + 1), pos + 1):
        slot_pos[p % cap] = p
        k_cache[:, :, p % cap] = k[:, :, p]
        v_cache[:, :, p % cap] = v[:, :, p]
    ref = hybrid_attention_reference(q, expand_kv(k, h), expand_kv(v, h), fq, fk, g, window, layout)[:, :, pos]
    state_after = LinearState.zeros(b, h, f, d).absorb(fk[:, :, :start], expand_kv(v, h)[:, :, :start])
    args = dict(
        q=q[:, :, pos].to(device, dtype), phi_q=fq[:, :, pos].to(device, dtype),
        k_cache=k_cache.to(device, dtype), v_cache=v_cache.to(device, dtype), slot_pos=slot_pos.to(device),
        S=st.S.to(device).contiguous(), z=st.z.to(device).contiguous(), gamma=g.to(device), window=window,
        layout=layout, pos=pos,
        phi_k_absorb=fk[:, :, c0:start].to(device, dtype) if n_abs else None,
        v_absorb=v[:, :, c0:start].to(device, dtype) if n_abs else None,
    )
    return args, ref.to(device), state_after


DECODE_CASES = [
    ("sliding", 16, 5, 0, 16, 16),
    ("sliding", 16, 100, 1, 16, 16),
    ("sliding", 64, 200, 3, 64, 32),
    ("terrace", 16, 47, 16, 16, 16),
    ("terrace", 64, 130, 0, 32, 16),
    ("terrace", 4, 9, 4, 16, 16),
    ("sliding", 0, 50, 2, 16, 16),
    ("terrace", 0, 0, 1, 16, 16),
]


@pytest.mark.parametrize("layout,window,pos,n_abs,d,f", DECODE_CASES)
def test_torch_decode_matches_reference(layout, window, pos, n_abs, d, f):
    args, ref, state_after = decode_case(layout, window, pos, n_abs, d, f)
    o = hybrid_decode_step_torch(**args)
    assert rel_err(o, ref) <= TOL
    assert rel_err(args["S"], state_after.S) <= TOL and rel_err(args["z"], state_after.z) <= TOL


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
@pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter tests run on CPU-only machines (GPU: -m gpu)")
@pytest.mark.parametrize("layout,window,pos,n_abs,d,f", DECODE_CASES)
def test_triton_decode_matches_torch_twin(layout, window, pos, n_abs, d, f, nan_alloc):
    from lolsearch.kernels import hybrid_decode_step

    args, ref, state_after = decode_case(layout, window, pos, n_abs, d, f)
    twin = dict(args, S=args["S"].clone(), z=args["z"].clone())
    o_ref = hybrid_decode_step_torch(**twin)
    o = hybrid_decode_step(**args)
    assert rel_err(o, o_ref) <= TOL and rel_err(o, ref) <= TOL
    assert rel_err(args["S"], twin["S"]) <= TOL and rel_err(args["z"], twin["z"]) <= TOL


def test_decode_rejects_bad_shapes():
    args, _, _ = decode_case("sliding", 16, 20, 1, 16, 16)
    with pytest.raises(ValueError, match="slot_pos"):
        hybrid_decode_step_torch(**dict(args, slot_pos=args["slot_pos"][:3]))
    with pytest.raises(ValueError, match="fp32"):
        hybrid_decode_step_torch(**dict(args, S=args["S"].half()))
    with pytest.raises(ValueError, match="together"):
        hybrid_decode_step_torch(**dict(args, v_absorb=None))


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
@pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter tests run on CPU-only machines (GPU: -m gpu)")
@pytest.mark.parametrize("layout,window,pos,n_abs,d,f", DECODE_CASES)
def test_static_decode_kernel_matches_torch_twin(layout, window, pos, n_abs, d, f, nan_alloc):
    """The per-row-position kernel of the graphed decode, given every row the same position, is the decode step."""
    from lolsearch.kernels.decode_static import static_decode_step_triton

    args, ref, _ = decode_case(layout, window, pos, n_abs, d, f)
    b, h = args["q"].shape[:2]
    c = args["k_cache"].shape[-2]
    twin = dict(args, S=args["S"].clone(), z=args["z"].clone())
    o_ref = hybrid_decode_step_torch(**twin)
    n = args["phi_k_absorb"].shape[2] if args.get("phi_k_absorb") is not None else 0
    phi_abs = args["phi_k_absorb"] if n else torch.zeros(b, h, 0, f)
    v_abs = args["v_absorb"] if n else torch.zeros(b, args["k_cache"].shape[1], 0, d)
    start = max(int(get_layout("linear" if window == 0 else layout).softmax_start(pos, window)), 0)
    o = static_decode_step_triton(
        args["q"], args["phi_q"], args["k_cache"], args["v_cache"], args["slot_pos"].expand(b, c).contiguous(),
        torch.full((b,), start, dtype=torch.long), torch.full((b,), pos, dtype=torch.long), args["S"], args["z"],
        args["gamma"].float(), phi_abs, v_abs, soft=c > 0 and window > 0 and layout != "linear")
    assert rel_err(o, o_ref) <= TOL and rel_err(o, ref) <= TOL
    assert rel_err(args["S"], twin["S"]) <= TOL and rel_err(args["z"], twin["z"]) <= TOL
