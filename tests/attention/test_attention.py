"""The hybrid attention identities and the chunked / recurrent paths against the reference."""

import pytest
import torch

from lolsearch.attention import (
    LinearState,
    hybrid_attention_chunked,
    hybrid_attention_reference,
    linear_attention_reference,
    softmax_attention_reference,
)
from lolsearch.attention.chunked import expand_kv, state_cover
from lolsearch.attention.reference import hybrid_masks


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def inputs(t: int, b: int = 2, h: int = 4, hkv: int = 2, d: int = 16, f: int = 8, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, t, d, generator=g, dtype=dtype)
    k = torch.randn(b, hkv, t, d, generator=g, dtype=dtype)
    v = torch.randn(b, hkv, t, d, generator=g, dtype=dtype)
    phi_q = torch.rand(b, h, t, f, generator=g, dtype=dtype) + 0.01
    phi_k = torch.rand(b, h, t, f, generator=g, dtype=dtype) + 0.01
    gamma = torch.rand(h, generator=g, dtype=dtype) * 0.9 + 0.05
    return q, k, v, phi_q, phi_k, gamma


@pytest.mark.parametrize("t", [1, 63, 100])
def test_sliding_window_at_least_t_is_softmax(t):
    q, k, v, fq, fk, g = inputs(t, hkv=4)
    for window in (t, t + 5):
        out = hybrid_attention_reference(q, k, v, fq, fk, g, window, "sliding")
        assert rel_err(out, softmax_attention_reference(q, k, v)) < 1e-5


@pytest.mark.parametrize("layout", ["sliding", "terrace"])
def test_window_zero_is_linear_attention(layout):
    q, k, v, fq, fk, g = inputs(57, hkv=4)
    out = hybrid_attention_reference(q, k, v, fq, fk, g, 0, layout)
    assert rel_err(out, linear_attention_reference(fq, fk, v)) < 1e-5


def test_terrace_masks_follow_blocks():
    soft, lin = hybrid_masks(12, 12, 4, "terrace")
    # query 9 is in block 2: softmax on block 1 (4..7) and its own block causally (8, 9); linear on 0..3
    assert soft[9].nonzero().flatten().tolist() == [4, 5, 6, 7, 8, 9]
    assert lin[9].nonzero().flatten().tolist() == [0, 1, 2, 3]
    soft, lin = hybrid_masks(12, 12, 4, "sliding")
    assert soft[9].nonzero().flatten().tolist() == [6, 7, 8, 9]
    assert lin[9].nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("layout", ["sliding", "terrace"])
@pytest.mark.parametrize("window", [0, 1, 4, 16, 64])
@pytest.mark.parametrize("t", [1, 63, 100, 257])
def test_chunked_equals_reference(layout, window, t):
    q, k, v, fq, fk, g = inputs(t)
    ref = hybrid_attention_reference(q, expand_kv(k, 4), expand_kv(v, 4), fq, fk, g, window, layout)
    for chunk in (16, 64):
        out = hybrid_attention_chunked(q, k, v, fq, fk, g, window, layout, chunk_size=chunk)
        assert rel_err(out, ref) < 1e-5


@pytest.mark.parametrize("layout", ["sliding", "terrace"])
@pytest.mark.parametrize("window", [0, 1, 4, 16])
@pytest.mark.parametrize("t", [1, 63, 100])
def test_token_by_token_equals_prefill(layout, window, t):
    """Recurrent decoding (state + window of keys) gives the full-sequence result, token by token."""
    q, k, v, fq, fk, g = inputs(t)
    ref = hybrid_attention_reference(q, expand_kv(k, 4), expand_kv(v, 4), fq, fk, g, window, layout)
    split = t // 3
    o, state, covered = hybrid_attention_chunked(
        q[..., :split, :], k[..., :split, :], v[..., :split, :], fq[..., :split, :], fk[..., :split, :], g,
        window, layout, return_state=True,
    ) if split else (q[..., :0, :], None, 0)
    outs, kept_from = [o], covered
    for pos in range(split, t):
        sl = slice(kept_from, pos + 1)
        o, state, covered = hybrid_attention_chunked(
            q[..., pos : pos + 1, :], k[..., sl, :], v[..., sl, :], fq[..., pos : pos + 1, :], fk[..., :, sl, :], g,
            window, layout, state=state, q_start=pos, return_state=True,
        )
        outs.append(o)
        kept_from = covered
        # the window the next query still needs never exceeds the layout's capacity
        assert pos + 1 - covered <= max(2 * window, 1)
    assert rel_err(torch.cat(outs, dim=-2), ref) < 1e-5


@pytest.mark.parametrize("layout", ["sliding", "terrace"])
def test_state_cover_is_zero_while_every_key_is_a_softmax_key(layout):
    """A window longer than the sequence (sliding: i − w + 1 < 0): the state covers no key, and a prefill's window
    cache starts at position 0 (a negative cover would put every cached key at a wrong position)."""
    assert [state_cover(layout, 100, t) for t in (0, 1, 40, 99)] == [0, 0, 0, 0]
    q, k, v, fq, fk, g = inputs(40)
    _, state, covered = hybrid_attention_chunked(q, k, v, fq, fk, g, 100, layout, return_state=True)
    assert covered == 0 and state.S.abs().max() == 0


