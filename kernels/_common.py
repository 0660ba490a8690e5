"""Shared pieces of the Triton kernels: backend checks, layout ids, launch configs, jit helpers.

Importing this module imports Triton, so ``TRITON_INTERPRET`` must be set before the first import
(the interpreter is chosen when ``@triton.jit`` decorates a function).
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

from lolsearch.core import kernel_env

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# Multi-config autotuning (num_warps / num_stages per kernel, chosen once per key and kept in Triton's on-disk
# cache, so later processes on the machine skip the timing) is on unless LOLSEARCH_KERNELS_AUTOTUNE=0, which keeps
# the first config of each kernel. The offered configs pass the GPU test matrix; the key carries the call's size
# class (tune_bucket), so a choice timed at one size is not reused at another (results/kernels/tune_key_20261204/).
AUTOTUNE = not INTERPRET and kernel_env.read("LOLSEARCH_KERNELS_AUTOTUNE")
REG_CAPS = kernel_env.read("LOLSEARCH_KERNELS_REG_CAPS")

BT = 64  # chunk size (rows of a query chunk / keys of a key tile)
SMEM_FALLBACK = 232448  # H100/H200 opt-in shared memory per block
LOG2E = 1.4426950408889634
LAYOUT_IDS = {"linear": 0, "sliding": 1, "terrace": 2}
# Precision of every tl.dot whose operands are fp32 (fp32 inputs only; 16-bit operands ignore it): 3-pass TF32,
# about fp32 accuracy. It has to be given per call: Triton 3.6-3.9's tl.dot falls back to TRITON_F32_DEFAULT or
# "tf32" and never reads the `default_dot_input_precision` launch option, which left fp32 inputs at TF32
# accuracy (1.1e-3 relative error on the H200). LOLSEARCH_KERNELS_FP32_DOT=tf32|ieee changes it.
F32_DOT: tl.constexpr = tl.constexpr(kernel_env.read("LOLSEARCH_KERNELS_FP32_DOT"))


def layout_id(layout: str, window: int) -> tuple[int, int]:
    """Maps (layout, window) to the kernels' (layout id, window); window 0 or 'linear' is pure linear."""
    if layout not in LAYOUT_IDS:
        raise ValueError(f"layout must be 'sliding', 'terrace' or 'linear', got {layout!r}")
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    if window == 0 or layout == "linear":
        return 0, 0
    return LAYOUT_IDS[layout], int(window)


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) of host integers. The launch paths use this, not ``triton.cdiv``: that one is a Triton constexpr
    function, whose host calls cost microseconds each (about 15 per forward call)."""
    return -(-int(a) // int(b))


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1), on the host; ``triton.next_power_of_2`` without its cost."""
    return 1 << (max(1, int(n)) - 1).bit_length()


def block(n: int) -> int:
    """Power-of-two tile width >= n and >= 16 (tl.dot needs 16)."""
    return max(16, next_pow2(n))


def token_major(x: torch.Tensor) -> bool:
    """Whether ``x [B, H, T, D]`` lies in token-major memory, ``[B, T, H, D]`` contiguous (its transpose(1, 2) is
    then a view of ``[B, T, H·D]`` rows)."""
    return x.transpose(1, 2).is_contiguous()


def tune_bucket(bh: int, t: int) -> int:
    """The autotune key's size class of a call: (batch × heads) × query chunks, rounded up to a power of two. The
    kernels take it as the argument ``TUNE`` (not specialized, not read), so a choice timed at one size class is
    not reused at another (a choice made at a test's 4 heads × 63 tokens slowed an 8K step; ISSUE17.md)."""
    return next_pow2(bh * cdiv(t, BT))


