"""Chunked hybrid attention in plain PyTorch: memory linear in T, exact w.r.t. the reference.

Queries are processed in chunks of C. Keys that every query of a chunk gives linear attention to
live in a carried state ``S = Σ φk(k_j) v_jᵀ`` ``[B, H, F, D]`` and normaliser ``z = Σ φk(k_j)``
``[B, H, F]`` (fp32); the remaining keys of the chunk (its window tile, at most C + 2w of them)
are scored directly with the layout's softmax/linear masks. The same function serves training,
long prefill and generation (a cached key prefix plus a carried state). A whole sequence of many chunks
with no carried state (training, evaluation) runs all chunks at once, with the states of older keys
from a prefix sum over chunks; everything else walks the chunks in a loop.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from lolsearch.attention.layouts import get_layout
from lolsearch.attention.reference import EPS, acc_dtype, hybrid_masks, unnormalized_weights

# Whole sequences of at least this many chunks run with no Python loop over chunks (_chunks_at_once), which
# scores more keys but launches far fewer ops; shorter ones keep the loop. Measurements behind the threshold:
# results/perf-cpu/chunked_paths.txt.
PARALLEL_MIN_CHUNKS = 8


class LinearState(NamedTuple):
    """Recurrent state covering all keys before some position. S ``[B, H, F, D]``, z ``[B, H, F]``, fp32."""

    S: torch.Tensor
    z: torch.Tensor

    @classmethod
    def zeros(cls, b: int, h: int, f: int, d: int, device=None, dtype=torch.float32) -> LinearState:
        return cls(torch.zeros(b, h, f, d, device=device, dtype=dtype), torch.zeros(b, h, f, device=device, dtype=dtype))

    def absorb(self, phi_k: torch.Tensor, v: torch.Tensor) -> LinearState:
        """Adds keys ``phi_k [B, H, n, F]`` with values ``v [B, H, n, D]`` (out of place)."""
        if phi_k.shape[-2] == 0:
            return self
        return LinearState(
            self.S + torch.einsum("bhnf,bhnd->bhfd", phi_k.to(self.S.dtype), v.to(self.S.dtype)),
            self.z + phi_k.to(self.z.dtype).sum(dim=-2),
        )


def expand_kv(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``[B, Hkv, T, D]`` -> ``[B, H, T, D]`` by repeating each kv head H/Hkv times (GQA)."""
    hkv = x.shape[1]
    if hkv == num_heads:
        return x
    if num_heads % hkv:
        raise ValueError(f"{num_heads} query heads are not a multiple of {hkv} kv heads")
    return x.repeat_interleave(num_heads // hkv, dim=1)


def state_cover(layout: str, window: int, next_pos: int) -> int:
    """Keys with position < this can live in the state once the next query is at ``next_pos`` (0 while every key so
    far is a softmax key: the layouts' softmax start is never below 0)."""
    lay = get_layout("linear" if window == 0 else layout)
    return min(int(lay.softmax_start(next_pos, window)), next_pos)


def hybrid_attention_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    phi_q: torch.Tensor,
    phi_k: torch.Tensor,
    gamma: torch.Tensor,
    window: int,
    layout: str = "sliding",
    chunk_size: int = 64,
    state: LinearState | None = None,
    q_start: int = 0,
    return_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, LinearState, int]:
    """Hybrid attention (same function as :func:`hybrid_attention_reference`) in query chunks.

    Args:
        q, phi_q: ``[B, H, Tq, D]`` / ``[B, H, Tq, F]``, queries at positions ``q_start .. q_start+Tq-1``.
        k, v: ``[B, Hkv, Tk, D]`` with ``Tk >= Tq``: the keys at positions ``q_start+Tq-Tk ..
            q_start+Tq-1`` (a cached prefix of Tk-Tq keys, then the queries' own keys); Hkv divides H.
        phi_k: ``[B, H, Tk, F]`` features of those keys (per query head).
        gamma: ``[H]``; window, layout: as in the reference.
        state: carried state covering every key before the first key passed (None = zeros).
        return_state: also return the state after the last query and the absolute position it covers
            up to (exclusive): keys from there on are the window the next query still needs.

    Returns:
        o ``[B, H, Tq, D]`` in q's dtype, or ``(o, state, covered)``.
    """
    b, h, tq, d = q.shape
    tk = k.shape[-2]
    if tk < tq:
        raise ValueError(f"need at least as many keys as queries, got {tk} < {tq}")
    k_start = q_start + tq - tk
    f = acc_dtype(q)
    k, v = expand_kv(k, h).to(f), expand_kv(v, h).to(f)
    qf, fq, fk = q.to(f), phi_q.to(f), phi_k.to(f)
    g = gamma.to(f)
    if state is None and q_start == 0 and tk == tq and not return_state:
        c = _parallel_chunk(layout, window, chunk_size, tq)
        if tq >= PARALLEL_MIN_CHUNKS * c:  # few chunks: the loop below is as fast and scores fewer keys
            return _chunks_at_once(qf, k, v, fq, fk, g, window, layout, c).to(q.dtype)
    st = state if state is not None else LinearState.zeros(b, h, fk.shape[-1], d, device=q.device, dtype=f)
    covered = k_start
    outs = []
    for s in range(q_start, q_start + tq, chunk_size):
        e = min(s + chunk_size, q_start + tq)
        need = state_cover(layout, window, s)
        if need > covered:
            st = st.absorb(fk[..., covered - k_start : need - k_start, :], v[..., covered - k_start : need - k_start, :])
            covered = need
        lo, qi = covered - k_start, slice(s - q_start, e - q_start)
        kt, vt, fkt = k[..., lo : e - k_start, :], v[..., lo : e - k_start, :], fk[..., lo : e - k_start, :]
        soft, lin = hybrid_masks(e - s, e - covered, window, layout, q_start=s, k_start=covered, device=q.device)
        a = unnormalized_weights(qf[..., qi, :], kt, fq[..., qi, :], fkt, g, soft, lin)
        num = torch.einsum("bhij,bhjd->bhid", a, vt) + torch.einsum("bhif,bhfd->bhid", fq[..., qi, :], st.S)
        den = a.sum(dim=-1) + torch.einsum("bhif,bhf->bhi", fq[..., qi, :], st.z)
        outs.append(num / (den.unsqueeze(-1) + EPS))
    o = torch.cat(outs, dim=-2).to(q.dtype)
    if not return_state:
        return o
    final = max(state_cover(layout, window, q_start + tq), covered)
    st = st.absorb(fk[..., covered - k_start : final - k_start, :], v[..., covered - k_start : final - k_start, :])
    return o, st, final