def test_final_state_covers_exactly_the_linear_keys():
    q, k, v, fq, fk, g = inputs(50)
    _, state, covered = hybrid_attention_chunked(q, k, v, fq, fk, g, 8, "sliding", return_state=True)
    assert covered == state_cover("sliding", 8, 50) == 43
    expected = LinearState.zeros(2, 4, 8, 16).absorb(fk[..., :43, :], expand_kv(v, 4)[..., :43, :])
    assert rel_err(state.S, expected.S) < 1e-6 and rel_err(state.z, expected.z) < 1e-6


def test_chunked_gradients_match_reference():
    q, k, v, fq, fk, g = (x.double().requires_grad_() for x in inputs(37))
    def run(fn):
        out = fn()
        grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum(), (q, k, v, fq, fk, g))
        return grads
    ref = run(lambda: hybrid_attention_reference(q, expand_kv(k, 4), expand_kv(v, 4), fq, fk, g, 8, "terrace"))
    ch = run(lambda: hybrid_attention_chunked(q, k, v, fq, fk, g, 8, "terrace", chunk_size=16))
    for a, b in zip(ch, ref, strict=True):
        assert rel_err(a, b) < 1e-9


def test_reference_gradcheck_includes_stabilizer():
    """The window max c_i is not a no-op (linear terms are not rescaled), so autograd must flow through it."""
    q, k, v, fq, fk, g = (x.double().requires_grad_() for x in inputs(6, b=1, h=2, hkv=2, d=4, f=4))
    assert torch.autograd.gradcheck(
        lambda *a: hybrid_attention_reference(*a, 2, "sliding"), (q, k, v, fq, fk, g), eps=1e-6, atol=1e-6
    )


def test_chunked_attention_xent_equals_materialized_cross_entropy():
    """The chunk-wise, checkpointed attention cross-entropy equals −Σ a log â on the full T×T maps."""
    from lolsearch.attention import hybrid_attention_weights_reference
    from lolsearch.attention.layer import attention_xent

    q, k, v, fq, fk, g = (x.double().requires_grad_() for x in inputs(29, hkv=4))
    student = hybrid_attention_weights_reference(q, k, fq, fk, g, 4, "terrace")
    s = torch.einsum("bhid,bhjd->bhij", q, k) / 4.0
    teacher = s.masked_fill(~torch.ones(29, 29, dtype=torch.bool).tril(), float("-inf")).softmax(-1).detach()
    full = -(teacher * torch.log(student.clamp_min(1e-12))).sum() / (2 * 4 * 29)
    for chunk in (7, 64):
        got = attention_xent(q, k, fq, fk, g, 4, "terrace", chunk=chunk)
        assert abs(got.item() - full.item()) < 1e-6 * abs(full.item())
    ga = torch.autograd.grad(attention_xent(q, k, fq, fk, g, 4, "terrace", chunk=7), (fq, fk, g))
    gb = torch.autograd.grad(full, (fq, fk, g))
    for a, b in zip(ga, gb, strict=True):
        assert rel_err(a, b) < 1e-6
    # a sliding-window teacher (its last 5 keys) against its own materialized weights
    i = torch.arange(29)
    band = (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < 5)
    teacher_w = s.masked_fill(~band, float("-inf")).softmax(-1).detach()
    full_w = -(teacher_w * torch.log(student.clamp_min(1e-12))).sum() / (2 * 4 * 29)
    for chunk in (7, 64):
        got = attention_xent(q, k, fq, fk, g, 4, "terrace", chunk=chunk, teacher_window=5)
        assert abs(got.item() - full_w.item()) < 1e-6 * abs(full_w.item())
    assert abs(full_w.item() - full.item()) > 1e-3 * abs(full.item())


@pytest.mark.parametrize("layout,window", [("sliding", 20), ("sliding", 1), ("terrace", 8), ("linear", 0)])
def test_chunks_at_once_matches_loop_and_reference_with_gradients(layout, window):
    """Whole sequences of many chunks skip the Python loop (_chunks_at_once, chunk doubled until the layout's
    softmax keys fit in two chunks); outputs and all gradients equal the loop's and the reference's."""
    from lolsearch.attention import chunked

    t = 300
    c = chunked._parallel_chunk(layout, window, 16, t)
    assert t >= chunked.PARALLEL_MIN_CHUNKS * c
    q, k, v, fq, fk, g = (x.double().requires_grad_() for x in inputs(t, b=1))
    w = torch.linspace(-1, 1, q.numel(), dtype=q.dtype).view_as(q)

    def grads(fn):
        out = fn()
        return (out, *torch.autograd.grad((out * w).sum(), (q, k, v, fq, fk, g)))

    fast = grads(lambda: hybrid_attention_chunked(q, k, v, fq, fk, g, window, layout, chunk_size=16))
    zero = LinearState.zeros(1, 4, 8, 16, dtype=torch.float64)  # a state forces the loop
    loop = grads(lambda: hybrid_attention_chunked(q, k, v, fq, fk, g, window, layout, chunk_size=16, state=zero))
    ref = grads(lambda: hybrid_attention_reference(q, expand_kv(k, 4), expand_kv(v, 4), fq, fk, g, window, layout))
    for a, b, r in zip(fast, loop, ref, strict=True):
        assert rel_err(a, r) < 1e-9 and rel_err(b, r) < 1e-9