def tuned(options: list[tuple[int, ...]], key: list[str], **kwargs):
    """``triton.autotune`` over the (num_warps, num_stages[, maxnreg]) ``options``, its choice per ``key`` kept in
    Triton's on-disk cache where this Triton offers that (``cache_results``). A third element caps the registers per
    thread (more programs per SM where a kernel is register-bound); env LOLSEARCH_KERNELS_REG_CAPS=0 leaves such
    options out. Under the interpreter or without autotuning only the first option, the untuned default, is
    offered."""
    if "cache_results" in inspect.signature(triton.autotune).parameters:
        kwargs["cache_results"] = AUTOTUNE
    offered = [o for o in options if len(o) == 2 or REG_CAPS] if AUTOTUNE else options[:1]
    configs = [triton.Config({}, num_warps=o[0], num_stages=o[1], maxnreg=o[2] if len(o) > 2 else None)
               for o in offered]
    return triton.autotune(configs=configs, key=key, **kwargs)


@functools.lru_cache(maxsize=16)
def _props(index: int) -> tuple[int, int]:
    p = torch.cuda.get_device_properties(index)
    return p.multi_processor_count, int(getattr(p, "shared_memory_per_block_optin", 0) or SMEM_FALLBACK)


def num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return _props(device.index if device.index is not None else torch.cuda.current_device())[0]
    return 4


def smem_limit(device: torch.device) -> int:
    """Shared memory one program may use on ``device`` (bytes; the opt-in maximum per block, the limit Triton
    checks at launch: 232448 on H100/H200). The interpreter has no limit; it gets the Hopper value."""
    if device.type == "cuda":
        return _props(device.index if device.index is not None else torch.cuda.current_device())[1]
    return SMEM_FALLBACK


# (kernel key, first setting) -> the launch setting that fit the device's shared memory, None where none did
_FITTED: dict[tuple, object] = {}


def fit_shared_memory(key: tuple, first, smaller: Callable, run: Callable) -> tuple:
    """``(setting, run(setting))`` for the first setting from ``first`` down (``smaller(s)``: the next one, None after
    the last) whose compiled kernel fits the device's shared memory; Triton raises OutOfResources before launching,
    so nothing ran. ``(None, None)`` where none fits. The outcome is remembered per (key, first), so later calls
    start at the setting that fit."""
    key = (*key, first)
    setting = _FITTED.get(key, first)
    out = None
    while setting is not None:
        try:
            out = run(setting)
            break
        except OutOfResources:
            setting = smaller(setting)
    _FITTED[key] = setting
    return setting, out


# Query chunks per head from which the chunk-parallel kernels run a kv head's query heads on adjacent programs. In the
# other order the group's later heads find a k/v tile in L2 only while a head's row of chunks fits there; below this
# length that order was the faster one (results/perf/gqa_order_20261206/).
GQA_ORDER_MIN_CHUNKS = 256


def gqa_grouped(h: int, hkv: int, nt: int) -> bool:
    """Whether the chunk-parallel kernels run the query heads of one kv head on adjacent programs (:func:`chunk_head`)
    for ``nt`` query chunks: from GQA_ORDER_MIN_CHUNKS chunks on, or as env LOLSEARCH_KERNELS_GQA_ORDER says (0/1;
    auto = this rule). Only GQA (h > hkv) has anything to share."""
    setting = kernel_env.read("LOLSEARCH_KERNELS_GQA_ORDER")
    return h > hkv and (nt >= GQA_ORDER_MIN_CHUNKS if setting is None else setting)