@functools.lru_cache(maxsize=256)
def _parallel_chunk(layout: str, window: int, chunk_size: int, t: int) -> int:
    """Chunk length C >= chunk_size such that every softmax key of a query in chunk n lies in chunks n-1, n
    (checked on the layout's own rule at every chunk start before t); at worst one chunk of the whole sequence."""
    lay = get_layout("linear" if window == 0 else layout)
    c = max(chunk_size, 1)
    while True:
        if c >= t:
            return c
        starts = torch.arange(c, t, c)
        if bool((lay.softmax_start(starts, window) >= starts - c).all()):
            return c
        c *= 2


def _chunks_at_once(qf, k, v, fq, fk, g, window: int, layout: str, c: int) -> torch.Tensor:
    """The same function with no loop over chunks (for a whole sequence from position 0, no state).

    Chunk n scores the 2C keys of chunks n-1 and n directly (softmax or linear by the layout's masks on
    absolute positions) and reads every older key, all linear for its queries, from an exclusive prefix sum
    of per-chunk states. Inputs are fp32/fp64 ``[B, H, T, ·]`` with k, v already expanded; output likewise.
    """
    b, h, t, d = qf.shape
    n = -(-t // c)
    pad = n * c - t

    def blocks(x: torch.Tensor) -> torch.Tensor:  # [B, H, T, X] -> [B, H, N, C, X]
        return torch.nn.functional.pad(x, (0, 0, 0, pad)).view(b, h, n, c, x.shape[-1])

    def with_previous(x: torch.Tensor) -> torch.Tensor:  # [B, H, N, C, X] -> [B, H, N, 2C, X]
        return torch.cat([torch.nn.functional.pad(x, (0, 0, 0, 0, 1, 0))[:, :, :-1], x], dim=3)

    qb, kb, vb, fqb, fkb = (blocks(x) for x in (qf, k, v, fq, fk))
    kk, vv, fkk = with_previous(kb), with_previous(vb), with_previous(fkb)
    qpos = torch.arange(n * c, device=qf.device).view(n, c)
    kpos = (torch.arange(n, device=qf.device)[:, None] - 1) * c + torch.arange(2 * c, device=qf.device)
    start = get_layout("linear" if window == 0 else layout).softmax_start(qpos, window)
    causal = (kpos[:, None, :] <= qpos[:, :, None]) & (kpos[:, None, :] >= 0)
    soft = causal & (kpos[:, None, :] >= start[:, :, None])  # [N, C, 2C]
    a = unnormalized_weights(qb, kk, fqb, fkk, g, soft, causal & ~soft)  # [B, H, N, C, 2C]
    # state read by chunk n: keys of chunks 0 .. n-2
    kv = torch.einsum("bhncf,bhncd->bhnfd", fkb, vb).cumsum(dim=2)
    z = fkb.sum(dim=3).cumsum(dim=2)
    kv = torch.nn.functional.pad(kv, (0, 0, 0, 0, 2, 0))[:, :, :n]
    z = torch.nn.functional.pad(z, (0, 0, 2, 0))[:, :, :n]
    num = torch.einsum("bhnck,bhnkd->bhncd", a, vv) + torch.einsum("bhncf,bhnfd->bhncd", fqb, kv)
    den = a.sum(dim=-1) + torch.einsum("bhncf,bhnf->bhnc", fqb, z)
    return (num / (den.unsqueeze(-1) + EPS)).reshape(b, h, n * c, d)[:, :, :t]