def chunk_grid(nt: int, b: int, h: int, hkv: int, grouped: bool) -> tuple[int, int]:
    """Launch grid of a kernel with one program per (query chunk, query head) read by :func:`chunk_head` (``grouped``:
    its GROUPED, from :func:`gqa_grouped`)."""
    return (nt * (h // hkv), b * hkv) if grouped else (nt, b * h)


@triton.jit
def chunk_head(H, G, GROUPED: tl.constexpr):
    """(query chunk n, flattened query head bh = b·H + h) of this program. GROUPED (grid :func:`chunk_grid`): the G
    query heads of one kv head and chunk are adjacent programs, which read the same key and value tiles, so all but
    the first find them in L2; otherwise the grid is (chunk, bh) and they are a whole row of chunks apart."""
    if GROUPED:
        pid = tl.program_id(0)
        n = pid // G
        bh = tl.program_id(1).to(tl.int64) * G + pid % G
    else:
        n = tl.program_id(0)
        bh = tl.program_id(1).to(tl.int64)
    return n, bh


@triton.jit
def soft_start(pos, W, LAYOUT):
    """First softmax key of the query at ``pos`` (int scalar or tensor); keys before it are linear.

    LAYOUT: 0 linear (pos + 1), 1 sliding (pos - W + 1), 2 terrace ((pos // W - 1) * W), clamped at 0.
    """
    if LAYOUT == 1:
        r = tl.maximum(pos - W + 1, 0)
    elif LAYOUT == 2:
        r = tl.maximum((pos // W - 1) * W, 0)
    else:
        r = pos + 1
    return r


@triton.jit
def tile_lo(n, W, LAYOUT, BT: tl.constexpr):
    """First key tile that query chunk ``n`` scores directly; tiles before it live in the state."""
    return tl.minimum(soft_start(n * BT, W, LAYOUT) // BT, n)


@triton.jit
def first_tile(n, W, LAYOUT, BT: tl.constexpr, PAR: tl.constexpr, L):
    """First key tile that query chunk ``n`` scores directly: :func:`tile_lo` in the walk schedule; with PAR (the
    parallel schedule, segments of L chunks) tile_lo of its segment's first chunk, so every key from there on is
    scored directly and the state is the one the segment starts from (0 in the quadratic mode: one segment)."""
    if PAR:  # noqa: SIM108 - constexpr branch
        r = tile_lo((n // L) * L, W, LAYOUT, BT)
    else:
        r = tile_lo(n, W, LAYOUT, BT)
    return r


@triton.jit
def par_state_seg(t, NT, W, LAYOUT, L, BT: tl.constexpr):
    """Parallel schedule: the first segment whose starting state holds key tile ``t``. The chunks of the segments
    before it that come after the tile (up to the return value × L, at most NT) score it directly; the suffix sum of
    Σ φq gᵀ from this segment on is its state gradient (the segment count NS where none holds it)."""
    return (last_chunk_end(t, NT, W, LAYOUT, BT) - 1) // L + 1


@triton.jit
def seg_key_start(s, L, NS, T, W, LAYOUT, BT: tl.constexpr):
    """Key position where segment ``s`` begins: the state handed to segment s covers keys before it.

    For s == NS it is the final cover ``min(soft_start(T), T)`` (keys the next query needs no softmax for).
    """
    if s < NS:  # noqa: SIM108 - runtime branch in Triton
        r = tile_lo(s * L, W, LAYOUT, BT) * BT
    else:
        r = tl.minimum(soft_start(T, W, LAYOUT), T)
    return r


@triton.jit
def head_rows(bh, H, T, pos, cols, D: tl.constexpr, TOK: tl.constexpr):
    """Offsets of rows ``pos`` × columns ``cols`` of head ``bh`` (= b·H + h) in a ``[B, H, T, D]`` tensor: head-major
    memory, or with TOK token-major memory (``[B, T, H, D]``, what the output projection reads as ``[B, T, H·D]``)."""
    if TOK:
        return ((bh // H) * T + pos)[:, None] * (H * D) + (bh % H) * D + cols[None, :]
    else:
        return bh * T * D + pos[:, None] * D + cols[None, :]


@triton.jit
def state_part_end(T, W, LAYOUT, BT: tl.constexpr):
    """Keys before this position reach some query through the state (whole key tiles, those before the last chunk's
    tile_lo): exactly the rows whose state parts of dφk and dv ``bwd_state_kv`` writes; those buffers are not
    initialised elsewhere."""
    return tile_lo(tl.cdiv(T, BT) - 1, W, LAYOUT, BT) * BT


@triton.jit
def last_chunk_end(t, NT, W, LAYOUT, BT: tl.constexpr):
    """One past the last query chunk that scores key tile ``t`` directly (closed forms of tile_lo(n) <= t)."""
    if LAYOUT == 1:
        r = tl.cdiv((t + 1) * BT + W - 1, BT)
    elif LAYOUT == 2:
        a = tl.cdiv((t + 1) * BT, W)
        r = tl.cdiv((a + 1) * W, BT)
    else:
        r = t + 1
    return tl.minimum(r, NT)
